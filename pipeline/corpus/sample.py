"""One sample of a corpus: what is stored about it, its checks, and its members' encoding and decoding.

A sample is ``KEY.png`` (or ``.webp``, lossless), ``KEY.cls`` (ASCII label), ``KEY.json`` (metadata, no
timings: tar bytes must not depend on the machine) and ``KEY.logits.npy`` (float16 teacher logits).
Nothing is pickled: images via Pillow, soft labels via ``numpy.lib.format`` with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline.checks import is_finite_number, is_int
from pipeline.corpus.layout import parse_sample_key, shard_name

IMAGE_FORMATS = ("png", "webp")
SOFT_LABEL_MEMBER = "logits.npy"
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~7x faster than 6 on smooth images for ~15% more bytes


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


# ---------------------------------------------------------------------------------------------- validation


def _check_sample(s: ShardSample, shard_id: int, num_classes: int) -> None:  # noqa: C901 - a flat checklist
    key = s.key
    if not isinstance(key, str) or not key:
        raise ValueError(f"sample key must be a non-empty string, got {key!r}")
    if "." in key:
        raise ValueError(f"sample {key!r}: key must not contain dots")
    label_in_key, _ = parse_sample_key(key)
    if not is_int(s.label) or not 0 <= s.label < num_classes:
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
        if not is_finite_number(getattr(s, name)):
            raise ValueError(f"sample {key!r}: {name} must be a finite number, got {getattr(s, name)!r}")
    if not 0.0 <= float(s.confidence) <= 1.0:
        raise ValueError(f"sample {key!r}: confidence {s.confidence} not in [0, 1]")
    if float(s.generation_seconds) < 0:
        raise ValueError(f"sample {key!r}: generation_seconds must be >= 0")
    grid = tuple(s.patch_grid)
    if len(grid) != 2 or not all(is_int(g) and g > 0 for g in grid):
        raise ValueError(f"sample {key!r}: patch_grid must be two positive ints, got {s.patch_grid!r}")
    n = int(grid[0]) * int(grid[1])
    kept = list(s.kept_patches)
    if not all(is_int(k) and 0 <= k < n for k in kept) or len(set(kept)) != len(kept):
        raise ValueError(f"sample {key!r}: kept_patches must be distinct ints in [0, {n})")
    for name in ("class_name", "teacher", "method"):
        if not isinstance(getattr(s, name), str):
            raise ValueError(f"sample {key!r}: {name} must be a string")
    if not is_int(s.seed):
        raise ValueError(f"sample {key!r}: seed must be an int, got {s.seed!r}")


def validate_samples(samples: Sequence[ShardSample], *, shard_id: int, num_classes: int, image_format: str) -> None:
    """Raise ValueError (naming the field and sample key) for anything :func:`write_shard` would refuse."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not is_int(num_classes) or num_classes < 1:
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


# ---------------------------------------------------------------------------------------------- decoding


def decode_image(data: bytes) -> np.ndarray:
    """PNG/WebP bytes -> (H, W, 3) uint8.

    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is enforced as an error, never a
    warning: an image over it raises ``ValueError`` before any pixel is decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValueError(f"decompression bomb refused ({exc})") from None
    with img:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and img.width * img.height > limit:  # also when a caller relaxed Pillow's check
            raise ValueError(f"image of {img.width}x{img.height} pixels is over the {limit}-pixel limit")
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.array(img)  # writable (torch.from_numpy warns on read-only arrays)


def decode_soft_label(data: bytes) -> np.ndarray:
    """``.logits.npy`` bytes -> (num_classes,) float32, refusing pickled arrays and a header that claims more
    elements than the bytes hold (which would allocate before reading)."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise ValueError("a .npy of Python objects is refused (it would need unpickling)")
    if math.prod(shape) * dtype.itemsize > len(data) - f.tell():
        raise ValueError(f".npy header claims shape {shape} of {dtype}, more than its {len(data)} bytes")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False).astype(np.float32)


def image_member(sample: dict[str, Any]) -> str:
    """The extension of a sample's image member."""
    for ext in IMAGE_FORMATS:
        if ext in sample:
            return ext
    raise ValueError(f"sample {sample.get('__key__')!r} has no image member ({', '.join(IMAGE_FORMATS)})")


def kept_mask_from_meta(meta: dict[str, Any]) -> np.ndarray:
    """(Gh, Gw) bool mask of kept patches from a sample's ``.json`` member."""
    gh, gw = (int(g) for g in meta["patch_grid"])
    mask = np.zeros(gh * gw, dtype=bool)
    mask[np.asarray(meta["kept_patches"], dtype=np.int64)] = True
    return mask.reshape(gh, gw)
