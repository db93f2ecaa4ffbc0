"""A real run with a shard queued per worker: a worker killed with a shard queued behind the one it
runs loses nothing, and the corpus has the bytes of a run that hands out one shard at a time."""

from __future__ import annotations

import pytest

from pipeline.corpus.verify import verify_corpus
from pipeline.run.runner import run_corpus
from pipeline.run.scheduler import SchedulePolicy
from pipeline.run.spec import load_spec
from tests.run.tiny_run import digests, write_manifest


@pytest.mark.timeout(300)
def test_killed_worker_with_a_queued_shard_loses_nothing(tmp_path, teacher_file, monkeypatch) -> None:
    spec = load_spec(write_manifest(tmp_path, teacher_file))
    one_at_a_time = run_corpus(spec.with_output(tmp_path / "reference"), workers=1, show_progress=False,
                               policy=SchedulePolicy(queue_depth=1))
    assert one_at_a_time.ok and one_at_a_time.completed_shards == 8
    # one worker, so a shard is queued behind shard 3 when the worker process dies in it
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"crash:3:1:{tmp_path / 'faults'}")
    report = run_corpus(spec.with_output(tmp_path / "queued"), workers=1, show_progress=False)
    assert (tmp_path / "faults" / "fired-3-0").exists()  # the crash really happened
    assert report.ok and report.completed_shards == 8 and report.completed_images == 12
    assert report.retries == 1 and report.requeued_unstarted == 1  # shard 3 used an attempt; the queued one not
    assert report.as_dict()["requeued_unstarted"] == 1
    assert verify_corpus(tmp_path / "queued").ok
    expected = digests(tmp_path / "reference", "data", "metadata")
    assert len(expected) == 16 and digests(tmp_path / "queued", "data", "metadata") == expected
