"""Save and load a :class:`~pipeline.evaluate.quant.model.QuantViT`: ``model.safetensors`` + ``config.json``.

``model.safetensors`` holds the quantized weights as integer codes (``weight.<name>.codes``, uint8) with their
per-channel ``scale`` and ``zero``, every other tensor in float (``param.<name>``: the reparameterised
LayerNorms, biases, class token, position embedding) and the activation quantizers' tensors
(``act.<site>.<tensor>``). ``config.json`` holds the ViT's structure, the quantizer settings, each
activation quantizer's kind/bits/axis, and whatever the caller adds under ``meta`` (teacher, normalisation,
calibration). A loaded model computes the same logits as the one saved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.evaluate.quant.model import QuantSettings, QuantViT, ViTShape
from pipeline.evaluate.quant.quantizers import UniformQuantizer, quantizer_from_tensors

FORMAT = "smi-synth-quant-vit-v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_quantized(qv: QuantViT, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``qv`` to ``folder`` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in qv.params.items():
        if name not in qv.weight_q:
            tensors[f"param.{name}"] = value
    weights = {}
    for name, q in qv.weight_q.items():
        tensors[f"weight.{name}.codes"] = q.codes(qv.params[name]).to(torch.uint8)
        tensors[f"weight.{name}.scale"], tensors[f"weight.{name}.zero"] = q.scale, q.zero
        weights[name] = {"bits": q.bits}
    acts = {}
    for site, q in qv.acts.items():
        for key, value in q.tensors().items():
            tensors[f"act.{site}.{key}"] = value
        acts[site] = {"kind": q.kind, "bits": q.bits, "axis": getattr(q, "axis", None)}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
    config = {"format": FORMAT, "shape": dataclasses.asdict(qv.shape), "settings": dataclasses.asdict(qv.settings),
              "weights": weights, "acts": acts, "meta": meta or {}}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved quantized model; ValueError when it is not one."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: not a saved quantized model ({exc})") from None
    if config.get("format") != FORMAT:
        raise ValueError(f"{folder}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_quantized(folder: str | Path, device: str = "cpu") -> tuple[QuantViT, dict[str, Any]]:
    """The model saved in ``folder`` (quantizers on, ready to evaluate) and its ``meta``."""
    config = read_config(folder)
    tensors = load_file(str(Path(folder) / WEIGHTS_FILE), device=device)
    params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    weight_q = {}
    for name, spec in config["weights"].items():
        q = UniformQuantizer(int(spec["bits"]), tensors[f"weight.{name}.scale"], tensors[f"weight.{name}.zero"], 0)
        params[name] = q.dequantize(tensors[f"weight.{name}.codes"])
        weight_q[name] = q
    acts = {}
    for site, spec in config["acts"].items():
        prefix = f"act.{site}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        acts[site] = quantizer_from_tensors(spec["kind"], int(spec["bits"]), own, spec.get("axis"))
    qv = QuantViT(ViTShape(**config["shape"]), params, QuantSettings(**config["settings"]), weight_q, acts)
    return qv.eval(), config.get("meta", {})
