"""The corpus index: ``manifest.json`` (spec + shard table) and a wids-style ``shardindex.json``.

Both are rewritten atomically. The stats files are the truth about completion; the index mirrors them
and is cheap to refresh after each shard (it reads stats JSON, never re-hashes tars). One process (the
run driver) owns index writes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.corpus.layout import CorpusLayout, as_layout, shard_name
from pipeline.errors import CorpusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """One row of the shard table (planned by ``pipeline.run.plan``): a class shard of ``count`` images
    of class ``label``, per-class indices from ``first_index``."""

    shard_id: int
    label: int
    class_name: str
    first_index: int
    count: int
    seed: int


_TASK_FIELDS = tuple(f.name for f in fields(ShardTask))
# What a corpus whose manifest does not record these inversion fields did (it was made before they
# existed): the engine's defaults of that time.
FIELDS_ADDED_LATER: dict[str, Any] = {"stopped_patches": "frozen", "saliency": "instant", "compile": "off",
                                      "pack_batches": 1}
MANIFEST_FORMAT = "smi-synth-corpus"
MANIFEST_VERSION = 1
WIDS_KIND = "wids-shard-index-v1"
_STATS_FIELDS = ("samples", "tar_bytes", "tar_sha256", "tar_md5", "inversion_seconds")


def _dump(obj: Any) -> bytes:
    # one line, C encoder: indentation made rewriting a 40,000-shard index take seconds
    return (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def read_stats(layout: CorpusLayout, shard_id: int) -> dict:
    """A shard's stats JSON (raises OSError / ValueError when missing or unreadable)."""
    stats = json.loads(layout.storage.read_text(layout.stats(shard_id)))
    if not isinstance(stats, dict):
        raise ValueError(f"{layout.stats(shard_id)}: not a JSON object")
    return stats


def stats_present(layout: CorpusLayout) -> set[str]:
    """File names under stats/ (one directory listing)."""
    return set(layout.storage.listdir(layout.stats_dir))


def _mark(entry: dict, stats: dict | None) -> None:
    for k in _STATS_FIELDS:
        entry.pop(k, None)
    entry["complete"] = stats is not None
    if stats is not None:
        entry.update({k: stats[k] for k in _STATS_FIELDS if k in stats})


def _sync(layout: CorpusLayout, manifest: dict, *, reread: set[int] | None) -> None:
    """Update the shard table from stats files; ``reread=None`` re-reads every stats file."""
    present = stats_present(layout)
    for entry in manifest["shards"]:
        sid = int(entry["shard_id"])
        if f"{shard_name(sid)}.json" not in present:
            _mark(entry, None)
        elif reread is None or sid in reread or not entry.get("complete") or "tar_sha256" not in entry:
            try:
                _mark(entry, read_stats(layout, sid))
            except (OSError, ValueError) as exc:
                log.warning("shard %d: unreadable stats (%s); listed as incomplete", sid, exc)
                _mark(entry, None)


def _shardindex(manifest: dict, name: str) -> dict:
    shardlist = [
        {
            "url": f"data/{shard_name(int(e['shard_id']))}.tar",
            "nsamples": int(e["samples"]),
            "filesize": int(e["tar_bytes"]),
            "md5sum": e.get("tar_md5"),
            "sha256": e["tar_sha256"],
        }
        for e in manifest["shards"]
        if e.get("complete") and "tar_sha256" in e
    ]
    return {"__kind__": WIDS_KIND, "wids_version": 1, "name": name, "shardlist": shardlist}


def _write(layout: CorpusLayout, manifest: dict) -> None:
    done = [e for e in manifest["shards"] if e.get("complete")]
    manifest["complete_shards"] = len(done)
    manifest["complete_images"] = sum(int(e.get("samples", 0)) for e in done)
    name = str(manifest.get("spec", {}).get("name") or PurePosixPath(str(layout.root)).name)
    layout.storage.write_atomic(layout.manifest, _dump(manifest))
    layout.storage.write_atomic(layout.shardindex, _dump(_shardindex(manifest, name)))


def write_manifest(
    layout: CorpusLayout,
    *,
    spec: dict,
    spec_hash: str,
    package_version: str,
    tasks: Sequence[ShardTask],
    previous: dict | None = None,
) -> dict:
    """Write manifest.json (resolved spec, hash, version, shard table with completion) and shardindex.json.

    Completion comes from the stats files. A resume reuses what an existing manifest already mirrors
    for the same shards (size and digests of complete shards) and reads only the stats it lacks, so
    preparing a 40,000-shard resume does not re-read 40,000 stats files (``previous``: that manifest,
    when the caller has already read it).
    """
    layout = as_layout(layout)
    ids = [t.shard_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("tasks have duplicate shard ids")
    shards = [{**{f: getattr(t, f) for f in _TASK_FIELDS}, "complete": False}
              for t in sorted(tasks, key=lambda t: t.shard_id)]
    known = _mirrored_stats(layout, previous)
    for entry in shards:
        previous = known.get(int(entry["shard_id"]))
        if previous is not None and all(previous.get(k) == entry[k] for k in _TASK_FIELDS):
            _mark(entry, previous)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "spec": spec,
        "spec_hash": spec_hash,
        "package_version": package_version,
        "num_shards": len(shards),
        "num_images": sum(int(t.count) for t in tasks),
        "shards": shards,
    }
    _sync(layout, manifest, reread=set())
    _write(layout, manifest)
    return manifest


def _mirrored_stats(layout: CorpusLayout, manifest: dict | None) -> dict[int, dict]:
    """Entries an existing manifest marks complete with their stats fields (none when unreadable)."""
    if manifest is None:
        try:
            manifest = read_manifest(layout)
        except CorpusError:
            return {}
    return {int(e["shard_id"]): e for e in manifest["shards"] if e.get("complete") and "tar_sha256" in e}


def read_manifest(layout: CorpusLayout | str | Path) -> dict:
    """The parsed manifest.json; CorpusError when the folder is not an smi-synth corpus."""
    layout = as_layout(layout)
    root, storage = layout.root, layout.storage
    if not storage.exists():
        raise CorpusError(f"{root} does not exist")
    if not storage.is_dir():
        raise CorpusError(f"{root} is not a directory")
    if not storage.is_file(layout.manifest):
        raise CorpusError(f"{root} is not an smi-synth corpus: no manifest.json")
    try:
        manifest = json.loads(storage.read_text(layout.manifest))
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{root / layout.manifest}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CorpusError(f"{root} is not an smi-synth corpus: manifest.json has no format {MANIFEST_FORMAT!r}")
    if int(manifest.get("format_version", 0)) > MANIFEST_VERSION:
        raise CorpusError(f"{root / layout.manifest}: format_version {manifest['format_version']} is newer than supported")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(e, dict) and "shard_id" in e for e in shards):
        raise CorpusError(f"{root / layout.manifest}: missing or malformed shard table")
    return manifest


def refresh_index(
    layout: CorpusLayout | str | Path, *, shard_ids: Iterable[int] | None = None, full: bool = False
) -> dict:
    """Re-sync manifest.json's shard table and shardindex.json with the stats files; return the manifest.

    Cheap by default: one listing of stats/, and only stats of shards that became complete or are named
    in ``shard_ids`` (e.g. the one just written) are read. ``full=True`` re-reads every stats file.
    """
    layout = as_layout(layout)
    manifest = read_manifest(layout)
    _sync(layout, manifest, reread=None if full else {int(s) for s in (shard_ids or ())})
    _write(layout, manifest)
    return manifest


def complete_shard_ids(layout: CorpusLayout | str | Path, manifest: dict | None = None) -> list[int]:
    """Shard ids of the manifest whose stats file exists (the completion marker), sorted."""
    layout = as_layout(layout)
    manifest = read_manifest(layout) if manifest is None else manifest
    present = stats_present(layout)
    return sorted(int(e["shard_id"]) for e in manifest["shards"] if f"{shard_name(int(e['shard_id']))}.json" in present)


class IndexWriter:
    """The run driver's manifest in memory: shards are marked complete from the stats their workers
    return (no re-read of stats/), and manifest.json + shardindex.json are rewritten at most every
    ``flush_every_s`` seconds and by :meth:`flush`. Only the driver writes the index."""

    def __init__(self, layout: CorpusLayout, flush_every_s: float = 10.0) -> None:
        self.layout, self.flush_every_s = layout, flush_every_s
        self.manifest = read_manifest(layout)
        self._entries = {int(e["shard_id"]): e for e in self.manifest["shards"]}
        self._dirty, self._last = False, time.monotonic()

    def mark_complete(self, shard_id: int, stats: dict) -> None:
        _mark(self._entries[int(shard_id)], stats)
        self._dirty = True
        if time.monotonic() - self._last >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._dirty:
            _write(self.layout, self.manifest)
            self._dirty = False
        self._last = time.monotonic()
