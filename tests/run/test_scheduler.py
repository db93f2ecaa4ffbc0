"""The scheduler's state machine, in-process: a fake Ray (:mod:`tests.run.fake_ray`) on a virtual clock.

Each actor holds a running shard and a queued one. These tests pin what the queue must not break: a
queued shard's deadline starts when it starts running; a killed actor's queued shard is re-queued
without using one of its attempts and nothing is lost; an idle actor takes over a shard queued behind
a long one; every shard completes once, as the attempt the registry names. And the rest of the state
machine: a constructor error stops the schedule, a shard failing every attempt fails alone, actors that
never report end it after the start timeout, a pool grows when the cluster gains room.
The same faults on real Ray, end to end: tests/run/test_runner.py, test_runner_queue.py, test_scheduling.py.
"""

from __future__ import annotations

import pytest

from pipeline.corpus.index import ShardTask
from pipeline.run import scheduler
from pipeline.run.scheduler import ScheduleOutcome, SchedulePolicy, WorkerStartError, schedule
from tests.run.fake_ray import FakeRay, FakeRegistry, Script


def tasks(n: int) -> list[ShardTask]:
    return [ShardTask(i, 0, "a", 2 * i, 2, i) for i in range(n)]


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    """A fake Ray whose clock is the scheduler's ``time``."""
    ray = FakeRay()
    monkeypatch.setattr(scheduler, "time", ray)
    return ray


def run(ray: FakeRay, script: dict, *, shards: int, actors: int, check_all: bool = True,
        room=None, make_actor=None, **policy) -> tuple[ScheduleOutcome, dict]:
    """Schedule ``shards`` scripted shards on ``actors`` actors; return the outcome and each completed shard's
    result (with ``received``: when the driver got it)."""
    ray.script.shards.update(script)
    registry = FakeRegistry(ray)
    done: dict[int, list[dict]] = {}

    def on_done(task: ShardTask, result: dict) -> None:
        assert registry.target.owner(task.shard_id) == result["token"]  # the current attempt
        done.setdefault(task.shard_id, []).append({**result, "received": ray.now})

    outcome = schedule(ray, make_actor or ray.actor, actors, tasks(shards), registry=registry, on_done=on_done,
                       policy=SchedulePolicy(**policy), room=room)
    assert all(len(r) == 1 for r in done.values())  # once each
    if check_all:
        assert not outcome.failed, outcome.failed
        assert sorted(done) == list(range(shards))
    return outcome, {sid: r[0] for sid, r in done.items()}


def test_a_queued_shards_deadline_starts_when_it_starts_running(fake_ray) -> None:
    # one actor: shard 1 waits 3 s behind shard 0, then runs 3 s. Timed from its dispatch it would
    # pass the 4.5 s deadline at 4.5 s and be killed; timed from its start it has 1.5 s to spare.
    outcome, done = run(fake_ray, {0: ("ok", 3.0), 1: ("ok", 3.0)}, shards=2, actors=1, shard_deadline_s=4.5)
    assert outcome.deadline_kills == 0 and outcome.retries == 0 and fake_ray.kills == []
    assert done[1]["started"] == done[0]["ended"] and done[0]["pid"] == done[1]["pid"]  # queued, in order


def test_a_shard_past_its_deadline_is_killed_even_when_queued_first(fake_ray) -> None:
    # the counterpart: the same deadline does fire on a shard that runs well past it (checked once a second)
    outcome, done = run(fake_ray, {1: ("ok", 8.0)}, shards=2, actors=1, shard_deadline_s=4.5, max_attempts=1,
                        check_all=False)
    assert outcome.deadline_kills == 1 and 1 in outcome.failed and sorted(done) == [0]


def test_a_hung_shard_is_killed_at_its_deadline_and_the_shard_queued_behind_it_uses_no_attempt(fake_ray) -> None:
    script = {0: ("ok", 0.5), 1: ("hang", 0.0), 3: ("ok", 1.0)}
    outcome, done = run(fake_ray, script, shards=4, actors=1, shard_deadline_s=20.0, max_attempts=2)
    assert outcome.deadline_kills == 1 and outcome.retries == 1  # shard 1, the one that ran
    assert outcome.requeued_unstarted == 1  # shard 2, queued behind it when its worker was killed
    assert done[2]["pid"] != done[0]["pid"]  # it ran on the restarted worker
    hung = next(when for sid, _, _, when in fake_ray.attempts_started if sid == 1)
    assert len(fake_ray.kills) == 1 and hung + 20.0 < fake_ray.kills[0] <= hung + 21.0  # at 20 s, checked each second


def test_a_killed_actor_with_a_queued_shard_loses_nothing(fake_ray) -> None:
    # one actor: shard 2 is queued behind shard 1 when the process dies; with max_attempts=2 a
    # queued shard charged for its neighbour's crash would fail the run on a second crash
    outcome, done = run(fake_ray, {1: ("crash", 2.0)}, shards=5, actors=1, max_attempts=2)
    assert outcome.retries == 1 and outcome.requeued_unstarted == 1
    assert done[0]["pid"] != done[2]["pid"] == done[1]["pid"]  # both re-ran on the restarted worker
    assert outcome.shards_per_actor == [5]


def test_a_queued_shard_is_not_charged_for_its_neighbours_crash(fake_ray) -> None:
    # with one attempt per shard, charging the queued shard 2 for shard 1's crash would fail it
    outcome, done = run(fake_ray, {1: ("crash", 2.0)}, shards=4, actors=1, max_attempts=1, check_all=False)
    assert outcome.failed == {1: "RayActorError: The actor died unexpectedly before finishing this task."}
    assert sorted(done) == [0, 2, 3] and outcome.requeued_unstarted == 1


def test_an_idle_actor_takes_over_the_shard_queued_behind_a_long_one(fake_ray) -> None:
    outcome, done = run(fake_ray, {0: ("ok", 6.0)}, shards=3, actors=2)
    assert outcome.handed_over == 1 and outcome.retries == 0
    long_pid = done[0]["pid"]
    assert done[1]["pid"] != long_pid and done[2]["pid"] != long_pid  # neither waited for shard 0
    assert max(done[1]["ended"], done[2]["ended"]) < done[0]["ended"]
    # the superseded attempt stopped when it started, before any work
    assert sum(sid == 2 for sid, *_ in fake_ray.attempts_started) == 1


def test_queue_depth_one_hands_out_one_shard_at_a_time(fake_ray) -> None:
    outcome, done = run(fake_ray, {}, shards=4, actors=1, queue_depth=1)
    assert outcome.handed_over == 0 and outcome.shards_per_actor == [4]
    # each shard was sent only once the previous result was back (with a queue it starts before that)
    assert all(done[i + 1]["started"] >= done[i]["received"] for i in range(3))
    with pytest.raises(ValueError, match="queue_depth: must be >= 1"):
        SchedulePolicy(queue_depth=0)


def test_with_a_queue_the_next_shard_starts_the_moment_one_ends(fake_ray) -> None:
    outcome, done = run(fake_ray, {}, shards=4, actors=1)
    assert all(done[i + 1]["started"] == done[i]["ended"] for i in range(3))


def test_every_actor_gets_a_first_shard_before_any_gets_a_second(fake_ray) -> None:
    outcome, done = run(fake_ray, {}, shards=6, actors=3)
    first = {sid: pid for sid, _, pid, _ in fake_ray.attempts_started[:3]}
    assert sorted(first) == [0, 1, 2] and len(set(first.values())) == 3
    assert outcome.shards_per_actor == [2, 2, 2]


def test_a_constructor_error_stops_the_schedule_with_its_message(fake_ray) -> None:
    with pytest.raises(WorkerStartError, match="a worker failed to start: RuntimeError: the teacher could not"):
        run(fake_ray, {}, shards=3, actors=2, make_actor=lambda: fake_ray.actor(start_error="the teacher could not "
                                                                                          "be loaded"))


def test_a_shard_failing_every_attempt_fails_alone(fake_ray) -> None:
    outcome, done = run(fake_ray, {2: ("raise_always", 0.5)}, shards=5, actors=2, max_attempts=3, check_all=False)
    assert outcome.failed == {2: "RuntimeError: shard 2: injected fault"}
    assert outcome.retries == 2 and sorted(done) == [0, 1, 3, 4]
    assert sum(sid == 2 for sid, *_ in fake_ray.attempts_started) == 3


def test_a_shard_that_raises_once_is_retried_on_the_same_live_actor(fake_ray) -> None:
    outcome, done = run(fake_ray, {1: ("raise", 0.5)}, shards=3, actors=1)
    assert outcome.retries == 1 and outcome.requeued_unstarted == 0 and len({d["pid"] for d in done.values()}) == 1


def test_actors_that_never_report_fail_the_shards_after_the_start_timeout(fake_ray) -> None:
    outcome, done = run(fake_ray, {}, shards=3, actors=2, check_all=False, start_timeout_s=120.0,
                        make_actor=lambda: fake_ray.actor(placeable=False))
    assert done == {} and sorted(outcome.failed) == [0, 1, 2]
    assert all(reason.startswith("no worker could start: worker 0 never reported in 120 s")
               and "worker 1 never reported" in reason for reason in outcome.failed.values())
    assert 120.0 <= fake_ray.now <= 122.0 and len(fake_ray.kills) == 2  # both stopped, neither restarted


def test_the_pool_grows_when_the_cluster_gains_room(fake_ray) -> None:
    room = [1]
    fake_ray.script.default_seconds = 4.0

    def grows() -> int:
        if fake_ray.now > 6.0:
            room[0] = 2  # a node joined
        return room[0]

    outcome, done = run(fake_ray, {}, shards=8, actors=1, room=grows, grow_every_s=1.0)
    assert outcome.actors_started == 2 and outcome.shards_per_actor[1] > 0 and sum(outcome.shards_per_actor) == 8
