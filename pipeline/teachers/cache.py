"""The on-disk cache of the project's own teachers: one folder per teacher, trained once.

A folder holds ``model.safetensors`` (a :func:`pipeline.teachers.checkpoint.save_checkpoint` file, which
:func:`pipeline.teachers.loading.load_teacher` reads) and ``meta.json`` (config, held-out top-1,
training time, sha256 of the weights). It is written under a temporary name and renamed into place;
:func:`build_once` holds a file lock around the build, so concurrent builders train once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from pipeline.checksums import file_sha256
from pipeline.corpus.storage import write_file_atomic
from pipeline.teachers.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

T = TypeVar("T")


def cache_root() -> Path:
    """``$SMI_SYNTH_CACHE`` or ``~/.cache/smi-synth``."""
    env = os.environ.get("SMI_SYNTH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "smi-synth"


def read_teacher_folder(
    folder: Path, *, expect: dict[str, Any], create_model: Callable[[], nn.Module]
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached teacher (frozen, on the CPU), or None when absent, built with other ``expect``ed meta
    values (version, recipe), damaged (sha256 mismatch) or unreadable."""
    from safetensors.torch import load_file

    weights, meta_path = folder / WEIGHTS_FILE, folder / META_FILE
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if any(meta.get(k) != v for k, v in expect.items()):
            log.warning("teacher cache %s was built by another recipe; rebuilding", folder)
            return None
        if meta.get("sha256") != file_sha256(weights):
            log.warning("teacher cache %s is damaged (sha256 mismatch); rebuilding", folder)
            return None
        model = create_model()
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("teacher cache %s is unreadable (%s); rebuilding", folder, exc)
        return None
    return model.eval().requires_grad_(False), meta


def write_teacher_folder(
    folder: Path,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    arch: str,
    class_names: Sequence[str],
    license: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """Write weights + meta (``meta["config"]["model"]`` are the timm kwargs) into a temporary sibling
    folder, fsync, then rename it to ``folder``; returns the meta exactly as a later load reads it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        weights = save_checkpoint(
            model, tmp / WEIGHTS_FILE, arch=arch, model_kwargs=meta["config"]["model"],
            class_names=list(class_names), license=license, mean=mean, std=std,
        )
        meta = {**meta, "sha256": file_sha256(weights)}
        write_file_atomic(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode("utf-8"))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(json.dumps(meta))


def build_once(root: Path, lock_name: str, load: Callable[[], T | None], build: Callable[[], T]) -> T:
    """``load()`` if it finds the cache, else ``build()`` under the file lock ``root/.<lock_name>.lock``
    (a concurrent builder holds it until its folder is in place, and the loser then loads that)."""
    root.mkdir(parents=True, exist_ok=True)
    cached = load()
    if cached is not None:
        return cached
    with open(root / f".{lock_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = load()
        if cached is not None:
            return cached
        return build()
