"""Files a distillation writes: the trained student (``model.safetensors`` + timm-style ``config.json``) and
training-state checkpoints to resume a long run. Both are safetensors; nothing is pickled.

The student folder is what timm's Hub snapshots look like, so it loads as a teacher spec
(``DIR/model.safetensors``; :mod:`pipeline.teachers.loading` reads the ``config.json`` beside it), or by hand::

    cfg = json.load(open("DIR/config.json"))
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
    model.load_state_dict(safetensors.torch.load_file("DIR/model.safetensors"))

A training state is one safetensors file: model, optimizer, scaler and generator tensors under prefixed
names, and everything else (epoch, losses, scheduler, the run's settings) as JSON in its metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.corpus.storage import write_file_atomic
from pipeline.errors import UserError

STUDENT_WEIGHTS, STUDENT_CONFIG = "model.safetensors", "config.json"
STATE_FILE = "distill-state.safetensors"
STATE_META_KEY = "smi_synth.distill_state"
STATE_FORMAT = 1


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------- student


def student_config(
    *,
    arch: str,
    model_args: dict[str, Any],
    num_classes: int,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """timm's Hub ``config.json`` schema (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg``)."""
    return {
        "architecture": arch,
        "num_classes": int(num_classes),
        "model_args": {**model_args, "num_classes": int(num_classes)},
        "label_names": list(class_names) if class_names is not None else None,
        "pretrained_cfg": {
            "input_size": [3, int(img_size), int(img_size)],
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "num_classes": int(num_classes),
            "license": None,
        },
    }


def save_student(model: nn.Module, out_dir: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json`` (each atomically); returns ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--save: {out} exists and is not a folder")
    tensors = _cpu_tensors(model.state_dict())
    write_file_atomic(out / STUDENT_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    write_file_atomic(out / STUDENT_CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return out


# ---------------------------------------------------------------------------------------------- training state


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON skeleton of ``obj`` with tensors moved to ``tensors`` (dict keys keep their int/str type)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__items__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__items__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike[str], parts: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write named state dicts (``parts``: model, optimizer, ...; tensors anywhere inside) and JSON ``meta``
    as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = {name: _flatten(part, name, tensors) for name, part in parts.items()}
    metadata = {STATE_META_KEY: json.dumps({"format": STATE_FORMAT, "parts": skeleton, "meta": meta})}
    tensors = _cpu_tensors(tensors)
    path = Path(path)
    write_file_atomic(path, lambda p: save_file(tensors, str(p), metadata=metadata))
    return path


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(parts, meta)`` as given to :func:`save_state` (tuples come back as lists)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(STATE_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise UserError(f"--checkpoint: {path} is not a readable safetensors file ({exc})") from None
    if raw is None:
        raise UserError(f"--checkpoint: {path} is not a distillation checkpoint (no '{STATE_META_KEY}' metadata)")
    doc = json.loads(raw)
    if doc.get("format") != STATE_FORMAT:
        raise UserError(f"--checkpoint: {path} has checkpoint format {doc.get('format')}, expected {STATE_FORMAT}")
    parts = {name: _unflatten(skel, tensors) for name, skel in doc["parts"].items()}
    return parts, doc["meta"]
