"""``smi-synth bench``: dense and sparse inversion side by side, in one process, same model/batch/seed.

Reports each wall time, the measured speedup, the counted FLOP ratio dense/sparse (the physical
limit of the speedup) and the speedup as a share of that limit. Needs only torch and timm, so it
runs on GPU machines that cannot install the rest.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from pipeline.console import emit_json
from pipeline.errors import UserError
from smi_core import (
    InversionConfig,
    SelectionConfig,
    StopSchedule,
    invert,
    vit_geometry,
)

log = logging.getLogger(__name__)

PAPER_SCHEDULE = StopSchedule((50, 100, 200, 300), (0.3, 0.3, 0.3, 0.3))


@dataclass(frozen=True)
class BenchSpec:
    """One side-by-side comparison."""

    model: str = "vit_tiny_patch16_224"
    model_kwargs: dict = field(default_factory=dict)
    img_size: int = 224
    batch: int = 8
    iterations: int = 4000
    schedule: StopSchedule = PAPER_SCHEDULE
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    repeats: int = 1


def default_spec(quick: bool, device: str) -> BenchSpec:
    """Presets: DeiT-Base/16 at 224 in bf16 on a GPU; a small ViT on the CPU; ``quick`` under a minute."""
    if quick:
        return BenchSpec(
            model="vit_tiny_patch16_224",
            model_kwargs={"patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3},
            img_size=64, batch=4, iterations=160,
            schedule=StopSchedule((10, 20, 40, 60), (0.3, 0.3, 0.3, 0.3)),
            device=device, dtype="bfloat16" if device.startswith("cuda") else "float32",
        )
    if device.startswith("cuda"):
        return BenchSpec(model="deit_base_patch16_224", img_size=224, batch=64, device=device, dtype="bfloat16")
    return BenchSpec(
        model="vit_tiny_patch16_224",
        model_kwargs={"patch_size": 8, "embed_dim": 192, "depth": 2, "num_heads": 3},
        img_size=112, batch=16, device=device,
    )


def build_model(spec: BenchSpec) -> nn.Module:
    """The benchmark teacher: a timm model with random weights (speed does not depend on them)."""
    import timm

    torch.manual_seed(spec.seed)
    model = timm.create_model(spec.model, pretrained=False, img_size=spec.img_size, **spec.model_kwargs)
    return model.eval().requires_grad_(False).to(spec.device)


def _invert_once(model: nn.Module, spec: BenchSpec, kind: str, iterations: int, count_flops: bool):
    config = InversionConfig(
        iterations=iterations, selection=SelectionConfig(kind=kind, schedule=spec.schedule)  # type: ignore[arg-type]
    )
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    targets = torch.arange(spec.batch, device=spec.device) % int(model.num_classes)
    dtype = torch.bfloat16 if spec.dtype == "bfloat16" else None
    return invert(model, targets, config, generator, autocast_dtype=dtype, count_flops=count_flops)


def run_bench(spec: BenchSpec) -> dict:
    """Warm up, then time dense and sparse inversion alternately ``repeats`` times; keep each best time."""
    model = build_model(spec)
    geometry = vit_geometry(model)
    warm = min(spec.iterations, max(spec.schedule.iterations) + 5)
    for kind in ("dense", "smi"):
        _invert_once(model, replace(spec, batch=spec.batch), kind, warm, count_flops=False)
    times: dict[str, list[float]] = {"dense": [], "smi": []}
    flops: dict[str, int] = {}
    for repeat in range(spec.repeats):
        for kind in ("dense", "smi"):
            result = _invert_once(model, spec, kind, spec.iterations, count_flops=repeat == 0)
            times[kind].append(result.seconds)
            if repeat == 0:
                flops[kind] = result.flops
            log.info("%s run %d: %.2f s", kind, repeat, result.seconds)
    dense_s, sparse_s = min(times["dense"]), min(times["smi"])
    speedup = dense_s / sparse_s
    flop_ratio = flops["dense"] / flops["smi"]
    images = spec.batch
    return {
        "model": spec.model,
        "model_kwargs": spec.model_kwargs,
        "params": sum(p.numel() for p in model.parameters()),
        "img_size": spec.img_size,
        "patch_size": list(geometry.patch_size),
        "patches": geometry.num_patches,
        "batch": spec.batch,
        "iterations": spec.iterations,
        "schedule": {"iterations": list(spec.schedule.iterations), "ratios": list(spec.schedule.ratios)},
        "kept_final": spec.schedule.kept_counts(geometry.num_patches)[-1],
        "device": spec.device,
        "device_name": torch.cuda.get_device_name(spec.device) if spec.device.startswith("cuda") else platform.processor() or platform.machine(),
        "dtype": spec.dtype,
        "threads": torch.get_num_threads(),
        "repeats": spec.repeats,
        "dense_seconds": dense_s,
        "sparse_seconds": sparse_s,
        "dense_seconds_all": times["dense"],
        "sparse_seconds_all": times["smi"],
        "speedup": speedup,
        "dense_flops": flops["dense"],
        "sparse_flops": flops["smi"],
        "flop_ratio": flop_ratio,
        "share_of_flop_limit": speedup / flop_ratio,
        "dense_images_per_second": images / dense_s,
        "sparse_images_per_second": images / sparse_s,
        "torch": torch.__version__,
    }


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    """Apply command-line overrides to the preset; bad values raise ``UserError`` naming the field."""
    try:
        return _spec_from_args(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _spec_from_args(args: argparse.Namespace) -> BenchSpec:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    spec = default_spec(args.quick, device)
    changes: dict = {}
    if args.model:
        changes.update(model=args.model, model_kwargs={})
    for name in ("img_size", "batch", "iterations"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.dtype:
        changes["dtype"] = args.dtype
    if getattr(args, "repeats", None):
        changes["repeats"] = args.repeats
    if args.stop_iterations or args.stop_ratios:
        its = [int(v) for v in args.stop_iterations.split(",")] if args.stop_iterations else list(spec.schedule.iterations)
        ratios = [float(v) for v in args.stop_ratios.split(",")] if args.stop_ratios else [0.3] * len(its)
        changes["schedule"] = StopSchedule(tuple(its), tuple(ratios))
    changes["seed"] = args.seed
    spec = replace(spec, **changes)
    spec.schedule.check_within(spec.iterations)
    return spec


def format_report(r: dict) -> str:
    """Human-readable summary of a bench result."""
    return "\n".join([
        f"model {r['model']} {r['model_kwargs'] or ''} ({r['params'] / 1e6:.2f} M params), "
        f"{r['img_size']}px, patch {r['patch_size'][0]}, {r['patches']} patches -> {r['kept_final']} kept",
        f"device {r['device']} ({r['device_name']}), {r['dtype']}, batch {r['batch']}, {r['iterations']} iterations, "
        f"schedule t={r['schedule']['iterations']} r={r['schedule']['ratios']}",
        f"dense  {r['dense_seconds']:9.2f} s  {r['dense_images_per_second']:8.3f} img/s",
        f"sparse {r['sparse_seconds']:9.2f} s  {r['sparse_images_per_second']:8.3f} img/s",
        f"speedup {r['speedup']:.2f}x   FLOP ratio {r['flop_ratio']:.2f}x   "
        f"share of the FLOP limit {100 * r['share_of_flop_limit']:.1f}%",
    ])


def cmd_bench(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    print(f"benchmarking dense vs sparse inversion: {spec.model}, {spec.iterations} iterations ...", file=sys.stderr)
    report = run_bench(spec)
    print(format_report(report), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(report)
    return 0
