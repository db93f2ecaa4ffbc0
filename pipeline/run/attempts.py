"""The run's bookkeeping actor: which attempt of each shard owns it now, and how far each worker's
start-up has got (a light module: its Ray actor, and every worker that unpickles a handle to it,
imports no torch)."""

from __future__ import annotations


class AttemptRegistry:
    """Current attempt token of every dispatched shard, and the workers' start-up reports (runs as a
    Ray actor beside the workers)."""

    def __init__(self) -> None:
        self._tokens: dict[int, str] = {}
        self._starts: dict[str, tuple[int, str, int, str]] = {}

    def assign(self, shard_id: int, token: str) -> None:
        self._tokens[int(shard_id)] = token

    def owner(self, shard_id: int) -> str | None:
        return self._tokens.get(int(shard_id))

    def report_start(self, worker: str, phase: str, pid: int, node: str) -> None:
        """Worker ``worker`` (its Ray actor id) reached or is still in ``phase`` of its start-up."""
        count = self._starts.get(worker, (0, "", 0, ""))[0] + 1
        self._starts[worker] = (count, phase, int(pid), node)

    def start_reports(self) -> dict[str, tuple[int, str, int, str]]:
        """``{worker: (reports so far, last phase, pid, node)}``: a count that grew is progress."""
        return dict(self._starts)
