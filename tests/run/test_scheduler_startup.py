"""Start-up that follows progress (pipeline.run.scheduler): a worker that keeps reporting is waited for
however long its start takes; one that stops reporting is stopped and named.

On local Ray with light scripted actors (tests.run.starting_worker); the same with the real worker and
a slowed or stalled teacher load (``SMI_SYNTH_INJECT_FAULT``) is `slow`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.corpus.index import ShardTask
from pipeline.corpus.verify import verify_corpus
from pipeline.errors import UserError
from pipeline.run.attempts import AttemptRegistry
from pipeline.run.runner import run_corpus
from pipeline.run.scheduler import ScheduleOutcome, SchedulePolicy, schedule
from pipeline.run.spec import load_spec
from tests.run.starting_worker import StartingWorker
from tests.run.tiny_run import ROOT, write_manifest

LIMIT_S = 8.0  # no progress for this long: stuck (more than a light actor's process start on a loaded machine)


@pytest.fixture
def ray_local(local_ray):
    """The shared local Ray (tests/run/conftest.py)."""
    return local_ray


def start(ray, scripts: list[dict], shards: int = 4) -> tuple[ScheduleOutcome, dict, list[str]]:
    """Schedule ``shards`` no-op shards on one actor per script (StartingWorker keyword arguments); return
    the outcome, the registry's start-up reports and the actors' ids."""
    registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
    actor_cls = ray.remote(StartingWorker).options(num_cpus=0, max_restarts=0, max_task_retries=0)
    remaining, keys, handles = iter(scripts), [], [registry]

    def make_actor():
        handle = actor_cls.remote(registry, **next(remaining))
        keys.append(handle._actor_id.hex())
        handles.append(handle)
        return handle

    tasks = [ShardTask(i, 0, "a", 2 * i, 2, i) for i in range(shards)]
    try:
        outcome = schedule(ray, make_actor, len(scripts), tasks, registry=registry,
                           on_done=lambda task, result: None, policy=SchedulePolicy(start_timeout_s=LIMIT_S))
        return outcome, ray.get(registry.start_reports.remote()), keys
    finally:  # the shared Ray outlives this test: its actors do not
        for handle in handles:
            ray.kill(handle)


@pytest.mark.slow  # 12 s of real time past the limit
@pytest.mark.timeout(180)
def test_a_worker_that_keeps_reporting_is_waited_for_past_the_limit(ray_local) -> None:
    reports, every = 24, 0.5  # its start-up lasts 11.5 s or more, past the 8 s limit, never 8 s silent
    outcome, seen, keys = start(ray_local, [dict(reports=reports, every_s=every)])
    assert (reports - 1) * every > LIMIT_S and seen[keys[0]][0] == reports
    assert not outcome.failed and outcome.shards_per_actor == [4]


@pytest.mark.timeout(180)
def test_workers_that_stop_making_progress_fail_the_run_naming_each(ray_local) -> None:
    outcome, seen, keys = start(ray_local, [dict(reports=2, every_s=0.2, hang=True), dict(reports=0, every_s=0, hang=True)])
    assert sorted(outcome.failed) == [0, 1, 2, 3] and len(outcome.stuck) == 2
    reason = outcome.failed[0]
    pid = seen[keys[0]][2]
    assert reason == (f"no worker could start: worker 0 (pid {pid} on node test-node) made no start-up progress "
                      f"for 8 s (last report: loading teacher, 0 s in); worker 1 never reported in 8 s (the "
                      "cluster did not place it, or its process did not start)")


@pytest.mark.slow  # 20 s of real time; the fake Ray covers the state machine in make test
@pytest.mark.timeout(180)
def test_a_stuck_worker_is_stopped_while_the_others_do_the_work(ray_local) -> None:
    # worker 1's four shards take 20 s: worker 0, silent after its first report, is stopped meanwhile
    outcome, seen, keys = start(ray_local, [dict(reports=1, every_s=0, hang=True), dict(reports=1, every_s=0, shard_s=5)])
    assert not outcome.failed and outcome.shards_per_actor == [0, 4]
    assert outcome.stuck == [f"worker 0 (pid {seen[keys[0]][2]} on node test-node) made no start-up progress for 8 s "
                             "(last report: loading teacher, 0 s in)"]


def test_the_start_up_limit_is_a_positive_setting(tmp_path, teacher_file) -> None:
    spec = load_spec(write_manifest(tmp_path, teacher_file)).with_output(tmp_path / "out")
    assert spec.resources.worker_start_timeout_s == 900 and spec.resources.lease_ttl_s == 60  # sized for real teachers
    with pytest.raises(UserError, match="--worker-start-timeout: must be > 0 seconds, got 0"):
        run_corpus(spec, worker_start_timeout_s=0)
    with pytest.raises(UserError, match=r"resources.worker_start_timeout_s: must be > 0(\.0)?, got -5"):
        load_spec(write_manifest(tmp_path, teacher_file, resources={"worker_start_timeout_s": -5}))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- the real worker (slow)

REAL_LIMIT_S = 15.0  # more than a torch worker's process start on a loaded machine


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_whose_teacher_loads_slowly_completes(tmp_path, teacher_file, monkeypatch) -> None:
    """The teacher load takes 25 s longer than usual, past the 15 s limit: the worker reports while it
    loads, so the run waits for it and completes."""
    manifest = write_manifest(tmp_path, teacher_file, resources={
        "workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "worker_start_timeout_s": REAL_LIMIT_S})
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"slow:25:1:{tmp_path / 'faults'}")
    report = run_corpus(load_spec(manifest).with_output(tmp_path / "out"), show_progress=False)
    assert (tmp_path / "faults" / "fired-25-0").exists()  # the load was slowed
    assert report.ok and report.completed_shards == 8 and verify_corpus(tmp_path / "out").ok


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_stalled_in_its_start_up_fails_the_run_naming_it(tmp_path, teacher_file) -> None:
    """``smi-synth run --worker-start-timeout 15``: the only worker hangs after it started, reporting nothing."""
    manifest = write_manifest(tmp_path, teacher_file, resources={"workers": 1, "cpus_per_worker": 1,
                                                                 "gpus_per_worker": 0})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
               SMI_SYNTH_INJECT_FAULT=f"stall:0:always:{tmp_path / 'faults'}")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(tmp_path / "out"),
                           "--worker-start-timeout", f"{REAL_LIMIT_S:g}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 1, done.stderr[-3000:]
    assert ("FAILED shard 0: no worker could start: worker 0 (pid " in done.stdout
            and "made no start-up progress for 15 s (last report: starting)" in done.stdout), done.stdout
