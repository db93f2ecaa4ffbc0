"""``smi-synth verify OUT [--repair] [--json]``: every complete shard against its stats and the manifest.

A shard with stats is complete and is checked (size, sha256, member sets, keys, counts, parquet rows);
one that fails is *bad*. A shard without stats is *pending* (not bad). ``--repair`` deletes the bad
shards' stats (completion marker) and files, stray temporaries and pending leftovers, then refreshes
the index so the next run regenerates them.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checks import is_int
from pipeline.console import emit_json, progress
from pipeline.corpus.index import read_manifest, read_stats, refresh_index
from pipeline.corpus.layout import (
    KEY_PATTERN,
    SHARD_FILE_PATTERN,
    CorpusLayout,
    as_layout,
    shard_name,
)
from pipeline.corpus.lease import CorpusLease
from pipeline.corpus.storage import is_temporary
from pipeline.corpus.tar_io import ReadLimits, read_tar
from pipeline.corpus.writer import (
    find_stray_temporaries,
    remove_shard,
    remove_stray_temporaries,
)
from pipeline.errors import CorpusError

DEFAULT_PARQUET_BYTES = 256 << 20  # a shard's parquet whose stats do not record its size (one row per sample)


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_corpus`. ``ok`` means nothing to repair (pending shards are fine)."""

    ok: bool
    checked_shards: int
    bad_shards: list[int]
    problems: list[str]
    stray_temporaries: list[str]
    pending_shards: list[int] = field(default_factory=list)
    unexpected_files: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_shards": self.checked_shards,
            "bad_shards": self.bad_shards,
            "pending_shards": self.pending_shards,
            "problems": self.problems,
            "stray_temporaries": self.stray_temporaries,
            "unexpected_files": self.unexpected_files,
            "repaired": self.repaired,
        }


def _check_members(layout: CorpusLayout, name: str, stats: dict, entry: dict) -> tuple[list[str], list[str]]:
    """Problems of the tar's structure, and the tar's keys in order."""
    problems: list[str] = []
    order: list[str] = []
    groups: dict[str, list[str]] = {}
    limits = ReadLimits.for_shard(stats.get("tar_bytes"))
    try:
        for key, members in read_tar(layout.storage, name, problems, limits=limits):
            if key in groups:
                problems.append(f"duplicate key {key!r} (members not contiguous)")
                groups[key] += list(members)
                continue
            groups[key] = list(members)
            order.append(key)
    except CorpusError as exc:  # over a cap, truncated or malformed: the message names shard and member
        return [str(exc)], order
    except OSError as exc:
        return [f"unreadable tar ({type(exc).__name__}: {exc})"], order
    expected = sorted(stats.get("members", []))
    label = int(entry["label"])
    for key in order:
        if sorted(set(groups[key])) != expected:
            problems.append(f"sample {key!r} has members {sorted(groups[key])}, expected {expected}")
        m = KEY_PATTERN.match(key)
        if m is None:
            problems.append(f"bad key format {key!r}")
        elif int(m.group(1)) != label:
            problems.append(f"key {key!r} is not of the shard's class {label}")
    return problems, order


def _check_parquet(layout: CorpusLayout, name: str, stats: dict, keys: list[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = layout.storage
    if not storage.is_file(name):
        return ["missing parquet"]
    problems = []
    cap = stats.get("parquet_bytes") if is_int(stats.get("parquet_bytes")) else DEFAULT_PARQUET_BYTES
    size = storage.size(name)
    if size > cap:  # someone else's corpus: not read into memory past what its stats promise
        return [f"{name} is {size} bytes, over its {cap}-byte cap (stats or the default)"]
    data = storage.read_bytes(name)
    if "parquet_sha256" in stats and hashlib.sha256(data).hexdigest() != stats["parquet_sha256"]:
        problems.append("parquet sha256 differs from stats (altered)")
    try:
        # ParquetFile reads on this thread; read_table's dataset scan could drop the last reference to the
        # buffer on an Arrow I/O thread, which then aborted the process at interpreter exit
        with pq.ParquetFile(pa.BufferReader(data)) as parquet:
            rows = parquet.read(columns=["key"], use_threads=False).column("key").to_pylist()
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a problem of this shard
        return problems + [f"unreadable parquet ({type(exc).__name__})"]
    if rows != keys:
        problems.append(f"parquet rows ({len(rows)}) do not match tar keys ({len(keys)})")
    return problems


def check_shard(layout: CorpusLayout, entry: dict) -> list[str]:
    """Problems of one complete shard (empty list: good)."""
    sid = int(entry["shard_id"])
    try:
        stats = read_stats(layout, sid)
    except (OSError, ValueError) as exc:
        return [f"unreadable stats ({exc})"]
    tar, storage = layout.tar(sid), layout.storage
    if not storage.is_file(tar):
        return ["missing tar"]
    problems = []
    size = storage.size(tar)
    if size != stats.get("tar_bytes"):
        problems.append(f"tar is {size} bytes, stats say {stats.get('tar_bytes')} (truncated or altered)")
    elif storage.sha256(tar) != stats.get("tar_sha256"):
        problems.append("tar sha256 differs from stats (altered)")
    member_problems, keys = _check_members(layout, tar, stats, entry)
    problems += member_problems
    if len(set(keys)) != len(keys):
        problems.append("duplicate keys")
    if len(keys) != stats.get("samples"):
        problems.append(f"tar has {len(keys)} samples, stats say {stats.get('samples')}")
    if stats.get("samples") != entry.get("count"):
        problems.append(f"stats say {stats.get('samples')} samples, manifest task has {entry.get('count')}")
    if "keys" in stats and list(stats["keys"]) != keys:
        problems.append("tar keys differ from the keys in stats")
    if not member_problems:
        problems += _check_parquet(layout, layout.parquet(sid), stats, keys)
    return problems


def _unexpected(layout: CorpusLayout, known: set[int]) -> list[str]:
    """Files that do not belong: anything in data/ but planned shard tars, stats of unknown shards."""
    found = []
    for folder, ext in ((layout.data_dir, "tar"), (layout.stats_dir, "json"), (layout.metadata_dir, "parquet")):
        for name in layout.storage.listdir(folder):
            if is_temporary(name):
                continue
            m = SHARD_FILE_PATTERN.match(name)
            if m is None:
                if folder == layout.data_dir:  # other folders may hold extra files; data/ must hold only shards
                    found.append(f"{folder}/{name}")
            elif m.group(2) != ext or int(m.group(1)) not in known:
                found.append(f"{folder}/{name}")
    return found


def verify_corpus(
    root: CorpusLayout | str | Path, *, repair: bool = False, on_shard: Callable[[int], None] | None = None
) -> VerifyReport:
    """Check every shard of the manifest; with ``repair`` unmark and delete bad shards (see module doc)."""
    layout = as_layout(root)
    if repair:  # one writer per corpus: refuse before changing anything while a run holds the lease
        read_manifest(layout)  # not a corpus: CorpusError, and no lease written into the folder
        with CorpusLease.acquire(layout, "smi-synth verify --repair"):
            report = verify_corpus(layout, on_shard=on_shard)
            report.repaired = _repair(layout, report.bad_shards, report.pending_shards)
        return report
    manifest = read_manifest(layout)
    entries = manifest["shards"]
    bad, pending, problems = [], [], []
    checked = 0
    for entry in entries:
        sid = int(entry["shard_id"])
        if not layout.storage.exists(layout.stats(sid)):
            pending.append(sid)
        else:
            checked += 1
            found = check_shard(layout, entry)
            if found:
                bad.append(sid)
                problems += [f"shard {sid} ({shard_name(sid)}): {p}" for p in found]
        if on_shard is not None:
            on_shard(sid)
    strays = find_stray_temporaries(layout)
    problems += [f"stray temporary {s}" for s in strays]
    unexpected = _unexpected(layout, {int(e["shard_id"]) for e in entries})
    problems += [f"unexpected file {u} (not a planned shard; remove it by hand)" for u in unexpected]
    report = VerifyReport(
        ok=not bad and not strays and not unexpected,
        checked_shards=checked,
        bad_shards=bad,
        problems=problems,
        stray_temporaries=strays,
        pending_shards=pending,
        unexpected_files=unexpected,
    )
    return report


def _repair(layout: CorpusLayout, bad: list[int], pending: list[int]) -> list[str]:
    """Unmark and delete the bad shards, pending leftovers and stray temporaries; refresh the index."""
    removed: list[str] = []
    for sid in bad:
        removed += remove_shard(layout, sid)
    for sid in pending:  # leftovers of interrupted writes (a tar without stats would still be loaded by `datasets`)
        removed += remove_shard(layout, sid)
    removed += remove_stray_temporaries(layout)
    refresh_index(layout, full=True)
    return removed


def _summary(report: VerifyReport, root: str) -> str:
    lines = [
        f"{root}: checked {report.checked_shards} complete shards, {len(report.bad_shards)} bad, "
        f"{len(report.pending_shards)} pending"
    ]
    lines += [f"  {p}" for p in report.problems[:50]]
    if len(report.problems) > 50:
        lines.append(f"  ... and {len(report.problems) - 50} more")
    if report.repaired:
        lines.append(f"repaired: removed {len(report.repaired)} files; the next run regenerates the bad shards")
    lines.append("OK" if report.ok else "NOT OK")
    return "\n".join(lines)


def cmd_verify(args: Any) -> int:
    """CLI: exit 0 when ok, 1 when something was wrong (also after --repair), 2 when OUT is not a corpus."""
    layout = as_layout(args.out)
    total = len(read_manifest(layout)["shards"])  # CorpusError -> exit 2 before anything else
    bar = progress(total, "verify", unit="shard", disable=not sys.stderr.isatty())
    try:
        report = verify_corpus(layout, repair=bool(args.repair), on_shard=lambda _sid: bar.update(1))
    finally:
        bar.close()
    print(_summary(report, str(args.out)), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(report.to_json())
    return 0 if report.ok else 1
