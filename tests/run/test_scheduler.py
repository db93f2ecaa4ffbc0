"""The scheduler's shard queue per actor, on local Ray with scripted actors (a shard = a sleep).

Each actor holds a running shard and a queued one. These tests pin what the queue must not break:
a queued shard's deadline starts when it starts running; a killed actor's queued shard is re-queued
without using one of its attempts and nothing is lost; an idle actor takes over a shard queued behind
a long one; every shard completes once, as the attempt the registry names.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.corpus.index import ShardTask
from pipeline.run.attempts import AttemptRegistry
from pipeline.run.scheduler import ScheduleOutcome, SchedulePolicy, schedule
from tests.run.scripted_worker import ScriptedWorker


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", object_store_memory=128 * 1024 * 1024)
    # one registry for the module; every dispatch takes a fresh token
    registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
    ray.get(registry.owner.remote(0))  # started before any deadline is timed
    yield ray, registry
    ray.shutdown()


def tasks(n: int) -> list[ShardTask]:
    return [ShardTask(i, 0, "a", 2 * i, 2, i) for i in range(n)]


def run(ray_local, tmp_path: Path, script: dict, *, shards: int, actors: int, all_up_first: bool = False,
        **policy) -> tuple[ScheduleOutcome, dict]:
    """Schedule ``shards`` scripted shards on ``actors`` actors; return the outcome and each shard's results
    (with ``received``: when the driver got it). ``all_up_first``: no actor is admitted (so no shard
    is sent) before every actor has started, however slowly a loaded machine starts processes."""
    ray, registry = ray_local
    actor_cls = ray.remote(ScriptedWorker).options(num_cpus=0, max_restarts=-1, max_task_retries=0)
    handles: list = []
    admitted: list = []
    done: dict[int, list[dict]] = {}

    def make_actor():
        handles.append(actor_cls.remote(script, str(tmp_path)))
        return handles[-1]

    def all_up(handle) -> bool:
        if not admitted:  # the first admission waits for the rest (later ones: they are up)
            ray.get([h.ready.remote() for h in handles])
        admitted.append(handle)
        return True

    def on_done(task: ShardTask, result: dict) -> None:
        assert ray.get(registry.owner.remote(task.shard_id)) == result["token"]  # the current attempt
        done.setdefault(task.shard_id, []).append({**result, "received": time.time()})

    outcome = schedule(ray, make_actor, actors, tasks(shards), registry=registry, on_done=on_done,
                       policy=SchedulePolicy(**policy), on_ready=all_up if all_up_first else None)
    assert not outcome.failed, outcome.failed
    assert sorted(done) == list(range(shards)) and all(len(r) == 1 for r in done.values())  # once each
    return outcome, {sid: r[0] for sid, r in done.items()}


@pytest.mark.timeout(120)
def test_a_queued_shards_deadline_starts_when_it_starts_running(ray_local, tmp_path) -> None:
    # one actor: shard 1 waits 3 s behind shard 0, then runs 3 s. Timed from its dispatch it would
    # pass the 4.5 s deadline at 4.5 s and be killed; timed from its start it has 1.5 s to spare.
    outcome, done = run(ray_local, tmp_path, {0: ("ok", 3.0), 1: ("ok", 3.0)}, shards=2, actors=1,
                        shard_deadline_s=4.5)
    assert outcome.deadline_kills == 0 and outcome.retries == 0
    assert done[1]["started"] >= done[0]["ended"] - 0.05 and done[0]["pid"] == done[1]["pid"]  # queued, in order


@pytest.mark.timeout(120)
def test_a_hung_shard_is_killed_and_the_shard_queued_behind_it_uses_no_attempt(ray_local, tmp_path) -> None:
    script = {0: ("ok", 0.5), 1: ("hang", 0.0), 3: ("ok", 1.0)}
    outcome, done = run(ray_local, tmp_path, script, shards=4, actors=1, shard_deadline_s=3.0, max_attempts=2)
    assert outcome.deadline_kills == 1 and outcome.retries == 1  # shard 1, the one that ran
    assert outcome.requeued_unstarted == 1  # shard 2, queued behind it when its worker was killed
    assert done[2]["pid"] != done[0]["pid"]  # it ran on the restarted worker


@pytest.mark.timeout(120)
def test_a_killed_actor_with_a_queued_shard_loses_nothing(ray_local, tmp_path) -> None:
    # one actor: shard 2 is queued behind shard 1 when the process dies; with max_attempts=1 a
    # queued shard charged for its neighbour's crash would fail the run
    outcome, done = run(ray_local, tmp_path, {1: ("crash", 2.0)}, shards=5, actors=1, max_attempts=2)
    assert outcome.retries == 1 and outcome.requeued_unstarted == 1
    assert done[0]["pid"] != done[2]["pid"] == done[1]["pid"]  # both re-ran on the restarted worker
    assert outcome.shards_per_actor == [5]


@pytest.mark.timeout(120)
def test_an_idle_actor_takes_over_the_shard_queued_behind_a_long_one(ray_local, tmp_path) -> None:
    outcome, done = run(ray_local, tmp_path, {0: ("ok", 6.0)}, shards=3, actors=2, all_up_first=True)
    assert outcome.handed_over == 1 and outcome.retries == 0
    long_pid = done[0]["pid"]
    assert done[1]["pid"] != long_pid and done[2]["pid"] != long_pid  # neither waited for shard 0
    assert max(done[1]["ended"], done[2]["ended"]) < done[0]["ended"]


@pytest.mark.timeout(120)
def test_queue_depth_one_hands_out_one_shard_at_a_time(ray_local, tmp_path) -> None:
    outcome, done = run(ray_local, tmp_path, {}, shards=4, actors=1, queue_depth=1)
    assert outcome.handed_over == 0 and outcome.shards_per_actor == [4]
    # each shard was sent only once the previous result was back (with a queue it starts before that)
    assert all(done[i + 1]["started"] >= done[i]["received"] for i in range(3))
    with pytest.raises(ValueError, match="queue_depth: must be >= 1"):
        SchedulePolicy(queue_depth=0)
