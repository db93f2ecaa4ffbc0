"""A real run with a shard queued per worker: a worker killed with a shard queued behind the one it
runs loses nothing."""

from __future__ import annotations

import pytest

from pipeline.corpus.verify import verify_corpus
from pipeline.run.runner import run_corpus
from pipeline.run.spec import load_spec
from tests.run.tiny_run import write_manifest

# longer shards than tiny_run's default, so the next shard is surely queued before shard 3 dies
INVERSION = {"method": "smi", "iterations": 40, "batch_size": 2,
             "schedule": {"iterations": [4, 8, 16, 24], "ratios": [0.3] * 4}}


@pytest.mark.timeout(300)
def test_killed_worker_with_a_queued_shard_loses_nothing(tmp_path, teacher_file, monkeypatch, local_ray) -> None:
    spec = load_spec(write_manifest(tmp_path, teacher_file, inversion=INVERSION))
    # one worker, so a shard is queued behind shard 3 when the worker process dies in it
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"crash:3:1:{tmp_path / 'faults'}")
    report = run_corpus(spec.with_output(tmp_path / "out"), workers=1, show_progress=False)
    assert (tmp_path / "faults" / "fired-3-0").exists()  # the crash really happened
    assert report.ok and report.completed_shards == 8 and report.completed_images == 12
    assert report.retries == 1 and report.requeued_unstarted == 1  # shard 3 used an attempt; the queued one not
    assert report.as_dict()["requeued_unstarted"] == 1 and report.shards_per_worker == [8]
    assert verify_corpus(tmp_path / "out").ok
