"""Runs that finish or fail, never hang: placement, start-up failures, deadlines, superseded attempts."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.verify import verify_corpus
from pipeline.corpus.writer import StaleAttempt, write_shard
from pipeline.errors import UserError
from pipeline.run.cluster import check_fit, describe_nodes, workers_that_fit
from pipeline.run.runner import run_corpus
from pipeline.run.scheduler import SchedulePolicy, failure_reason
from pipeline.run.spec import load_spec
from tests.run.tiny_run import LOCAL_CPUS, write_manifest

NODES = [
    {"Alive": True, "Resources": {"CPU": 2.0}},
    {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
]


def test_workers_that_fit_count_alive_nodes_per_resource() -> None:
    assert workers_that_fit(NODES, 1, 0) == 10
    assert workers_that_fit(NODES, 4, 0) == 2  # the 2-CPU node holds none
    assert workers_that_fit(NODES, 4, 1) == 1
    assert workers_that_fit(NODES, 16, 0) == 0
    assert describe_nodes(NODES) == "2 nodes: 2 CPU; 8 CPU + 1 GPU"


def test_check_fit_names_the_resource() -> None:
    assert check_fit(None, 3, 1, 0, NODES) == 3 and check_fit(2, 3, 1, 0, NODES) == 2
    with pytest.raises(UserError, match=r"--workers 5: the Ray cluster holds 3 worker\(s\) of 1 CPU"):
        check_fit(5, 3, 1, 0, NODES)
    with pytest.raises(UserError, match="no node of the Ray cluster can hold one worker of 16 CPU"):
        check_fit(None, 0, 16, 0, NODES)


@pytest.mark.timeout(120)
def test_more_workers_than_fit_exits_2_at_once(tmp_path, teacher_file, capsys, local_ray) -> None:
    # the shared local Ray holds LOCAL_CPUS CPUs whatever the machine's cores
    manifest = write_manifest(tmp_path, teacher_file)
    too_many = LOCAL_CPUS + 1
    assert main(["run", str(manifest), "--out", str(tmp_path / "out"), "--workers", str(too_many)]) == 2
    err = capsys.readouterr().err
    holds = f"the Ray cluster holds {LOCAL_CPUS} worker(s) of 1 CPU (1 node: {LOCAL_CPUS} CPU)"
    assert f"--workers {too_many}: {holds}" in err
    big = write_manifest(tmp_path, teacher_file, resources={"workers": "auto", "cpus_per_worker": LOCAL_CPUS + 2})
    assert main(["run", str(big), "--out", str(tmp_path / "out2")]) == 2
    assert f"no node of the Ray cluster can hold one worker of {LOCAL_CPUS + 2} CPU" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_worker_that_cannot_start_fails_the_run_with_its_own_error(tmp_path, teacher_file, monkeypatch, capsys,
                                                                   local_ray):
    manifest = write_manifest(tmp_path, teacher_file)
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"start:0:always:{tmp_path / 'faults'}")
    assert main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "a worker failed to start" in err and "the teacher could not be loaded" in err


@pytest.mark.slow  # waits out a real 20 s deadline and a worker restart (the state machine: test_scheduler.py)
@pytest.mark.timeout(300)
def test_hung_shard_is_requeued_after_its_deadline(tmp_path, teacher_file, monkeypatch, local_ray):
    manifest = write_manifest(tmp_path, teacher_file)
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"hang:5:1:{tmp_path / 'faults'}")
    spec = load_spec(manifest).with_output(tmp_path / "out")
    report = run_corpus(spec, show_progress=False, policy=SchedulePolicy(shard_deadline_s=20.0))
    assert report.ok and report.completed_shards == 8 and report.retries >= 1
    assert (tmp_path / "faults" / "fired-5-0").exists()
    assert verify_corpus(tmp_path / "out").ok


def test_superseded_attempt_leaves_the_owners_shard_alone(tmp_path, make_samples, make_tasks) -> None:
    layout = CorpusLayout(tmp_path / "c")
    task = make_tasks(3, 1, 4)[1]
    owner = write_shard(layout, 1, make_samples(task), num_classes=3)
    calls = []

    def superseded() -> None:
        calls.append(1)
        raise StaleAttempt("newer attempt")

    with pytest.raises(StaleAttempt):
        write_shard(layout, 1, make_samples(task), num_classes=3, guard=superseded)
    assert calls == [1]  # refused before touching anything
    assert layout.storage.sha256(layout.tar(1)) == owner["tar_sha256"] and layout.storage.exists(layout.stats(1))

    def superseded_late() -> None:  # ownership lost between the commit of its tar and parquet and its stats
        calls.append(2)
        if len(calls) > 3:  # the write asks before touching files, before committing them, before its stats
            raise StaleAttempt("newer attempt")

    with pytest.raises(StaleAttempt):
        write_shard(layout, 1, make_samples(task), num_classes=3, guard=superseded_late)
    assert layout.storage.sha256(layout.tar(1)) == owner["tar_sha256"]  # same bytes, left in place


def test_failure_reason_takes_the_constructor_error() -> None:
    class Died(Exception):
        pass

    exc = Died("The actor died because of an error raised in its creation task, ray::A.__init__()\n"
               "  File x, line 5\nValueError: cannot download teacher")
    assert failure_reason(exc) == "ValueError: cannot download teacher"
