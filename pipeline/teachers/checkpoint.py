"""The project's teacher checkpoint format: weights as safetensors, the timm config in its metadata.

:func:`save_checkpoint` writes it; :mod:`pipeline.teachers.loading` reads it (and timm Hub-style
``config.json`` sidecars and plain state dicts).

``model_args`` (the keyword arguments of ``timm.create_model``) come from files that may be someone
else's, so only the Vision Transformer's geometry and sizes are accepted (:data:`MODEL_ARGS`), each with
a JSON type: a key such as ``checkpoint_path``, ``pretrained_cfg_overlay`` or ``pretrained`` would make
timm read a file outside the weights-only guarantee, and is refused naming the key.
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

_INT, _FLOAT, _BOOL, _STR, _PAIR = "int", "float", "bool", "str", "pair"
# timm VisionTransformer arguments that shape the architecture (sizes, token layout, norms, pooling) or
# only act in training (drop rates): plain JSON values, never a path, module or callable.
MODEL_ARGS: dict[str, tuple[str, bool]] = {  # name -> (type, may be null)
    "img_size": (_PAIR, False),
    "patch_size": (_PAIR, False),
    "in_chans": (_INT, False),
    "num_classes": (_INT, False),
    "global_pool": (_STR, False),
    "embed_dim": (_INT, False),
    "depth": (_INT, False),
    "num_heads": (_INT, False),
    "mlp_ratio": (_FLOAT, False),
    "qkv_bias": (_BOOL, False),
    "qk_norm": (_BOOL, False),
    "scale_attn_norm": (_BOOL, False),
    "scale_mlp_norm": (_BOOL, False),
    "proj_bias": (_BOOL, False),
    "init_values": (_FLOAT, True),
    "class_token": (_BOOL, False),
    "pos_embed": (_STR, False),
    "no_embed_class": (_BOOL, False),
    "reg_tokens": (_INT, False),
    "pre_norm": (_BOOL, False),
    "final_norm": (_BOOL, False),
    "fc_norm": (_BOOL, True),
    "pool_include_prefix": (_BOOL, False),
    "dynamic_img_size": (_BOOL, False),
    "dynamic_img_pad": (_BOOL, False),
    "drop_rate": (_FLOAT, False),
    "pos_drop_rate": (_FLOAT, False),
    "patch_drop_rate": (_FLOAT, False),
    "proj_drop_rate": (_FLOAT, False),
    "attn_drop_rate": (_FLOAT, False),
    "drop_path_rate": (_FLOAT, False),
}
_MAX_STR = 32  # pooling / position-embedding mode names are short words


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 20


def _fits(kind: str, v: Any) -> bool:
    if kind == _INT:
        return _is_int(v)
    if kind == _FLOAT:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)) and abs(float(v)) <= 1e6
    if kind == _BOOL:
        return isinstance(v, bool)
    if kind == _STR:
        return isinstance(v, str) and len(v) <= _MAX_STR and (v == "" or v.replace("_", "").isalnum())
    return _is_int(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) for x in v))


def check_model_args(args: Any, where: str) -> dict[str, Any]:
    """``args`` if every key is an allowed timm ViT argument (:data:`MODEL_ARGS`) of the right JSON type,
    else a ``UserError`` naming the first bad key; ``where`` starts the message."""
    if not isinstance(args, dict):
        raise UserError(f"{where}: 'model_args' must be an object")
    for key, value in args.items():
        allowed = MODEL_ARGS.get(key) if isinstance(key, str) else None
        if allowed is None:
            raise UserError(
                f"{where}: model_args key {str(key)[:60]!r} is not allowed (only a ViT's geometry and sizes: "
                "img_size, patch_size, embed_dim, depth, num_heads, ...)"
            )
        kind, nullable = allowed
        if not (value is None and nullable) and not _fits(kind, value):
            raise UserError(f"{where}: model_args {key!r} must be {'a ' + kind if kind != _INT else 'an int'}, "
                            f"got {str(value)[:60]!r}")
    return dict(args)


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
    kwargs = check_model_args(dict(model_kwargs), str(path))
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
