"""Where every file of a corpus lives (see DESIGN.md, "Corpus layout"): relative names and sample keys.

Names are POSIX paths relative to the corpus root (``data/train-000042.tar``); the corpus's
:class:`~pipeline.corpus.storage.CorpusStorage` (a local folder or any fsspec URL) turns them into bytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.corpus.storage import CorpusStorage, storage_for

SPLIT = "train"
DATA_DIR, METADATA_DIR, STATS_DIR, PREVIEW_DIR = "data", "metadata", "stats", "preview"
MANIFEST, SHARDINDEX, README = "manifest.json", "shardindex.json", "README.md"
OVERVIEW_NAME = "overview.png"  # preview/overview.png: a few images of each class (pipeline.hub.preview)
OVERVIEW_MAX_CLASSES = 64  # more classes: an evenly spaced subset (first and last included)
KEY_PATTERN = re.compile(r"^c(\d{5,})-i(\d{7,})$")
SHARD_FILE_PATTERN = re.compile(rf"^{SPLIT}-(\d{{6,}})\.(tar|parquet|json)$")


def shard_name(shard_id: int) -> str:
    """``train-000042``: the stem shared by a shard's tar, parquet and stats files."""
    if shard_id < 0:
        raise ValueError(f"shard id must be >= 0, got {shard_id}")
    return f"{SPLIT}-{shard_id:06d}"


def sample_key(label: int, index: int) -> str:
    """Unique, sortable sample key with class id and per-class index and no dots: ``c00042-i0000123``."""
    return f"c{label:05d}-i{index:07d}"


def parse_sample_key(key: str) -> tuple[int, int]:
    """``c00042-i0000123`` -> ``(42, 123)``; ValueError for anything else."""
    match = KEY_PATTERN.match(key) if isinstance(key, str) else None
    if match is None:
        raise ValueError(f"sample key {key!r} does not look like {sample_key(0, 0)!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CorpusLayout:
    """The names of one corpus's files, and the storage they live in. Creates nothing."""

    root: Path | str  # a local folder (Path) or an object-storage URL (str)
    storage: CorpusStorage = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        storage = storage_for(self.root)
        object.__setattr__(self, "root", storage.root)
        object.__setattr__(self, "storage", storage)

    manifest = MANIFEST
    readme = README
    shardindex = SHARDINDEX
    data_dir = DATA_DIR
    metadata_dir = METADATA_DIR
    stats_dir = STATS_DIR
    preview_dir = PREVIEW_DIR

    @staticmethod
    def tar(shard_id: int) -> str:
        """``data/train-000042.tar``: the shard's WebDataset tar."""
        return f"{DATA_DIR}/{shard_name(shard_id)}.tar"

    @staticmethod
    def parquet(shard_id: int) -> str:
        """``metadata/train-000042.parquet``: one row per sample."""
        return f"{METADATA_DIR}/{shard_name(shard_id)}.parquet"

    @staticmethod
    def stats(shard_id: int) -> str:
        """``stats/train-000042.json``: the completion marker, written last."""
        return f"{STATS_DIR}/{shard_name(shard_id)}.json"

    @staticmethod
    def preview(file_name: str) -> str:
        """``preview/FILE``: a contact sheet."""
        return f"{PREVIEW_DIR}/{file_name}"


def as_layout(root: CorpusLayout | str | os.PathLike[str]) -> CorpusLayout:
    """Accept a layout or a corpus root (a folder or an fsspec URL)."""
    return root if isinstance(root, CorpusLayout) else CorpusLayout(root)
