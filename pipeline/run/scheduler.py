"""Handing shards to Ray actors so that a run finishes or fails, and never hangs.

- An actor gets work only after it has answered ``ready()`` (its teacher is loaded and it is placed);
  an actor Ray cannot place simply never becomes ready and is never given a shard.
- An actor that dies in its constructor fails the run at once with the constructor's own error.
- Any ``RayError`` of a shard (actor or node died, object lost, out of memory, task raised) re-queues
  it, up to ``max_attempts``; the actor is probed with ``ready()`` before it gets more work.
- A shard running past its deadline has its actor killed (Ray restarts it) and is re-queued elsewhere.
- Every attempt carries a token; the :class:`AttemptRegistry` knows the current one, so an older
  attempt of a re-queued shard can no longer mark the shard complete.
- With ``grow``, new actors are started when the cluster gains room (a node added mid-run).
- Nothing ready for ``idle_timeout_s`` while shards wait: the rest fail with the reason.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.corpus.index import ShardTask
from pipeline.corpus.writer import StaleAttempt
from pipeline.run.worker import ShardWorker

log = logging.getLogger(__name__)

CREATION_FAILURE = "error raised in its creation task"


class WorkerStartError(RuntimeError):
    """A worker's constructor raised: every worker would fail the same way, so the run stops."""


@dataclass(frozen=True)
class SchedulePolicy:
    """Limits of :func:`schedule`."""

    max_attempts: int = 3  # per shard, counting worker crashes and deadlines
    shard_deadline_s: float = 3600.0  # one attempt of one shard, from dispatch to result
    idle_timeout_s: float = 120.0  # no actor ready or busy for this long while shards wait: fail them
    max_probes: int = 12  # readiness probes of a failed actor (back-off 1, 2, 4 .. 30 s)
    grow_every_s: float = 5.0  # how often to look for room for more actors (with ``grow``)


class AttemptRegistry:
    """Current attempt token of every dispatched shard (runs as a Ray actor beside the workers)."""

    def __init__(self) -> None:
        self._tokens: dict[int, str] = {}

    def assign(self, shard_id: int, token: str) -> None:
        self._tokens[int(shard_id)] = token

    def owner(self, shard_id: int) -> str | None:
        return self._tokens.get(int(shard_id))


@dataclass
class _Actor:
    handle: Any
    state: str = "starting"  # starting | idle | busy | probing | dropped
    probes: int = 0
    probe_due: float = 0.0
    task: ShardTask | None = None
    started: float = 0.0


@dataclass
class ScheduleOutcome:
    """What happened to the pending shards."""

    failed: dict[int, str] = field(default_factory=dict)  # shard id -> last reason
    retries: int = 0
    deadline_kills: int = 0
    actors_started: int = 0
    shards_per_actor: list[int] = field(default_factory=list)  # completed shards, in actor start order


def failure_reason(exc: BaseException) -> str:
    """One line: the innermost error of a Ray failure."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if CREATION_FAILURE in str(exc) and lines:
        return lines[-1]  # the constructor's own exception, last line of the traceback
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def schedule(
    ray: Any,
    make_actor: Callable[[], Any],
    count: int,
    pending: list[ShardTask],
    *,
    registry: Any,
    on_done: Callable[[ShardTask, dict], None],
    policy: SchedulePolicy = SchedulePolicy(),
    room: Callable[[], int] | None = None,
) -> ScheduleOutcome:
    """Run every task of ``pending`` on up to ``count`` actors made by ``make_actor``; see the module doc.

    ``room()``, when given, says how many actors the cluster could hold now; more are started up to
    that (a node joined). Raises :class:`WorkerStartError` when an actor's constructor raises.
    """
    from ray.exceptions import RayError

    outcome = ScheduleOutcome()
    queue: deque[ShardTask] = deque(pending)
    attempts: dict[int, int] = {}
    actors: list[_Actor] = []
    refs: dict[Any, tuple[str, int]] = {}  # ref -> ("ready" | "run", actor index)

    def start_actor() -> None:
        actor = _Actor(make_actor())
        actors.append(actor)
        refs[actor.handle.ready.remote()] = ("ready", len(actors) - 1)
        outcome.actors_started += 1
        outcome.shards_per_actor.append(0)

    def requeue(task: ShardTask, reason: str) -> None:
        attempts[task.shard_id] = attempts.get(task.shard_id, 0) + 1
        if attempts[task.shard_id] < policy.max_attempts:
            log.warning("shard %d failed (%s); retrying", task.shard_id, reason)
            outcome.retries += 1
            queue.append(task)
        else:
            outcome.failed[task.shard_id] = reason

    def probe_later(index: int) -> None:
        actor = actors[index]
        if actor.probes >= policy.max_probes:
            log.warning("worker %d unreachable after %d probes; dropping it", index, policy.max_probes)
            actor.state = "dropped"
            return
        actor.state, actor.probe_due = "probing", time.monotonic() + min(30.0, 2.0 ** actor.probes)

    for _ in range(count):
        start_actor()
    last_alive, last_grow = time.monotonic(), time.monotonic()
    while queue or any(a.state == "busy" for a in actors):
        now = time.monotonic()
        for index, actor in enumerate(actors):
            if actor.state == "probing" and actor.probe_due <= now:
                actor.state, actor.probes = "starting", actor.probes + 1
                refs[actor.handle.ready.remote()] = ("ready", index)
            elif actor.state == "busy" and now - actor.started > policy.shard_deadline_s:
                log.warning("shard %d passed its %.0f s deadline; restarting its worker", actor.task.shard_id,
                            policy.shard_deadline_s)
                outcome.deadline_kills += 1
                ray.kill(actor.handle, no_restart=False)  # its ref fails with an actor error: re-queued there
                actor.started = float("inf")
        if room is not None and queue and now - last_grow > policy.grow_every_s:
            last_grow = now
            live = sum(a.state != "dropped" for a in actors)
            for _ in range(max(0, min(room() - live, len(queue)))):
                start_actor()
        for index, actor in enumerate(actors):
            if actor.state == "idle" and queue:
                task = queue.popleft()
                token = secrets.token_hex(8)
                assigned = registry.assign.remote(task.shard_id, token)  # an argument: done before the attempt runs
                actor.state, actor.task, actor.started = "busy", task, time.monotonic()
                refs[actor.handle.run_attempt.remote(task, token, registry, assigned)] = ("run", index)
        if any(a.state in ("idle", "busy") for a in actors):
            last_alive = now
        elif room is None and actors and all(a.state == "dropped" for a in actors):
            break
        elif queue and now - last_alive > policy.idle_timeout_s:
            reason = (f"no worker was ready for {policy.idle_timeout_s:.0f} s "
                      "(the cluster cannot place the workers, or they keep failing)")
            for task in queue:
                outcome.failed[task.shard_id] = reason
            break
        if not refs:
            time.sleep(0.2)
            continue
        done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
        for ref in done:
            kind, index = refs.pop(ref)
            actor = actors[index]
            try:
                result = ray.get(ref)
            except RayError as exc:
                reason = failure_reason(exc)
                if CREATION_FAILURE in str(exc):
                    raise WorkerStartError(f"a worker failed to start: {reason}") from None
                if kind == "run":
                    requeue(actor.task, reason)
                    actor.task = None
                probe_later(index)
                continue
            if kind == "ready":
                actor.state, actor.probes = "idle", 0
                continue
            task, actor.task, actor.state = actor.task, None, "idle"
            outcome.shards_per_actor[index] += 1
            on_done(task, result)
    outcome.failed.update({t.shard_id: "no worker could be reached" for t in queue if t.shard_id not in outcome.failed})
    return outcome


class RayShardWorker(ShardWorker):
    """The worker as the scheduler's Ray actor: a shard attempt checks its token before it writes."""

    def run_attempt(self, task: ShardTask, token: str, registry: Any, assigned: None = None) -> dict:
        """Generate ``task`` as attempt ``token`` (``assigned``: the registry's acknowledgement of it)."""
        import ray

        def guard() -> None:
            owner = ray.get(registry.owner.remote(task.shard_id))
            if owner != token:
                raise StaleAttempt(f"shard {task.shard_id}: attempt {token} was superseded by {owner}")

        return self.run(task, guard=guard)
