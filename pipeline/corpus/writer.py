"""Writing one class shard: reproducible WebDataset tar, parquet metadata, stats marker (written last).

Every file goes through the corpus's storage seam as a staged temporary in its final folder, is
committed (renamed) only once both tar and parquet are written, and the stats JSON is committed last:
its presence marks the shard complete. On any exception the shard is left without stats and without
partial files. Tar bytes depend only on the samples (see :mod:`pipeline.corpus.tar_io`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence

from pipeline.corpus.layout import CorpusLayout, shard_name
from pipeline.corpus.sample import (
    ShardSample,
    encode_sample,
    member_names,
    validate_samples,
)
from pipeline.corpus.storage import StagedFile, is_temporary
from pipeline.corpus.tar_io import write_tar

log = logging.getLogger(__name__)

STATS_FORMAT_VERSION = 1
# Order of the steps of write_shard; each is announced to _checkpoint() first (tests inject faults there).
WRITE_STEPS = ("encode", "write_tar", "write_parquet", "commit_tar", "commit_parquet", "write_stats", "commit_stats")


class StaleAttempt(RuntimeError):
    """A newer attempt, or another writer, owns this shard; this one must not touch its files."""


def _owns(guard: Callable[[], None] | None) -> bool:
    if guard is None:
        return True
    try:
        guard()
        return True
    except StaleAttempt:
        return False


def _checkpoint(step: str) -> None:
    """Called before each step of :data:`WRITE_STEPS`; a no-op (tests replace it to inject failures)."""


def warm_up() -> None:
    """Pay pyarrow's one-time costs (import, zstd codec set-up: ~1 s) now, not inside a shard's write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [0]}), io.BytesIO(), compression="zstd", version="2.6")


def _parquet_bytes(samples: Sequence[ShardSample], image_digests: Sequence[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("key", pa.string()),
            ("label", pa.int64()),
            ("class_name", pa.string()),
            ("seed", pa.int64()),
            ("shard", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("image_sha256", pa.string()),
            ("kept_patches", pa.int32()),
            ("confidence", pa.float64()),
            ("final_loss", pa.float64()),
        ]
    )
    columns = {
        "key": [s.key for s in samples],
        "label": [int(s.label) for s in samples],
        "class_name": [s.class_name for s in samples],
        "seed": [int(s.seed) for s in samples],
        "shard": [int(s.shard_id) for s in samples],
        "width": [int(s.image.shape[1]) for s in samples],
        "height": [int(s.image.shape[0]) for s in samples],
        "image_sha256": list(image_digests),
        "kept_patches": [len(s.kept_patches) for s in samples],
        "confidence": [float(s.confidence) for s in samples],
        "final_loss": [float(s.final_loss) for s in samples],
    }
    table = pa.table(columns, schema=schema)
    buf = io.BytesIO()
    pq.write_table(
        table, buf, compression="zstd", version="2.6", data_page_version="1.0", use_dictionary=True,
        write_statistics=True, row_group_size=max(1, len(samples)),
    )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- write

_CORE_STATS = {
    "format_version", "shard", "samples", "labels", "keys", "image_format", "members", "image_size",
    "tar", "tar_bytes", "tar_sha256", "tar_md5", "parquet", "parquet_bytes", "parquet_sha256",
    "generation_seconds", "timing",
}


def write_shard(
    layout: CorpusLayout,
    shard_id: int,
    samples: Sequence[ShardSample],
    *,
    num_classes: int,
    image_format: str = "png",
    extra_stats: dict | None = None,
    guard: Callable[[], None] | None = None,
) -> dict:
    """Write one shard's tar, parquet and (last) stats atomically; return the stats dict.

    Validates and encodes everything first (ValueError, nothing written). Existing files of the shard
    are then removed (stats first). On any exception the shard has no stats and no tar/parquet.
    ``guard`` (raising :class:`StaleAttempt`) is asked before the shard's files are first touched, before
    its tar and parquet are committed and before its stats are committed (the run's fencing: a newer
    attempt, or another writer's lease); a stale attempt leaves the shard's files to the one that owns it.
    """
    validate_samples(samples, shard_id=shard_id, num_classes=num_classes, image_format=image_format)
    extra = dict(extra_stats or {})
    clash = sorted(_CORE_STATS & extra.keys())
    if clash:
        raise ValueError(f"extra_stats must not override {clash}")
    ordered = sorted(samples, key=lambda s: s.key)
    storage = layout.storage

    t0 = time.perf_counter()
    _checkpoint("encode")
    encoded = [encode_sample(s, image_format) for s in ordered]
    members = [(f"{s.key}.{ext}", enc[ext]) for s, enc in zip(ordered, encoded) for ext in sorted(enc)]
    digests = [hashlib.sha256(enc[image_format]).hexdigest() for enc in encoded]
    t_encode = time.perf_counter() - t0

    final_tar, final_pq, final_stats = layout.tar(shard_id), layout.parquet(shard_id), layout.stats(shard_id)
    if guard is not None:
        guard()
    if storage.remove(final_stats):  # unmark first: stats must never describe files being replaced
        storage.sync_folder(layout.stats_dir)
        log.info("shard %d: overwriting a complete shard", shard_id)
    for old in (final_tar, final_pq):  # an old file would stay visible (to `datasets`) if this write fails
        storage.remove(old)

    staged: list[StagedFile] = []
    committed: list[str] = []
    try:
        _checkpoint("write_tar")
        t1 = time.perf_counter()
        tar_file = storage.stage(final_tar)
        staged.append(tar_file)
        with tar_file.open() as f:
            tar_info = write_tar(f, members)
        t_tar = time.perf_counter() - t1

        _checkpoint("write_parquet")
        t2 = time.perf_counter()
        pq_data = _parquet_bytes(ordered, digests)
        pq_file = storage.stage(final_pq)
        staged.append(pq_file)
        pq_file.write(pq_data)
        t_parquet = time.perf_counter() - t2

        if guard is not None:  # nothing of this attempt becomes visible unless it still owns the shard
            guard()
        _checkpoint("commit_tar")
        committed.append(final_tar)  # before the rename: a failing folder fsync must undo it too
        tar_file.commit()
        _checkpoint("commit_parquet")
        committed.append(final_pq)
        pq_file.commit()

        first = ordered[0].image
        stats = {
            "format_version": STATS_FORMAT_VERSION,
            "shard": shard_id,
            "samples": len(ordered),
            "labels": sorted({int(s.label) for s in ordered}),
            "keys": [s.key for s in ordered],
            "image_format": image_format,
            "members": member_names(image_format),
            "image_size": [int(first.shape[0]), int(first.shape[1])],
            "tar": final_tar.rpartition("/")[2],
            **tar_info,
            "parquet": final_pq.rpartition("/")[2],
            "parquet_bytes": len(pq_data),
            "parquet_sha256": hashlib.sha256(pq_data).hexdigest(),
            "generation_seconds": float(sum(float(s.generation_seconds) for s in ordered)),
            "timing": {
                "encode_s": t_encode, "tar_s": t_tar, "parquet_s": t_parquet,
                "total_s": time.perf_counter() - t0,
            },
            **extra,
        }
        _checkpoint("write_stats")
        stats_file = storage.stage(final_stats)
        staged.append(stats_file)
        stats_file.write((json.dumps(stats, sort_keys=True, indent=1) + "\n").encode("utf-8"))
        _checkpoint("commit_stats")
        if guard is not None:
            guard()
        committed.append(final_stats)
        stats_file.commit()
    except BaseException:
        for f in staged:
            f.discard()
        if not _owns(guard):  # the owner's files carry the same bytes: leave them
            log.warning("shard %d: a newer attempt owns it; this one stops", shard_id)
            raise
        for name in reversed(committed):  # stats first
            storage.remove(name)
        for folder in (layout.stats_dir, layout.metadata_dir, layout.data_dir):
            try:
                storage.sync_folder(folder)
            except OSError:
                pass  # keep the original exception
        log.warning("shard %d: write failed; left incomplete", shard_id)
        raise
    log.debug("shard %d: %d samples, %d tar bytes", shard_id, len(ordered), tar_info["tar_bytes"])
    return stats


# ---------------------------------------------------------------------------------------------- cleanup

CORPUS_FOLDERS = ("", CorpusLayout.data_dir, CorpusLayout.metadata_dir, CorpusLayout.stats_dir)


def _shard_temporaries(layout: CorpusLayout, shard_id: int) -> list[str]:
    prefix = f".{shard_name(shard_id)}."
    return [n for n in layout.storage.temporaries(CORPUS_FOLDERS[1:]) if n.rpartition("/")[2].startswith(prefix)]


def remove_shard(layout: CorpusLayout, shard_id: int) -> list[str]:
    """Unmark a shard (stats first) and delete its tar, parquet and temporaries; return what was removed."""
    storage = layout.storage
    removed = [n for n in (layout.stats(shard_id),) if storage.remove(n)]
    if removed:
        storage.sync_folder(layout.stats_dir)
    for name in (layout.tar(shard_id), layout.parquet(shard_id), *_shard_temporaries(layout, shard_id)):
        if storage.remove(name):
            removed.append(name)
    return removed


def clean_for_resume(layout: CorpusLayout, pending: Sequence[int]) -> list[str]:
    """Before a resume: delete every stray temporary and what the ``pending`` shards (no stats) left
    behind. Each folder is listed once, whatever the number of shards, so a resume stays linear.
    Call only while no writer is active on this corpus (the run holds the corpus lease)."""
    storage = layout.storage
    present = {folder: storage.listdir(folder) for folder in CORPUS_FOLDERS}
    stats_present = set(present[layout.stats_dir])
    doomed: list[str] = []
    by_stem: dict[str, list[str]] = {}
    for folder, names in present.items():
        for name in names:
            path = f"{folder}/{name}" if folder else name
            if is_temporary(name):
                doomed.append(path)
            elif folder:
                by_stem.setdefault(name.split(".", 1)[0], []).append(path)
    for sid in pending:
        stem = shard_name(sid)
        if f"{stem}.json" not in stats_present:
            doomed += by_stem.get(stem, [])
    removed = [name for name in doomed if storage.remove(name)]
    if removed:
        log.info("resume: removed %d leftovers of interrupted writes", len(removed))
    return removed


def find_stray_temporaries(layout: CorpusLayout) -> list[str]:
    """Temporaries left by interrupted writes (corpus root, data/, metadata/, stats/)."""
    return layout.storage.temporaries(CORPUS_FOLDERS)


def remove_stray_temporaries(layout: CorpusLayout) -> list[str]:
    """Delete stray temporaries; call only while no writer is active on this corpus."""
    removed = [n for n in find_stray_temporaries(layout) if layout.storage.remove(n)]
    if removed:
        log.info("removed %d stray temporaries", len(removed))
    return removed
