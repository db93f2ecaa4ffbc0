"""Attempt tokens: which attempt of each shard owns it now (a light module: its Ray actor, and every
worker that unpickles a handle to it, imports no torch)."""

from __future__ import annotations


class AttemptRegistry:
    """Current attempt token of every dispatched shard (runs as a Ray actor beside the workers)."""

    def __init__(self) -> None:
        self._tokens: dict[int, str] = {}

    def assign(self, shard_id: int, token: str) -> None:
        self._tokens[int(shard_id)] = token

    def owner(self, shard_id: int) -> str | None:
        return self._tokens.get(int(shard_id))
