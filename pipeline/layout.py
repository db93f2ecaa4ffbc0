"""Where every file of a corpus lives (see DESIGN.md, "Corpus layout")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLIT = "train"


def shard_name(shard_id: int) -> str:
    """``train-000042``: the stem shared by a shard's tar, parquet and stats files."""
    if shard_id < 0:
        raise ValueError(f"shard id must be >= 0, got {shard_id}")
    return f"{SPLIT}-{shard_id:06d}"


def sample_key(label: int, index: int) -> str:
    """Unique, sortable sample key with class id and per-class index and no dots: ``c00042-i0000123``."""
    return f"c{label:05d}-i{index:07d}"


@dataclass(frozen=True)
class CorpusLayout:
    """Paths of one corpus folder. Creates nothing."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    @property
    def shardindex(self) -> Path:
        return self.root / "shardindex.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    @property
    def stats_dir(self) -> Path:
        return self.root / "stats"

    @property
    def preview_dir(self) -> Path:
        return self.root / "preview"

    def tar(self, shard_id: int) -> Path:
        return self.data_dir / f"{shard_name(shard_id)}.tar"

    def parquet(self, shard_id: int) -> Path:
        return self.metadata_dir / f"{shard_name(shard_id)}.parquet"

    def stats(self, shard_id: int) -> Path:
        return self.stats_dir / f"{shard_name(shard_id)}.json"
