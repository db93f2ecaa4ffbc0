"""Handing shards to Ray actors so that a run finishes or fails, never hangs, and keeps the actors busy.

- An actor gets work only after it has answered ``ready()`` (its teacher is loaded and it is placed);
  an actor Ray cannot place simply never becomes ready and is never given a shard.
- An actor that dies in its constructor fails the run at once with the constructor's own error.
- Each actor holds up to ``queue_depth`` shards: one runs, the others wait in its Ray call queue (an
  actor runs its calls in order), so it starts the next shard the moment it finishes one instead of
  idling while the driver receives the result and sends more. Every actor gets a first shard before
  any gets a second. When the queue is empty and an actor has nothing, a shard still waiting behind
  another actor's running one is handed to it as a new attempt: the waiting attempt no longer owns
  the shard and stops as soon as it starts (``ray.cancel`` would only take effect then too).
- Any ``RayError`` of a running shard (actor or node died, object lost, out of memory, task raised)
  re-queues it, up to ``max_attempts``; the actor is probed with ``ready()`` before it gets more work.
  Shards that were only waiting behind it on a failed actor never ran: they are re-queued at the
  front without using an attempt.
- A shard running past its deadline has its actor killed (Ray restarts it) and is re-queued elsewhere.
  A queued shard's deadline starts when it starts running: when the driver sees its predecessor's
  result (never earlier than the actual start, so a deadline can only be late, never early).
- Every attempt carries a token; the :class:`AttemptRegistry` knows the current one, so an older
  attempt of a re-queued shard can no longer mark the shard complete.
- With ``grow``, new actors are started when the cluster gains room (a node added mid-run).
- Start-up follows progress, not a clock: a starting worker reports its phases and keeps reporting
  while its teacher loads (to the registry, which the driver polls). One that reports nothing new for
  ``start_timeout_s`` (never placed, frozen, hung) is stopped and named; the run fails for start-up
  only once no worker is ready or busy and every one has failed or stopped making progress.
- ``fence()`` is asked on every turn of the loop (the run stops there once it lost its corpus lease).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.corpus.index import ShardTask
from pipeline.corpus.writer import StaleAttempt
from pipeline.run.attempts import AttemptRegistry
from pipeline.run.worker import ShardWorker, WorkerConfig

__all__ = [
    "RayShardWorker",
    "ScheduleOutcome",
    "SchedulePolicy",
    "WorkerStartError",
    "failure_reason",
    "schedule",
]

log = logging.getLogger(__name__)

CREATION_FAILURE = "error raised in its creation task"


class WorkerStartError(RuntimeError):
    """A worker's constructor raised: every worker would fail the same way, so the run stops."""


@dataclass(frozen=True)
class SchedulePolicy:
    """Limits of :func:`schedule`."""

    max_attempts: int = 3  # per shard, counting worker crashes and deadlines of its running attempts
    shard_deadline_s: float = 3600.0  # one attempt of one shard, from the start of its run to its result
    start_timeout_s: float = 900.0  # a starting actor that reports no progress for this long is stuck
    max_probes: int = 12  # readiness probes of a failed actor (back-off 1, 2, 4 .. 30 s)
    grow_every_s: float = 5.0  # how often to look for room for more actors (with ``grow``)
    queue_depth: int = 2  # shards held by one actor at a time: one running, the rest queued behind it
    progress_poll_s: float = 1.0  # how often the driver reads the start-up reports while actors start

    def __post_init__(self) -> None:
        if self.queue_depth < 1:
            raise ValueError(f"queue_depth: must be >= 1, got {self.queue_depth}")
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s: must be > 0, got {self.start_timeout_s}")


@dataclass
class _Attempt:
    ref: Any
    task: ShardTask
    started: float | None = None  # when it started running, as the driver knows it; None: queued
    orphaned: bool = False  # queued on an actor whose running shard failed: its failure uses no attempt
    superseded: bool = False  # handed to an idle actor as a new attempt: its own result is ignored


@dataclass
class _Actor:
    handle: Any
    state: str = "starting"  # starting | ready | probing | dropped | stuck
    probes: int = 0
    probe_due: float = 0.0
    attempts: list[_Attempt] = field(default_factory=list)  # in the actor's call order: the first runs
    key: str = ""  # its Ray actor id: the name its start-up reports come under
    progress_at: float = 0.0  # when the driver last saw it progress (started, reported, answered)
    reports: int = 0  # start-up reports seen so far
    phase: str = ""  # its last start-up report
    where: str = ""  # "pid P on node N", once it reported


@dataclass
class ScheduleOutcome:
    """What happened to the pending shards."""

    failed: dict[int, str] = field(default_factory=dict)  # shard id -> last reason
    retries: int = 0  # running attempts that failed and were re-queued
    requeued_unstarted: int = 0  # queued shards lost with their actor (or cancelled), re-queued at no attempt
    handed_over: int = 0  # shards queued on a busy actor and handed to an idle one
    deadline_kills: int = 0
    actors_started: int = 0
    shards_per_actor: list[int] = field(default_factory=list)  # completed shards, in actor start order
    stuck: list[str] = field(default_factory=list)  # actors stopped for making no start-up progress: why


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
    on_ready: Callable[[Any], bool] | None = None,
    fence: Callable[[], None] | None = None,
) -> ScheduleOutcome:
    """Run every task of ``pending`` on up to ``count`` actors made by ``make_actor``; see the module doc.

    ``room()``, when given, says how many actors the cluster could hold now; more are started up to
    that (a node joined). ``on_ready(handle)`` admits an actor once it answered ``ready()`` (False: it
    gets no work; an exception ends the schedule). ``fence()`` is called on every turn; what it raises
    ends the schedule. Raises :class:`WorkerStartError` when an actor's constructor raises.
    """
    from ray.exceptions import RayError, RayTaskError

    outcome = ScheduleOutcome()
    queue: deque[ShardTask] = deque(pending)
    attempts: dict[int, int] = {}
    actors: list[_Actor] = []
    refs: dict[Any, tuple[str, int]] = {}  # ref -> ("ready" | "run", actor index)

    def start_actor() -> None:
        handle = make_actor()
        actor = _Actor(handle, key=_actor_key(handle), progress_at=time.monotonic())
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

    def send(index: int, task: ShardTask, now: float) -> None:
        actor = actors[index]
        token = secrets.token_hex(8)
        assigned = registry.assign.remote(task.shard_id, token)  # an argument: done before the attempt runs
        ref = actor.handle.run_attempt.remote(task, token, registry, assigned)
        actor.attempts.append(_Attempt(ref, task, started=now if not actor.attempts else None))
        refs[ref] = ("run", index)

    def dispatch(now: float) -> None:
        # in rounds: every ready actor gets its first shard before any gets its second
        for depth in range(policy.queue_depth):
            for index, actor in enumerate(actors):
                if not queue:
                    return
                if actor.state == "ready" and sum(not a.superseded for a in actor.attempts) == depth:
                    send(index, queue.popleft(), now)

    def hand_over(now: float) -> None:
        """Give each actor that has nothing a shard still queued behind another actor's running one."""
        for index, actor in enumerate(actors):
            if actor.state != "ready" or actor.attempts:
                continue
            waiting = [(len(a.attempts), a, t) for a in actors for t in a.attempts[1:] if not t.superseded]
            if not waiting:
                return
            _, _, attempt = max(waiting, key=lambda w: w[0])
            attempt.superseded = True  # the new attempt's token makes it stop when it starts
            outcome.handed_over += 1
            send(index, attempt.task, now)

    def finish(index: int, attempt: _Attempt, now: float) -> int:
        """Drop ``attempt`` from its actor; the next one, if it was the running one's, starts now."""
        actor = actors[index]
        position = actor.attempts.index(attempt)
        actor.attempts.pop(position)
        if position == 0 and actor.attempts and actor.attempts[0].started is None:
            actor.attempts[0].started = now
        return position

    def follow_start_up(now: float) -> None:
        """Read the start-up reports; stop each starting actor that made no progress for too long."""
        starting = [a for a in actors if a.state == "starting"]
        if not starting:
            return
        reports = ray.get(registry.start_reports.remote(), timeout=60)
        for index, actor in enumerate(actors):
            if actor.state != "starting":
                continue
            count, phase, pid, node = reports.get(actor.key, (0, "", 0, ""))
            if count != actor.reports:
                actor.reports, actor.phase, actor.progress_at = count, phase, now
                actor.where = f"pid {pid} on node {node}"
            elif now - actor.progress_at > policy.start_timeout_s:
                actor.state = "stuck"
                outcome.stuck.append(stuck_reason(index, actor))
                log.warning("%s; stopping it", outcome.stuck[-1])
                ray.kill(actor.handle, no_restart=True)

    def stuck_reason(index: int, actor: _Actor) -> str:
        if not actor.reports:
            return (f"worker {index} never reported in {policy.start_timeout_s:.0f} s (the cluster did not place it, "
                    "or its process did not start)")
        return (f"worker {index} ({actor.where}) made no start-up progress for {policy.start_timeout_s:.0f} s "
                f"(last report: {actor.phase})")

    for _ in range(count):
        start_actor()
    last_alive, last_grow, last_poll = time.monotonic(), time.monotonic(), 0.0
    while queue or any(a.attempts for a in actors):
        if fence is not None:
            fence()
        now = time.monotonic()
        if now - last_poll >= policy.progress_poll_s:
            last_poll = now
            follow_start_up(now)
        for index, actor in enumerate(actors):
            if actor.state == "probing" and actor.probe_due <= now:
                actor.state, actor.probes, actor.progress_at = "starting", actor.probes + 1, now
                refs[actor.handle.ready.remote()] = ("ready", index)
            running = actor.attempts[0] if actor.attempts else None
            if running is not None and now - (running.started or now) > policy.shard_deadline_s:
                log.warning("shard %d passed its %.0f s deadline; restarting its worker", running.task.shard_id,
                            policy.shard_deadline_s)
                outcome.deadline_kills += 1
                ray.kill(actor.handle, no_restart=False)  # its refs fail with an actor error: re-queued there
                running.started = float("inf")
        if room is not None and queue and now - last_grow > policy.grow_every_s:
            last_grow = now
            live = sum(a.state != "dropped" for a in actors)  # a stuck actor keeps its place: not replaced
            for _ in range(max(0, min(room() - live, len(queue)))):
                start_actor()
        dispatch(now)
        if not queue and policy.queue_depth > 1:
            hand_over(now)
        if any(a.state in ("ready", "starting", "probing") or a.attempts for a in actors):
            last_alive = now  # a starting actor is followed by its progress (``follow_start_up``)
        elif queue and actors and all(a.state in ("dropped", "stuck") for a in actors) and any(
                a.state == "stuck" for a in actors):
            reason = "no worker could start: " + "; ".join(
                stuck_reason(i, a) for i, a in enumerate(actors) if a.state == "stuck")
            for task in queue:
                outcome.failed[task.shard_id] = reason
            break
        elif room is None and actors and all(a.state == "dropped" and not a.attempts for a in actors):
            break
        elif queue and now - last_alive > policy.start_timeout_s:  # grown pools: every actor was dropped
            reason = (f"no worker was ready or reachable for {policy.start_timeout_s:.0f} s "
                      "(they keep failing, or the cluster cannot place them)")
            for task in queue:
                outcome.failed[task.shard_id] = reason
            break
        if not refs:
            time.sleep(0.2)
            continue
        done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
        if done and len(refs) > 1:  # everything else already back, handled in each actor's call order
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        now = time.monotonic()
        kinds = {ref: refs.pop(ref) for ref in done}
        ordered = sorted(done, key=lambda r: (kinds[r][1], kinds[r][0] == "run",
                                              _position(actors[kinds[r][1]], r)))
        for ref in ordered:
            kind, index = kinds[ref]
            actor = actors[index]
            attempt = next((a for a in actor.attempts if a.ref == ref), None) if kind == "run" else None
            try:
                result = ray.get(ref)
            except RayError as exc:
                reason = failure_reason(exc)
                if attempt is None and actor.state == "stuck":  # its readiness fails once it is stopped
                    continue
                if CREATION_FAILURE in str(exc):
                    raise WorkerStartError(f"a worker failed to start: {reason}") from None
                if attempt is None:  # a readiness probe
                    probe_later(index)
                    continue
                ran = finish(index, attempt, now) == 0 and not attempt.orphaned
                actor_failed = not isinstance(exc, RayTaskError)
                if ran and actor_failed:  # what waited behind it on this actor will never run
                    for queued in actor.attempts:
                        queued.orphaned = True
                if ran and (actor_failed or not attempt.superseded) and actor.state == "ready":
                    probe_later(index)
                if attempt.superseded:  # handed over: the new attempt's result counts
                    continue
                if not ran:
                    log.info("shard %d was queued on a failed worker (%s); re-queued", attempt.task.shard_id, reason)
                    queue.appendleft(attempt.task)
                    outcome.requeued_unstarted += 1
                    continue
                requeue(attempt.task, reason)
                continue
            if kind == "ready":
                if actor.state == "stuck":  # it answered after all, once stopped: too late
                    continue
                admitted = on_ready is None or on_ready(actor.handle)
                actor.state, actor.probes = ("ready" if admitted else "dropped"), 0
                continue
            finish(index, attempt, now)
            if attempt.superseded:  # it finished before the hand-over reached it: the new attempt rewrites it
                continue
            outcome.shards_per_actor[index] += 1
            on_done(attempt.task, result)
    outcome.failed.update({t.shard_id: "no worker could be reached" for t in queue if t.shard_id not in outcome.failed})
    return outcome


def _position(actor: _Actor, ref: Any) -> int:
    return next((i for i, a in enumerate(actor.attempts) if a.ref == ref), -1)


def _actor_key(handle: Any) -> str:
    """An actor's id as its own process sees it (``ray.get_runtime_context().get_actor_id()``)."""
    return handle._actor_id.hex()


class RayShardWorker(ShardWorker):
    """The worker as the scheduler's Ray actor: start-up progress goes to the registry (the named actor
    ``registry_name``, looked up here: an actor handle among a restartable actor's constructor arguments
    makes Ray log an error at every creation); a shard attempt checks its token before it writes."""

    def __init__(self, config: WorkerConfig, registry_name: str | None = None) -> None:
        import ray

        report = None
        if registry_name is not None:
            registry = ray.get_actor(registry_name)
            key, pid, node = ray.get_runtime_context().get_actor_id(), os.getpid(), ray.util.get_node_ip_address()

            def report(phase: str) -> None:
                registry.report_start.remote(key, phase, pid, node)

        super().__init__(config, report=report)

    def run_attempt(self, task: ShardTask, token: str, registry: Any, assigned: None = None) -> dict:
        """Generate ``task`` as attempt ``token`` (``assigned``: the registry's acknowledgement of it)."""
        import ray

        def guard() -> None:
            owner = ray.get(registry.owner.remote(task.shard_id))
            if owner != token:
                raise StaleAttempt(f"shard {task.shard_id}: attempt {token} was superseded by {owner}")

        guard()  # a queued attempt handed to another worker meanwhile stops here, before any work
        return self.run(task, guard=guard)
