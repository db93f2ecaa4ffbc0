"""Multi-node runs on one machine: ``ray.cluster_utils.Cluster`` starts several raylets here.

A 3-node run gives the bytes of a local run; a node removed mid-run loses no shard; a node added
mid-run gets work. They share one cluster (``ray_cluster`` in conftest.py) and are `slow` (`make test-all`).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.verify import verify_corpus
from pipeline.run.runner import RunReport, run_corpus
from pipeline.run.scheduler import SchedulePolicy
from pipeline.run.spec import load_spec
from tests.run.tiny_run import tar_digests, write_manifest

pytestmark = pytest.mark.slow

LONG_RUN = dict(images_per_class=8, images_per_shard=2,
                inversion={"method": "smi", "iterations": 60, "batch_size": 2,
                           "schedule": {"iterations": [5, 10, 20, 30], "ratios": [0.3] * 4}},
                resources={"workers": "auto", "cpus_per_worker": 1, "gpus_per_worker": 0})


def run_in_thread(spec, address: str, policy: SchedulePolicy | None = None) -> tuple[threading.Thread, list[RunReport]]:
    result: list[RunReport] = []
    thread = threading.Thread(target=lambda: result.append(
        run_corpus(spec, address=address, show_progress=False, policy=policy)))
    thread.start()
    return thread, result


def wait_for_stats(out, count: int, timeout: float = 300) -> None:
    storage = CorpusLayout(out).storage
    deadline = time.time() + timeout
    while len(storage.listdir("stats")) < count:
        assert time.time() < deadline, f"fewer than {count} shards completed in {timeout} s"
        time.sleep(0.2)


def test_three_nodes_give_the_local_bytes_and_survive_a_node_loss(tmp_path, teacher_file, local_ray, ray_cluster):
    manifest = write_manifest(tmp_path, teacher_file, **LONG_RUN)
    spec = load_spec(manifest)
    reference = tmp_path / "reference"
    assert run_corpus(spec.with_output(reference), show_progress=False).ok  # local Ray, before the cluster
    cluster = ray_cluster(3)
    out = tmp_path / "three-nodes"
    report = run_corpus(spec.with_output(out), address=cluster.address, show_progress=False)
    assert report.ok and report.workers == 3
    assert tar_digests(out) == tar_digests(reference)

    lossy = tmp_path / "node-lost"
    thread, result = run_in_thread(spec.with_output(lossy), cluster.address)
    wait_for_stats(lossy, 3)
    cluster.remove_node(cluster.list_all_nodes()[-1])
    thread.join(timeout=600)
    assert not thread.is_alive() and result and result[0].ok
    assert tar_digests(lossy) == tar_digests(reference) and verify_corpus(lossy).ok


def test_a_node_added_mid_run_gets_work(tmp_path, teacher_file, ray_cluster):
    longer = {**LONG_RUN, "inversion": {**LONG_RUN["inversion"], "iterations": 240}}
    manifest = write_manifest(tmp_path, teacher_file, **longer)
    spec = load_spec(manifest)
    cluster = ray_cluster(1)
    out = tmp_path / "grown"
    thread, result = run_in_thread(spec.with_output(out), cluster.address, SchedulePolicy(grow_every_s=0.5))
    wait_for_stats(out, 1)
    cluster.add_node(num_cpus=1)
    thread.join(timeout=600)
    assert result and result[0].ok and result[0].completed_shards == 16
    assert len(result[0].shards_per_worker) == 2 and result[0].shards_per_worker[1] > 0


def test_three_nodes_beside_busy_processes_wait_for_teachers_that_load_past_two_minutes(
        tmp_path, teacher_file, local_ray, ray_cluster, monkeypatch):
    """Every worker's teacher load is slowed 130 s (past the 120 s after which runs used to fail every
    shard) while two CPU-bound processes share the machine: the workers report while they load, the
    run waits for them and gives the bytes of a local run."""
    spec = load_spec(write_manifest(tmp_path, teacher_file, resources={"workers": "auto", "cpus_per_worker": 1,
                                                                        "gpus_per_worker": 0}))
    reference = tmp_path / "reference"
    assert run_corpus(spec.with_output(reference), show_progress=False).ok  # local Ray, before the cluster
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        cluster = ray_cluster(3)
        monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"slow:130:3:{tmp_path / 'faults'}")  # each of the 3 workers
        out = tmp_path / "three-nodes"
        report = run_corpus(spec.with_output(out), address=cluster.address, show_progress=False)
        assert sorted(p.name for p in (tmp_path / "faults").iterdir()) == [f"fired-130-{i}" for i in range(3)]
        assert report.ok and report.workers == 3 and tar_digests(out) == tar_digests(reference)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
