"""A test double of the part of Ray that :func:`pipeline.run.scheduler.schedule` uses, on a virtual clock.

The scheduler's state machine (queues, deadlines, probes, hand-overs, idle timeout, growth) is tested
in-process with it: no processes start and no deadline is waited out, ``wait`` moves the clock to the
next event instead. What the double does is what Ray does for the scheduler's actors
(``max_restarts=-1``, ``max_task_retries=0``):

- an actor runs its calls one at a time, in the order they were submitted, once its process is up;
- a process that dies (a crash, ``kill``) fails its running call and the calls queued on it with an
  actor error; calls submitted afterwards run on the restarted process (a new pid);
- a process killed with ``no_restart`` stays dead: its calls, and any submitted later, never run;
- an exception raised in a call fails that call with a ``RayTaskError`` wrapping it; the actor lives on;
- a constructor that raises fails every call with Ray's creation-task error.

A shard attempt behaves as :class:`pipeline.run.scheduler.RayShardWorker`'s: it checks the registry's
token when it starts and before it reports, and :class:`Script` says how long each shard takes and
which misbehaves (on its first attempt only).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.exceptions import RayActorError, RayTaskError

from pipeline.corpus.writer import StaleAttempt
from pipeline.run.attempts import AttemptRegistry

CREATION_ERROR = ("The actor died because of an error raised in its creation task, ray::RayShardWorker.__init__()\n"
                  "  File \"worker.py\", line 1, in __init__\nRuntimeError: {message}")


@dataclass
class Script:
    """What the scripted shards do: ``shards[i] = (action, seconds)``, action ``ok``, ``crash`` (the
    process dies at the end of the shard) , ``hang`` (never ends) or ``raise`` (the shard raises), each
    firing on the shard's first attempt only (``raise_always`` raises on every attempt)."""

    shards: dict[int, tuple[str, float]] = field(default_factory=dict)
    default_seconds: float = 1.0
    start_seconds: float = 2.0  # a process's start-up (teacher loading) before its first call runs
    restart_seconds: float = 2.0
    fired: set[int] = field(default_factory=set)

    def action(self, shard_id: int) -> tuple[str, float]:
        action, seconds = self.shards.get(shard_id, ("ok", self.default_seconds))
        if action == "raise_always":
            return "raise", seconds
        if action == "ok" or shard_id in self.fired:
            return "ok", seconds
        self.fired.add(shard_id)
        return action, seconds


class FakeRef:
    """An object ref: resolved once with a value or an exception."""

    _ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self._ids)

    def __repr__(self) -> str:
        return f"FakeRef({self.id})"


@dataclass
class _Call:
    ref: FakeRef
    method: str
    args: tuple


class _Method:
    def __init__(self, target: Any, name: str) -> None:
        self.target, self.name = target, name

    def remote(self, *args: Any) -> FakeRef:
        return self.target.submit(self.name, args)


class FakeActor:
    """One actor: its process, its call queue and the shard it runs now."""

    _pids = itertools.count(1000)
    _ids = itertools.count(1)

    def __init__(self, ray: FakeRay, script: Script, *, placeable: bool = True, start_error: str | None = None):
        self.ray, self.script, self.start_error = ray, script, start_error
        self._actor_id = next(self._ids).to_bytes(16, "big")  # what a handle's id is to the scheduler (``.hex()``)
        self.stopped = False  # killed with ``no_restart``: Ray does not bring it back
        self.up_at = ray.now + script.start_seconds if placeable else math.inf
        self.pid = next(self._pids)
        self.queue: deque[_Call] = deque()
        self.running: _Call | None = None
        self.ends_at = math.inf
        self.ending: Callable[[], None] | None = None  # what happens when the running call ends
        self.free_at = self.up_at

    # the handle's API ------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def submit(self, method: str, args: tuple) -> FakeRef:
        call = _Call(FakeRef(), method, args)
        self.queue.append(call)
        return call.ref

    # the simulation ---------------------------------------------------------------------------------
    def next_event(self) -> float:
        if self.running is not None:
            return self.ends_at
        if self.queue:
            return max(self.up_at, self.free_at)
        return math.inf

    def step(self) -> None:
        """Handle this actor's next event, at ``ray.now``."""
        if self.running is not None:
            ending, self.running, self.ending = self.ending, None, None
            self.free_at = self.ray.now
            ending()
            return
        call = self.queue.popleft()
        if self.start_error is not None:
            self.ray.resolve(call.ref, error=RayActorError(error_msg=CREATION_ERROR.format(message=self.start_error)))
        elif call.method == "ready":
            self.ray.resolve(call.ref, value=self.pid)
        elif call.method == "run_attempt":
            self._start_attempt(call)
        else:
            raise AssertionError(f"the scheduler called {call.method!r}, which the worker does not have")

    def _start_attempt(self, call: _Call) -> None:
        task, token, registry, _assigned = call.args
        registry = registry.target
        started = self.ray.now
        if registry.owner(task.shard_id) != token:  # handed to another actor meanwhile: stop before any work
            self.ray.resolve(call.ref, error=_task_error(StaleAttempt(f"shard {task.shard_id}: attempt {token}")))
            return
        action, seconds = self.script.action(task.shard_id)
        pid = self.pid

        def end() -> None:
            if action == "crash":
                self.queue.appendleft(call)  # dies with the calls queued behind it
                self.die()
                return
            if action == "raise":
                self.ray.resolve(call.ref, error=_task_error(RuntimeError(f"shard {task.shard_id}: injected fault")))
            elif registry.owner(task.shard_id) != token:
                self.ray.resolve(call.ref, error=_task_error(StaleAttempt(f"shard {task.shard_id}: attempt {token}")))
            else:
                self.ray.resolve(call.ref, value={"samples": task.count, "pid": pid, "token": token,
                                                  "started": started, "ended": self.ray.now})

        self.running, self.ending = call, end
        self.ends_at = math.inf if action == "hang" else self.ray.now + seconds
        self.ray.attempts_started.append((task.shard_id, token, pid, started))

    def die(self) -> None:
        """The process dies now: its running and queued calls fail; Ray restarts it."""
        lost = ([self.running] if self.running is not None else []) + list(self.queue)
        self.running, self.ending, self.ends_at = None, None, math.inf
        self.queue.clear()
        for call in lost:
            self.ray.resolve(call.ref, error=RayActorError(error_msg="The actor died unexpectedly before finishing "
                                                                     "this task."))
        self.pid = next(self._pids)
        self.up_at = self.free_at = math.inf if self.stopped else self.ray.now + self.script.restart_seconds


class FakeRegistry:
    """The attempt registry as an actor whose calls complete at once."""

    def __init__(self, ray: FakeRay) -> None:
        self.ray, self.target = ray, AttemptRegistry()

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def submit(self, method: str, args: tuple) -> FakeRef:
        ref = FakeRef()
        self.ray.resolve(ref, value=getattr(self.target, method)(*args))
        return ref


def _task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("RayShardWorker.run_attempt", f"{type(cause).__name__}: {cause}", cause)


class FakeRay:
    """``wait``, ``get`` and ``kill`` over :class:`FakeActor` s, and the virtual clock (``monotonic``,
    ``sleep``) that replaces the scheduler's ``time``."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.now = 0.0
        self.actors: list[FakeActor] = []
        self.results: dict[FakeRef, tuple[Any, BaseException | None]] = {}
        self.attempts_started: list[tuple[int, str, int, float]] = []  # (shard, token, pid, when)
        self.kills: list[float] = []  # when the scheduler killed an actor

    def actor(self, **kwargs: Any) -> FakeActor:
        actor = FakeActor(self, self.script, **kwargs)
        self.actors.append(actor)
        return actor

    def resolve(self, ref: FakeRef, *, value: Any = None, error: BaseException | None = None) -> None:
        assert ref not in self.results, f"{ref} resolved twice"
        self.results[ref] = (value, error)

    def advance(self, until: float) -> None:
        """Run every actor event due by ``until``, in time order, then set the clock to ``until``."""
        while True:
            due = min(self.actors, key=FakeActor.next_event, default=None)
            if due is None or due.next_event() > until:
                break
            self.now = max(self.now, due.next_event())
            due.step()
        self.now = max(self.now, until)

    # the clock -------------------------------------------------------------------------------------
    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.advance(self.now + seconds)

    # Ray's API -------------------------------------------------------------------------------------
    def wait(self, refs: Sequence[FakeRef], *, num_returns: int = 1,
             timeout: float | None = None) -> tuple[list[FakeRef], list[FakeRef]]:
        deadline = math.inf if timeout is None else self.now + timeout
        while sum(r in self.results for r in refs) < num_returns:
            upcoming = min((a.next_event() for a in self.actors), default=math.inf)
            if upcoming > deadline:
                self.advance(deadline)
                break
            assert upcoming < math.inf, "wait() without timeout on refs that can never resolve"
            self.advance(upcoming)
        ready = [r for r in refs if r in self.results][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: FakeRef, *, timeout: float | None = None) -> Any:
        self.wait([ref], timeout=timeout)
        value, error = self.results[ref]
        if error is not None:
            raise error
        return value

    def kill(self, handle: FakeActor, *, no_restart: bool = True) -> None:
        self.kills.append(self.now)
        handle.stopped = no_restart
        handle.die()
