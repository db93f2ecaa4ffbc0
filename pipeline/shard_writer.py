"""Writing one class shard: reproducible WebDataset tar, parquet metadata, stats marker (written last).

Every file goes to a recognisable temporary name in its final folder (``.train-000001.tar.tmp-<pid>-<hex>``),
is fsynced, renamed with ``os.replace`` and its folder fsynced. The stats JSON is committed last: its
presence marks the shard complete. On any exception the shard is left without stats and without
partial files. Tar bytes depend only on the samples: sorted members, fixed mtime/uid/gid/mode, USTAR.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.layout import CorpusLayout, sample_key, shard_name

if TYPE_CHECKING:
    from pipeline.plan import ShardTask
    from smi_core.result import InversionResult

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "webp")
SOFT_LABEL_MEMBER = "logits.npy"
TAR_MTIME = 0
TAR_MODE = 0o644
TAR_FORMAT = tarfile.USTAR_FORMAT
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~7x faster than 6 on smooth images for ~15% more bytes
STATS_FORMAT_VERSION = 1
KEY_PATTERN = re.compile(r"^c(\d{5,})-i(\d{7,})$")
_TEMP_PATTERN = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)?$")
# Order of the steps of write_shard; each is announced to _checkpoint() first (tests inject faults there).
WRITE_STEPS = ("encode", "write_tar", "write_parquet", "commit_tar", "commit_parquet", "write_stats", "commit_stats")


@dataclass
class ShardSample:
    """One synthetic image and everything stored about it."""

    key: str
    image: np.ndarray  # (H, W, 3) uint8
    label: int
    class_name: str
    seed: int
    shard_id: int
    teacher: str
    method: str
    kept_patches: list[int]  # row-major patch indices still evolving at the end
    patch_grid: tuple[int, int]
    final_loss: float
    confidence: float
    soft_label: np.ndarray  # (num_classes,) float32 teacher logits
    generation_seconds: float


def member_names(image_format: str = "png") -> list[str]:
    """Extensions every sample of a shard carries, sorted (the tar order within a sample)."""
    return sorted([image_format, "cls", "json", SOFT_LABEL_MEMBER])


def parse_sample_key(key: str) -> tuple[int, int]:
    """``c00042-i0000123`` -> ``(42, 123)``; ValueError for anything else."""
    match = KEY_PATTERN.match(key) if isinstance(key, str) else None
    if match is None:
        raise ValueError(f"sample key {key!r} does not look like {sample_key(0, 0)!r}")
    return int(match.group(1)), int(match.group(2))


def is_temporary(name: str) -> bool:
    """Whether a file name is one of this module's temporaries (``.NAME.tmp-PID[-HEX]``)."""
    return bool(_TEMP_PATTERN.match(name))


def temporary_path(final: Path) -> Path:
    """A fresh temporary name next to ``final``, recognisable by :func:`is_temporary`."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


# ---------------------------------------------------------------------------------------------- engine


def samples_from_result(
    result: InversionResult,
    task: ShardTask,
    *,
    offset: int,
    teacher: str,
    method: str,
    seconds_per_image: float,
) -> list[ShardSample]:
    """Turn one engine batch into samples ``task.first_index + offset + i`` of ``task``'s shard."""
    import torch

    images = result.images.detach().to("cpu", torch.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"result.images must be (B, 3, H, W), got {tuple(images.shape)}")
    batch = images.shape[0]
    if offset < 0 or offset + batch > task.count:
        raise ValueError(f"batch of {batch} at offset {offset} does not fit shard {task.shard_id} of {task.count}")
    if torch.isnan(images).any():
        bad = sorted({int(i) for i in torch.nonzero(torch.isnan(images).flatten(1).any(1)).flatten()})
        raise ValueError(f"result.images has NaN pixels in batch items {bad} of shard {task.shard_id}")
    labels = result.labels.detach().cpu().tolist()
    if any(int(lab) != task.label for lab in labels):
        raise ValueError(f"result.labels {labels} do not all equal shard {task.shard_id}'s label {task.label}")
    pixels = (images * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    logits = result.logits.detach().to("cpu", torch.float32).numpy()
    grid = (int(result.grid[0]), int(result.grid[1]))
    samples = []
    for i in range(batch):
        samples.append(
            ShardSample(
                key=sample_key(task.label, task.first_index + offset + i),
                image=pixels[i],
                label=task.label,
                class_name=task.class_name,
                seed=task.seed,
                shard_id=task.shard_id,
                teacher=teacher,
                method=method,
                kept_patches=result.kept_indices(i),
                patch_grid=grid,
                final_loss=float(result.loss[i]),
                confidence=float(result.confidence[i]),
                soft_label=logits[i].copy(),
                generation_seconds=float(seconds_per_image),
            )
        )
    return samples


# ---------------------------------------------------------------------------------------------- validation


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_sample(s: ShardSample, shard_id: int, num_classes: int) -> None:  # noqa: C901 - a flat checklist
    key = s.key
    if not isinstance(key, str) or not key:
        raise ValueError(f"sample key must be a non-empty string, got {key!r}")
    if "." in key:
        raise ValueError(f"sample {key!r}: key must not contain dots")
    label_in_key, _ = parse_sample_key(key)
    if not _is_int(s.label) or not 0 <= s.label < num_classes:
        raise ValueError(f"sample {key!r}: label {s.label!r} not an int in [0, {num_classes})")
    if label_in_key != s.label:
        raise ValueError(f"sample {key!r}: key names class {label_in_key} but label is {s.label}")
    if s.shard_id != shard_id:
        raise ValueError(f"sample {key!r}: shard_id {s.shard_id} does not match shard {shard_id}")
    img = s.image
    if not isinstance(img, np.ndarray):
        raise ValueError(f"sample {key!r}: image must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"sample {key!r}: image dtype must be uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"sample {key!r}: image shape must be (H, W, 3), got {img.shape}")
    soft = s.soft_label
    if not isinstance(soft, np.ndarray) or soft.shape != (num_classes,):
        shape = getattr(soft, "shape", type(soft).__name__)
        raise ValueError(f"sample {key!r}: soft_label shape must be ({num_classes},), got {shape}")
    if not np.isfinite(soft).all():
        raise ValueError(f"sample {key!r}: soft_label has NaN/inf")
    if not np.isfinite(soft.astype(np.float16)).all():
        raise ValueError(f"sample {key!r}: soft_label overflows float16 (|logit| > 65504)")
    for name in ("final_loss", "confidence", "generation_seconds"):
        if not _finite(getattr(s, name)):
            raise ValueError(f"sample {key!r}: {name} must be a finite number, got {getattr(s, name)!r}")
    if not 0.0 <= float(s.confidence) <= 1.0:
        raise ValueError(f"sample {key!r}: confidence {s.confidence} not in [0, 1]")
    if float(s.generation_seconds) < 0:
        raise ValueError(f"sample {key!r}: generation_seconds must be >= 0")
    grid = tuple(s.patch_grid)
    if len(grid) != 2 or not all(_is_int(g) and g > 0 for g in grid):
        raise ValueError(f"sample {key!r}: patch_grid must be two positive ints, got {s.patch_grid!r}")
    n = int(grid[0]) * int(grid[1])
    kept = list(s.kept_patches)
    if not all(_is_int(k) and 0 <= k < n for k in kept) or len(set(kept)) != len(kept):
        raise ValueError(f"sample {key!r}: kept_patches must be distinct ints in [0, {n})")
    for name in ("class_name", "teacher", "method"):
        if not isinstance(getattr(s, name), str):
            raise ValueError(f"sample {key!r}: {name} must be a string")
    if not _is_int(s.seed):
        raise ValueError(f"sample {key!r}: seed must be an int, got {s.seed!r}")


def validate_samples(samples: Sequence[ShardSample], *, shard_id: int, num_classes: int, image_format: str) -> None:
    """Raise ValueError (naming the field and sample key) for anything :func:`write_shard` would refuse."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    shard_name(shard_id)  # validates the id
    if len(samples) == 0:
        raise ValueError(f"shard {shard_id}: no samples to write")
    seen: set[str] = set()
    for s in samples:
        _check_sample(s, shard_id, num_classes)
        if s.key in seen:
            raise ValueError(f"sample {s.key!r}: duplicate key in shard {shard_id}")
        seen.add(s.key)


# ---------------------------------------------------------------------------------------------- encoding


def encode_image(image: np.ndarray, image_format: str = "png") -> bytes:
    """Deterministic lossless encoding (no metadata, no timestamps)."""
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if image_format == "png":
        pil.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    elif image_format == "webp":
        pil.save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    else:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    return buf.getvalue()


def sample_metadata(s: ShardSample) -> dict[str, Any]:
    """The ``.json`` member of a sample (no timings: tar bytes must not depend on the machine)."""
    return {
        "label": int(s.label),
        "class_name": s.class_name,
        "seed": int(s.seed),
        "shard": int(s.shard_id),
        "teacher": s.teacher,
        "method": s.method,
        "kept_patches": [int(k) for k in s.kept_patches],
        "patch_grid": [int(g) for g in s.patch_grid],
        "final_loss": float(s.final_loss),
        "confidence": float(s.confidence),
    }


def encode_sample(s: ShardSample, image_format: str = "png") -> dict[str, bytes]:
    """Member extension -> bytes for one sample."""
    npy = io.BytesIO()
    np.save(npy, np.ascontiguousarray(s.soft_label, dtype=np.float16), allow_pickle=False)
    meta = json.dumps(sample_metadata(s), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return {
        image_format: encode_image(s.image, image_format),
        "cls": str(int(s.label)).encode("ascii"),
        "json": meta.encode("ascii"),
        SOFT_LABEL_MEMBER: npy.getvalue(),
    }


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
            ("generation_seconds", pa.float64()),
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
        "generation_seconds": [float(s.generation_seconds) for s in samples],
    }
    table = pa.table(columns, schema=schema)
    buf = io.BytesIO()
    pq.write_table(
        table, buf, compression="zstd", version="2.6", data_page_version="1.0", use_dictionary=True,
        write_statistics=True, row_group_size=max(1, len(samples)),
    )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- files


def _checkpoint(step: str) -> None:
    """Called before each step of :data:`WRITE_STEPS`; a no-op (tests replace it to inject failures)."""


_FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES}


def fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


class _HashingWriter:
    """File-like sink counting and hashing what the tar stream writes."""

    def __init__(self, f: Any) -> None:
        self.f, self.size = f, 0
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        return len(data)


def _write_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    with open(path, "wb") as f:
        sink = _HashingWriter(f)
        with tarfile.open(fileobj=sink, mode="w|", format=TAR_FORMAT) as tar:  # type: ignore[call-overload]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.type = tarfile.REGTYPE
                tar.addfile(info, io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    return {"tar_bytes": sink.size, "tar_sha256": sink.sha256.hexdigest(), "tar_md5": sink.md5.hexdigest()}


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_file_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (no rename)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def commit(tmp: Path, final: Path) -> None:
    """Atomically move a written temporary onto its final name and make the rename durable."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temporary + fsync + rename + directory fsync; the temporary is removed on failure."""
    tmp = temporary_path(path)
    try:
        write_file_durably(tmp, data)
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


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
) -> dict:
    """Write one shard's tar, parquet and (last) stats atomically; return the stats dict.

    Validates and encodes everything first (ValueError, nothing written). Existing files of the shard
    are then removed (stats first). On any exception the shard has no stats and no tar/parquet.
    """
    validate_samples(samples, shard_id=shard_id, num_classes=num_classes, image_format=image_format)
    extra = dict(extra_stats or {})
    clash = sorted(_CORE_STATS & extra.keys())
    if clash:
        raise ValueError(f"extra_stats must not override {clash}")
    ordered = sorted(samples, key=lambda s: s.key)

    t0 = time.perf_counter()
    _checkpoint("encode")
    encoded = [encode_sample(s, image_format) for s in ordered]
    members = [(f"{s.key}.{ext}", enc[ext]) for s, enc in zip(ordered, encoded) for ext in sorted(enc)]
    digests = [hashlib.sha256(enc[image_format]).hexdigest() for enc in encoded]
    t_encode = time.perf_counter() - t0

    for d in (layout.data_dir, layout.metadata_dir, layout.stats_dir):
        d.mkdir(parents=True, exist_ok=True)
    final_tar, final_pq, final_stats = layout.tar(shard_id), layout.parquet(shard_id), layout.stats(shard_id)
    if _unlink(final_stats):  # unmark first: stats must never describe files being replaced
        fsync_dir(final_stats.parent)
        log.info("shard %d: overwriting a complete shard", shard_id)
    for old in (final_tar, final_pq):  # an old file would stay visible (to `datasets`) if this write fails
        _unlink(old)

    temps: list[Path] = []
    committed: list[Path] = []
    try:
        _checkpoint("write_tar")
        t1 = time.perf_counter()
        tar_tmp = temporary_path(final_tar)
        temps.append(tar_tmp)
        tar_info = _write_tar(tar_tmp, members)
        t_tar = time.perf_counter() - t1

        _checkpoint("write_parquet")
        t2 = time.perf_counter()
        pq_data = _parquet_bytes(ordered, digests)
        pq_tmp = temporary_path(final_pq)
        temps.append(pq_tmp)
        write_file_durably(pq_tmp, pq_data)
        t_parquet = time.perf_counter() - t2

        _checkpoint("commit_tar")
        committed.append(final_tar)  # before the rename: a failing directory fsync must undo it too
        commit(tar_tmp, final_tar)
        _checkpoint("commit_parquet")
        committed.append(final_pq)
        commit(pq_tmp, final_pq)

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
            "tar": final_tar.name,
            **tar_info,
            "parquet": final_pq.name,
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
        stats_tmp = temporary_path(final_stats)
        temps.append(stats_tmp)
        write_file_durably(stats_tmp, (json.dumps(stats, sort_keys=True, indent=1) + "\n").encode("utf-8"))
        _checkpoint("commit_stats")
        committed.append(final_stats)
        commit(stats_tmp, final_stats)
    except BaseException:
        for p in temps:
            _unlink(p)
        for p in reversed(committed):  # stats first
            _unlink(p)
        for d in (layout.stats_dir, layout.metadata_dir, layout.data_dir):
            try:
                fsync_dir(d)
            except OSError:
                pass  # keep the original exception
        log.warning("shard %d: write failed; left incomplete", shard_id)
        raise
    log.debug("shard %d: %d samples, %d tar bytes", shard_id, len(ordered), tar_info["tar_bytes"])
    return stats


# ---------------------------------------------------------------------------------------------- cleanup


def _shard_temporaries(layout: CorpusLayout, shard_id: int) -> list[Path]:
    prefix = f".{shard_name(shard_id)}."
    found = []
    for d in (layout.data_dir, layout.metadata_dir, layout.stats_dir):
        if d.is_dir():
            found += [p for p in d.iterdir() if p.name.startswith(prefix) and is_temporary(p.name)]
    return sorted(found)


def remove_shard(layout: CorpusLayout, shard_id: int) -> list[Path]:
    """Unmark a shard (stats first) and delete its tar, parquet and temporaries; return what was removed."""
    removed = [p for p in (layout.stats(shard_id),) if _unlink(p)]
    if removed:
        fsync_dir(layout.stats_dir)
    for p in (layout.tar(shard_id), layout.parquet(shard_id), *_shard_temporaries(layout, shard_id)):
        if _unlink(p):
            removed.append(p)
    return removed


def remove_incomplete(layout: CorpusLayout, shard_id: int) -> list[Path]:
    """For resume: a shard without stats is incomplete; delete its files and temporaries. Complete: no-op."""
    if layout.stats(shard_id).exists():
        return []
    return remove_shard(layout, shard_id)


def find_stray_temporaries(layout: CorpusLayout) -> list[Path]:
    """Temporaries left by interrupted writes (corpus root, data/, metadata/, stats/)."""
    found = []
    for d in (layout.root, layout.data_dir, layout.metadata_dir, layout.stats_dir):
        if d.is_dir():
            found += [p for p in d.iterdir() if is_temporary(p.name) and p.is_file()]
    return sorted(found)


def remove_stray_temporaries(layout: CorpusLayout) -> list[Path]:
    """Delete stray temporaries; call only while no writer is active on this corpus."""
    removed = [p for p in find_stray_temporaries(layout) if _unlink(p)]
    if removed:
        log.info("removed %d stray temporaries", len(removed))
    return removed
