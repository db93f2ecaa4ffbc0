"""Planning: a manifest's deterministic list of class shards with their seeds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardTask:
    """One class shard: ``count`` images of class ``label`` with per-class indices from ``first_index``."""

    shard_id: int
    label: int
    class_name: str
    first_index: int
    count: int
    seed: int
