"""One writer per corpus: a lease object in OUT (``lease.json``: holder token, host, pid, command, heartbeat).

``run`` and ``verify --repair`` hold the lease while they write. A second writer is refused with
:class:`LeaseHeld` (exit 2) naming the holder; a lease whose heartbeat is older than its ``ttl_s`` (a
killed or paused driver), or whose holder process is gone from this host, is taken over, with a
warning. The holder refreshes the heartbeat from a background thread every ``ttl_s / 4`` and removes
the lease on release. Object stores have no compare-and-swap in fsspec, so acquisition writes, waits
``settle_s`` and reads back: of two writers racing within that window, the one whose token is not read
back steps aside. ``lease.json`` is the run's own file: publish never sends it.

Fencing: the lease is only as good as its holder's last heartbeat, so every commit of a writer checks
its token first (:func:`check_fence`): the lease must still name it and be younger than its ``ttl_s``.
A writer paused past its lease (a stopped VM) may have been taken over already: from then on its
commits raise :class:`LeaseLost`, naming the holder, and :meth:`CorpusLease.check` stops its driver.
Heartbeat ages compare clocks of different machines: they must agree to well within ``ttl_s``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.writer import StaleAttempt
from pipeline.errors import UserError

log = logging.getLogger(__name__)

LEASE_NAME = "lease.json"
DEFAULT_TTL_S = 60.0


class LeaseHeld(UserError):
    """Another live writer holds the corpus."""


class LeaseLost(StaleAttempt):
    """This writer no longer holds the corpus's lease: it must not commit anything more (exit 1)."""


def read_lease(layout: CorpusLayout) -> dict[str, Any] | None:
    """The current lease record, or None (none, or unreadable: a torn write is treated as absent)."""
    try:
        record = json.loads(layout.storage.read_text(LEASE_NAME))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "token" in record else None


def _age(record: dict[str, Any]) -> float:
    return time.time() - float(record.get("heartbeat", 0.0))


def _holder_gone(record: dict[str, Any]) -> bool:
    """A holder on this host whose process no longer exists (a killed driver) holds nothing."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def describe_holder(record: dict[str, Any]) -> str:
    return (f"{record.get('command', '?')} (host {record.get('host', '?')}, pid {record.get('pid', '?')}, "
            f"last heartbeat {_age(record):.0f} s ago)")


def fence_problem(record: dict[str, Any] | None, token: str) -> str | None:
    """Why the writer holding ``token`` may not commit under lease ``record``; None when it may."""
    if record is None:
        return "no writer holds it any more (it was taken over and released, or removed)"
    if record["token"] != token:
        return f"it is now held by {describe_holder(record)}"
    age, ttl = _age(record), float(record.get("ttl_s", DEFAULT_TTL_S))
    if age >= ttl:
        return (f"it expired: last heartbeat {age:.0f} s ago, lease time {ttl:g} s (the writer was stopped or "
                f"starved past it; another writer may be taking the corpus over)")
    return None


def check_fence(layout: CorpusLayout, token: str) -> None:
    """Raise :class:`LeaseLost` unless the writer holding ``token`` still holds ``layout``'s lease."""
    problem = fence_problem(read_lease(layout), token)
    if problem is not None:
        raise LeaseLost(f"{layout.root}: this writer lost the corpus lease: {problem}")


@dataclass
class CorpusLease:
    """A held lease; use :meth:`acquire` (or ``with CorpusLease.acquire(...)``)."""

    layout: CorpusLayout
    command: str
    ttl_s: float = DEFAULT_TTL_S
    token: str = field(default_factory=lambda: secrets.token_hex(12))
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False  # another writer took the lease over, or it expired (see ``lost_reason``)
    lost_reason: str = ""

    @classmethod
    def acquire(cls, layout: CorpusLayout, command: str, *, ttl_s: float = DEFAULT_TTL_S,
                settle_s: float = 0.2) -> CorpusLease:
        """Take the lease of ``layout`` or raise :class:`LeaseHeld` naming the live holder."""
        lease = cls(layout, command, ttl_s)
        current = read_lease(layout)
        if current is not None and not _holder_gone(current) and _age(current) < float(current.get("ttl_s", ttl_s)):
            raise LeaseHeld(f"{layout.root} is being written by {describe_holder(current)}; "
                            f"wait for it to finish, or stop it (a lease is taken over once its heartbeat "
                            f"is {float(current.get('ttl_s', ttl_s)):.0f} s old)")
        if current is not None:
            log.warning("%s: taking over a stale lease of %s", layout.root, describe_holder(current))
        lease._write()
        time.sleep(settle_s)
        winner = read_lease(layout)
        if winner is None or winner["token"] != lease.token:
            raise LeaseHeld(f"{layout.root}: another writer took the lease at the same time: "
                            f"{describe_holder(winner) if winner else 'unknown'}")
        lease._thread = threading.Thread(target=lease._beat, name="corpus-lease", daemon=True)
        lease._thread.start()
        return lease

    def _record(self) -> dict[str, Any]:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "heartbeat": time.time(), "ttl_s": self.ttl_s}

    def _write(self) -> None:
        self.layout.storage.write_atomic(LEASE_NAME, json.dumps(self._record(), sort_keys=True).encode())

    def _lose(self, problem: str) -> None:
        if not self.lost:
            self.lost_reason, self.lost = f"{self.layout.root}: this run lost the corpus lease: {problem}", True
            log.error("%s", self.lost_reason)

    def raise_if_lost(self) -> None:
        """Raise :class:`LeaseLost` if the heartbeat found the lease lost (no storage access)."""
        if self.lost:
            raise LeaseLost(self.lost_reason)

    def check(self) -> None:
        """Before a commit: raise :class:`LeaseLost` unless the lease still names this holder and is
        fresh (reads ``lease.json``)."""
        self.raise_if_lost()
        problem = fence_problem(read_lease(self.layout), self.token)
        if problem is not None:
            self._lose(problem)
            self.raise_if_lost()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            problem = fence_problem(read_lease(self.layout), self.token)
            if problem is not None:  # never renewed once expired: a takeover may be under way
                self._lose(problem)
                return
            try:
                self._write()
            except OSError as exc:  # keep beating: a transient storage error must not end the run
                log.warning("%s: lease heartbeat failed (%s)", self.layout.root, exc)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = read_lease(self.layout)
        if current is not None and current["token"] == self.token:
            self.layout.storage.remove(LEASE_NAME)

    def __enter__(self) -> CorpusLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
