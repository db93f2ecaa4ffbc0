"""Teachers: a frozen timm Vision Transformer plus what the pipeline needs to know about it.

Three kinds of teacher spec:

* ``timm:NAME`` (``NAME`` may carry a pretrained tag, e.g. ``vit_small_patch16_224.augreg_in21k_ft_in1k``):
  ``timm.create_model(NAME, pretrained=True)``, weights through timm / the Hugging Face Hub.
* ``toy``: the built-in tiny ViT trained on procedurally generated shapes (:mod:`pipeline.teachers.toy`).
* a local checkpoint file, optionally followed by ``::ARCH`` (a timm architecture name):

  - ``.safetensors`` (preferred): weights, plus the architecture in the file's metadata under the key
    ``smi_synth.teacher`` as written by :func:`pipeline.teachers.checkpoint.save_checkpoint` (JSON in timm's Hub ``config.json``
    schema: ``architecture``, ``num_classes``, ``model_args``, ``label_names``, ``pretrained_cfg``).
  - ``.pth`` / ``.pt`` / ``.bin``: read only with ``torch.load(..., weights_only=True)``, never unpickled.
  - Where the file carries no metadata, the architecture comes from a sidecar JSON in the same schema:
    ``<file>.json``, ``<file stem>.json`` or ``config.json`` beside the file (so a downloaded timm Hub
    snapshot, ``model.safetensors`` + ``config.json``, works as it is), or from ``::ARCH`` alone
    (timm's default arguments, class count read from the head's weight).

:func:`describe_teacher` is cheap (builds the architecture on the ``meta`` device, reads only file
headers, downloads nothing); :func:`load_teacher` loads weights. Every bad input is a one-line
:class:`~pipeline.errors.UserError` naming the teacher.

Identity (what determines a teacher's outputs): ``TeacherInfo.resolved_id`` names a ``timm:`` teacher
with the pretrained tag the installed timm resolves it to (``timm:vit_base_patch16_224`` ->
``timm:vit_base_patch16_224.augreg2_in21k_ft_in1k``), and ``Teacher.weights_sha256`` is the sha256 of
the weights actually loaded (every tensor of the state dict: name, dtype, shape and bytes), for every
kind of teacher.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.checksums import file_sha256
from pipeline.errors import UserError
from pipeline.teachers.checkpoint import META_KEY, check_model_args, pair
from pipeline.teachers.toy import describe_toy_teacher, load_or_build_toy_teacher
from smi_core.vit import vit_geometry

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
TOY_SPEC = "toy"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_CONTAINER_KEYS = ("state_dict", "model", "module", "model_ema", "state_dict_ema")
# what a checkpoint's pretrained_cfg may set on the model: input normalisation, size, labels, licence
# (a Hub config.json's hf_hub_id, url, file, ... name downloads and are dropped)
_DATA_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "license", "label_names",
                  "label_descriptions")


@dataclass(frozen=True)
class TeacherInfo:
    """A teacher's metadata and architecture dimensions, without its weights."""

    teacher_id: str  # "timm:NAME", "toy:v1", "file:<name>@<sha256[:12]>"
    num_classes: int
    class_names: tuple[str, ...]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str | None
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: tuple[int, int]
    num_prefix_tokens: int
    arch: str = ""  # timm architecture name
    num_params: int = 0
    label_ids: tuple[str, ...] | None = None  # e.g. ImageNet WordNet synsets (ImageFolder folder names)
    pretrained_tag: str | None = None  # timm teachers: the pretrained tag timm resolves the name to
    resolved_id: str = ""  # timm teachers: "timm:ARCH.TAG"; others: teacher_id ("" reads as teacher_id)

    @property
    def identity(self) -> str:
        """What names this teacher's weights: the resolved id (timm with its pretrained tag) or the id."""
        return self.resolved_id or self.teacher_id


@dataclass
class Teacher:
    """A frozen teacher (eval mode, no gradients) and its metadata."""

    model: nn.Module
    teacher_id: str
    num_classes: int
    class_names: list[str]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str | None
    info: TeacherInfo
    weights_sha256: str = ""  # sha256 of the loaded state dict (see weights_sha256())


# --- public API ----------------------------------------------------------------------------------


def describe_teacher(spec: str) -> TeacherInfo:
    """Metadata of a teacher spec without loading weights or touching the network."""
    kind, value, arch = parse_spec(spec)
    if kind == "toy":
        model, cfg = describe_toy_teacher()
        return _info(model, cfg["teacher_id"], cfg["arch"], cfg["class_names"], spec)
    if kind == "timm":
        model = _meta_model(value, {}, spec)
        return _info(model, f"{TIMM_PREFIX}{value}", value, None, spec, timm_tag=True)
    path = _existing(value, spec)
    config = _checkpoint_config(path, arch, spec)
    model = _meta_model(config["architecture"], _model_args(config), spec)
    _apply_pretrained_cfg(model, config)
    return _info(model, _file_id(path), config["architecture"], config.get("label_names"), spec)


def load_teacher(
    spec: str, *, device: str | torch.device = "cpu", progress: Callable[[int, int, float], None] | None = None
) -> Teacher:
    """Load a teacher's weights onto ``device``, frozen; see the module docstring for ``spec``.

    ``progress(step, total, loss)`` is called while the toy teacher trains (first use only).
    """
    kind, value, arch = parse_spec(spec)
    if kind == "toy":
        model, meta = load_or_build_toy_teacher(progress=progress)
        info = _info(model, meta["teacher_id"], meta["arch"], meta["class_names"], spec)
    elif kind == "timm":
        _meta_model(value, {}, spec)  # unknown names and non-ViTs fail here, before any download
        model = _create_pretrained(value, spec)
        info = _info(model, f"{TIMM_PREFIX}{value}", value, None, spec, timm_tag=True)
    else:
        path = _existing(value, spec)
        config = _checkpoint_config(path, arch, spec)
        _meta_model(config["architecture"], _model_args(config), spec)
        model = _create(config["architecture"], _model_args(config), spec)
        _apply_pretrained_cfg(model, config)
        _load_weights(model, path, spec)
        info = _info(model, _file_id(path), config["architecture"], config.get("label_names"), spec)
    digest = weights_sha256(model)  # before the move: hashed from host memory, whatever the device
    model = model.to(device).eval().requires_grad_(False)
    return Teacher(
        model=model,
        teacher_id=info.teacher_id,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        img_size=info.img_size,
        mean=info.mean,
        std=info.std,
        license=info.license,
        info=info,
        weights_sha256=digest,
    )


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict in name order: each tensor's name, dtype, shape and raw bytes.

    Two teachers with equal digests hold bit-identical weights and buffers, whatever file or download
    they came from.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``(kind, value, arch)``: kind ``toy`` | ``timm`` | ``file``; ``arch`` from a ``PATH::ARCH`` suffix."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("teacher: expected 'toy', 'timm:NAME' or a checkpoint path, got an empty value")
    if spec == TOY_SPEC:
        return "toy", spec, None
    if spec.startswith(TIMM_PREFIX):
        name = spec[len(TIMM_PREFIX):].strip()
        if not name:
            raise UserError("teacher: 'timm:' needs a model name, e.g. timm:deit_base_patch16_224")
        return "timm", name, None
    path, sep, arch = spec.rpartition("::")
    if sep and path and arch and "/" not in arch and os.sep not in arch:
        return "file", path, arch
    return "file", spec, None


# --- timm models -----------------------------------------------------------------------------


def _check_timm_name(name: str, spec: str) -> None:
    import timm

    if not timm.is_model(name):
        arch = name.split(".", 1)[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.8)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"teacher {spec}: unknown timm model '{arch}'{hint}")


def _meta_model(name: str, kwargs: dict[str, Any], spec: str) -> nn.Module:
    """The architecture on the ``meta`` device (no memory, no weights), checked to be a usable ViT."""
    _check_timm_name(name, spec)
    try:
        with torch.device("meta"):
            model = _create(name, kwargs, spec)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - some constructors cannot run on meta; build it for real
        model = _create(name, kwargs, spec)
    _check_vit(model, spec)
    return model


def _create(name: str, kwargs: dict[str, Any], spec: str) -> nn.Module:
    import timm

    _check_timm_name(name, spec)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"teacher {spec}: cannot build timm model '{name}': {_one_line(exc)}") from None


def _create_pretrained(name: str, spec: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - network, hub and cache errors come in many types
        raise UserError(
            f"teacher {spec}: could not fetch pretrained weights for '{name}' "
            f"({type(exc).__name__}: {_one_line(exc)}); if this machine is offline, download the "
            "checkpoint elsewhere and pass the local .safetensors file as the teacher"
        ) from None


def _check_vit(model: nn.Module, spec: str) -> None:
    """Reject models the inversion engine cannot run: a timm ViT (``vit_geometry``) with a class token."""
    try:
        geometry = vit_geometry(model)
    except ValueError as exc:
        raise UserError(f"teacher {spec}: {exc}; use a ViT/DeiT model") from None
    if not geometry.has_cls_token:
        raise UserError(
            f"teacher {spec}: {type(model).__name__} has no class token (sparse inversion ranks patches "
            "by the CLS token's attention)"
        )


def _info(model: nn.Module, teacher_id: str, arch: str, names: Sequence[str] | None, spec: str,
          *, timm_tag: bool = False) -> TeacherInfo:
    """Read a built (possibly meta) model's metadata and dimensions; ``timm_tag``: resolve the pretrained tag."""
    from timm.data import resolve_model_data_config

    num_classes = int(model.num_classes)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    class_names, label_ids = _class_names(cfg, num_classes, names, spec)
    data = resolve_model_data_config(model)
    block = model.blocks[0]
    mlp = getattr(block, "mlp", None)
    fc1 = getattr(mlp, "fc1", None)
    embed_dim = int(model.embed_dim)
    tag = str(cfg["tag"]) if timm_tag and cfg.get("tag") else None
    resolved = f"{TIMM_PREFIX}{cfg.get('architecture') or arch.split('.', 1)[0]}.{tag}" if tag else teacher_id
    return TeacherInfo(
        teacher_id=teacher_id,
        num_classes=num_classes,
        class_names=tuple(class_names),
        img_size=pair(model.patch_embed.img_size),
        mean=tuple(float(m) for m in data["mean"]),
        std=tuple(float(s) for s in data["std"]),
        license=cfg.get("license"),
        embed_dim=embed_dim,
        depth=len(model.blocks),
        num_heads=int(getattr(block.attn, "num_heads", 1)),
        mlp_ratio=float(fc1.out_features) / embed_dim if isinstance(fc1, nn.Linear) else 4.0,
        patch_size=pair(model.patch_embed.patch_size),
        num_prefix_tokens=int(model.num_prefix_tokens),
        arch=arch,
        num_params=sum(p.numel() for p in model.parameters()),
        label_ids=label_ids,
        pretrained_tag=tag,
        resolved_id=resolved,
    )


def _class_names(
    cfg: dict[str, Any], num_classes: int, names: Sequence[str] | None, spec: str
) -> tuple[list[str], tuple[str, ...] | None]:
    """Names from the checkpoint, else the pretrained cfg, else timm's ImageNet info, else ``class_<i>``."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    if names is not None:
        if len(names) != num_classes:
            raise UserError(f"teacher {spec}: {len(names)} class names for {num_classes} classes")
        return [str(n) for n in names], None
    labels = cfg.get("label_names")
    descriptions = cfg.get("label_descriptions") or {}
    if labels and len(labels) == num_classes:
        return [str(descriptions.get(n, n)) for n in labels], tuple(str(n) for n in labels)
    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset:
        info = ImageNetInfo(subset)
        return list(info.label_descriptions()), tuple(info.label_names())
    return [f"class_{i}" for i in range(num_classes)], None


# --- checkpoint files ----------------------------------------------------------------------------


def _existing(value: str, spec: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"teacher {spec}: checkpoint file not found: {path}")
    if path.suffix not in (".safetensors", *TORCH_SUFFIXES):
        raise UserError(
            f"teacher {spec}: unsupported checkpoint type '{path.suffix}' "
            "(use .safetensors, or .pth/.pt/.bin with a sidecar JSON)"
        )
    return path


def _checkpoint_config(path: Path, arch: str | None, spec: str) -> dict[str, Any]:
    """The timm ``config.json``-style description of a checkpoint: metadata, else a sidecar, else ``::ARCH``."""
    config: dict[str, Any] | None = None
    if path.suffix == ".safetensors":
        config = _safetensors_config(path, spec)
    if config is None:
        config = _sidecar_config(path, spec)
    if config is None:
        if arch is None:
            raise UserError(
                f"teacher {spec}: {path.name} does not say which timm architecture it holds; write it with "
                f"pipeline.teachers.checkpoint.save_checkpoint, add a sidecar {path.name}.json, or pass {path}::ARCH"
            )
        config = {"architecture": arch, "num_classes": _head_classes(path, spec)}
    config = _normalise_config(config, spec)
    if arch is not None:
        config["architecture"] = arch
    return config


def _safetensors_config(path: Path, spec: str) -> dict[str, Any] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise UserError(f"teacher {spec}: {path.name} is not a readable safetensors file: {_one_line(exc)}") from None
    raw = metadata.get(META_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"teacher {spec}: {path.name}: metadata '{META_KEY}' is not valid JSON ({exc})") from None


def _sidecar_config(path: Path, spec: str) -> dict[str, Any] | None:
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json"), path.with_name("config.json")):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"teacher {spec}: cannot read sidecar {candidate}: {_one_line(exc)}") from None
    return None


def _normalise_config(config: Any, spec: str) -> dict[str, Any]:
    """Validate a config dict; accepts timm's legacy flat layout too."""
    if not isinstance(config, dict):
        raise UserError(f"teacher {spec}: checkpoint config must be a JSON object")
    config = dict(config)
    if "pretrained_cfg" not in config:  # timm's legacy single-dict config.json
        config["pretrained_cfg"] = {k: config[k] for k in ("mean", "std", "input_size", "license") if k in config}
    if not isinstance(config.get("architecture"), str) or not config["architecture"]:
        raise UserError(f"teacher {spec}: checkpoint config has no 'architecture' (a timm model name)")
    if not isinstance(config.get("model_args", {}), dict) or not isinstance(config["pretrained_cfg"], dict):
        raise UserError(f"teacher {spec}: checkpoint config: 'model_args' and 'pretrained_cfg' must be objects")
    config["model_args"] = check_model_args(config.get("model_args") or {}, f"teacher {spec}: checkpoint config")
    classes = config.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise UserError(f"teacher {spec}: checkpoint config: 'num_classes' must be a positive int, got {classes!r}")
    config["pretrained_cfg"] = {k: v for k, v in config["pretrained_cfg"].items() if k in _DATA_CFG_KEYS}
    names = config.get("label_names") or config["pretrained_cfg"].get("label_names")
    descriptions = config.get("label_descriptions") or config["pretrained_cfg"].get("label_descriptions")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise UserError(f"teacher {spec}: checkpoint config: 'label_names' must be a list of strings")
    if names is not None and isinstance(descriptions, dict):
        names = [str(descriptions.get(n, n)) for n in names]
    config["label_names"] = names
    return config


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    args = dict(config.get("model_args") or {})
    if config.get("num_classes") is not None:
        args.setdefault("num_classes", int(config["num_classes"]))
    return args


def _apply_pretrained_cfg(model: nn.Module, config: dict[str, Any]) -> None:
    """Overlay the checkpoint's mean/std/input size/licence on the model's timm pretrained cfg."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    extra = {k: v for k, v in config.get("pretrained_cfg", {}).items() if v is not None}
    for key in ("input_size", "mean", "std"):
        if key in extra:
            extra[key] = tuple(extra[key])
    cfg.update(extra)
    cfg["num_classes"] = int(model.num_classes)
    if "license" not in extra:
        cfg["license"] = None  # the architecture's pretrained licence does not cover someone else's weights
    if config.get("label_names"):
        cfg.pop("label_names", None)
        cfg.pop("label_descriptions", None)
    model.pretrained_cfg = cfg


def _head_classes(path: Path, spec: str) -> int | None:
    """Class count from the checkpoint's ``head.weight`` shape (no weights read for safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            if "head.weight" in f.keys():  # noqa: SIM118 - safe_open is not a dict
                return int(f.get_slice("head.weight").get_shape()[0])
        return None
    head = _torch_state_dict(path, spec).get("head.weight")
    return int(head.shape[0]) if head is not None else None


def _torch_state_dict(path: Path, spec: str) -> dict[str, torch.Tensor]:
    """A ``.pth/.pt/.bin`` state dict, read with ``weights_only=True`` (no arbitrary unpickling)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        raise UserError(
            f"teacher {spec}: cannot read {path.name} as plain weights (torch.load weights_only=True): "
            f"{_one_line(exc)}; convert it to .safetensors"
        ) from None
    for key in _CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"teacher {spec}: {path.name} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_weights(model: nn.Module, path: Path, spec: str) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = _torch_state_dict(path, spec)
    try:
        model.load_state_dict(state, strict=True)
        return
    except RuntimeError as exc:
        first_error = exc
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:  # timm's converter for original (e.g. DeiT / JAX-port) key layouts
        try:
            model.load_state_dict(filter_fn(state, model), strict=True)
            return
        except Exception as exc:  # noqa: BLE001 - report the plain error below
            log.debug("timm checkpoint_filter_fn did not help: %s", exc)
    lines = [ln.strip() for ln in str(first_error).splitlines() if ln.strip()]
    raise UserError(
        f"teacher {spec}: weights in {path.name} do not fit the architecture: {' '.join(lines[1:3])[:300]}"
    ) from None


def _file_id(path: Path) -> str:
    return f"file:{path.name}@{file_sha256(path)[:12]}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")

