"""The project's teacher checkpoint format: weights as safetensors, the timm config in its metadata.

:func:`save_checkpoint` writes it; :mod:`pipeline.teachers.loading` reads it (and timm Hub-style
``config.json`` sidecars and plain state dicts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.corpus.storage import write_file_atomic
from pipeline.errors import UserError

META_KEY = "smi_synth.teacher"  # safetensors metadata key of save_checkpoint's JSON
CHECKPOINT_FORMAT = 1


def pair(x: Any) -> tuple[int, int]:
    """``7`` -> ``(7, 7)``; a pair stays a pair of ints."""
    if isinstance(x, int):
        return (x, x)
    a, b = tuple(x)
    return (int(a), int(b))


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    model_kwargs: dict[str, Any],
    class_names: Sequence[str] | None,
    license: str | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Path:
    """Write ``model``'s weights as a teacher ``.safetensors`` file that :func:`load_teacher` reads.

    ``arch`` and ``model_kwargs`` must rebuild the model with ``timm.create_model(arch, **model_kwargs)``
    (JSON-serialisable). Mean/std default to ``model.pretrained_cfg``'s. Written atomically.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: a teacher checkpoint must be a .safetensors file")
    kwargs = dict(model_kwargs)
    num_classes = int(kwargs.get("num_classes", getattr(model, "num_classes", 0)))
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{path}: {len(class_names)} class names for {num_classes} classes")
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    pretrained_cfg = {
        "input_size": list(cfg.get("input_size") or (3, *pair(model.patch_embed.img_size))),
        "mean": list(mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": list(std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))),
        "license": license,
    }
    config = {
        "format": CHECKPOINT_FORMAT,
        "architecture": arch,
        "num_classes": num_classes,
        "model_args": kwargs,
        "label_names": list(class_names) if class_names is not None else None,
        "pretrained_cfg": pretrained_cfg,
    }
    try:
        # One key only: safetensors writes its metadata map in hash order, so a second key would
        # make the file's bytes (and sha256) differ from process to process.
        metadata = {META_KEY: json.dumps(config, sort_keys=True)}
    except TypeError as exc:
        raise UserError(f"{path}: model_kwargs must be JSON-serialisable ({exc})") from None
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return write_file_atomic(path, lambda p: save_file(tensors, str(p), metadata=metadata))
