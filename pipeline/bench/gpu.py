"""``make bench-gpu``: the GPU path measured in one process (under 5 minutes on one H100/H200).

Full mode (CUDA): DeiT-Base/16 at 224 in bf16 (timm's ``deit_base_patch16_224`` with random weights:
nothing is downloaded; speed does not depend on the weights), 400 iterations with stops at 5, 10, 20,
30 (the paper's 4,000 iterations and stops at 50, 100, 200, 300 scaled by 1/10: the same token
proportions). It measures, side by side:

- eager dense, SMI and patch rebirth images/s and peak memory at batch 64 and 256 (targets in the forward;
  rebirth yields four images per target), beside the estimate of :mod:`smi_core.memory` (what ``smi-synth
  plan`` prints), and each method's speedup per image over dense against its counted FLOP ratio;
- the throughput mode: 4 batches of 64 packed into one engine call vs the same 4 batches one by one
  (images/s, and how far the packed images are from the one-by-one images);
- the compiled path (``torch.compile`` default and ``reduce-overhead`` = CUDA graphs) vs eager, on a
  one-stop schedule straight to the paper's final 48 patches (3 graphs to compile instead of 9, so the
  compile fits the time; compile seconds reported apart), with the images' distance to eager;
- a 2-shard generation in the corpus format in-process (:class:`~pipeline.run.worker.ShardWorker`,
  the teacher saved as a checkpoint first), and shard 0 generated again into another folder: tar and
  parquet bytes identical or not.

Everything runs under a shard worker's deterministic settings (:func:`~pipeline.run.worker.deterministic_settings`),
as a corpus run does.

Smoke mode (no CUDA, or ``--smoke``): a small ViT on the CPU, the same steps; it says so. ``--cpu-preset
tiny`` (the default, seconds: the test) or ``toy`` (the demo's teacher size and 300 iterations, minutes:
the CPU figures of BENCHMARKS.md).
Prints a markdown table for BENCHMARKS.md, then one JSON line (the last stdout line); ``--out DIR``
also writes both there. Imports only what the lent GPU machine has (torch, timm, pyarrow, pillow,
safetensors): no Ray, webdataset or pydantic.

    python3 -m pipeline.bench.gpu [--smoke] [--cpu-preset tiny|toy] [--out DIR]
                                  [--compile-modes default,reduce-overhead|none]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.console import emit_json
from pipeline.corpus.index import ShardTask
from pipeline.corpus.layout import CorpusLayout
from pipeline.run.worker import ShardWorker, WorkerConfig, deterministic_settings
from pipeline.teachers.checkpoint import save_checkpoint
from smi_core import (
    InversionConfig,
    SelectionConfig,
    StopSchedule,
    invert_packed,
    vit_geometry,
)
from smi_core.config import COMPILE_MODES
from smi_core.flops import schedule_flops
from smi_core.memory import inversion_memory
from smi_core.recipe import rebirth_schedule
from smi_core.selection import images_per_target

TIME_BUDGET_S = 270.0  # full mode: compile modes still to run are skipped past this (the run stays under 5 minutes)


@dataclass(frozen=True)
class GpuBenchPlan:
    """What one bench run measures."""

    mode: str  # "full" (CUDA) or "smoke"
    model: str
    model_kwargs: dict[str, Any]
    img_size: int
    device: str
    dtype: str
    batches: tuple[int, ...]  # eager dense vs SMI at each
    iterations: int
    schedule: StopSchedule
    pack: int  # batches of batches[0] packed into one call in the throughput comparison
    compile_modes: tuple[str, ...]
    shard_images: int  # images per shard of the 2-shard generation (one batch each)
    repeats: int = 1  # compared runs alternate this many times; each keeps its fastest
    time_budget_s: float | None = None  # compile modes not started by then are skipped (None: no limit)
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def full_plan(compile_modes: tuple[str, ...] = ("default", "reduce-overhead")) -> GpuBenchPlan:
    return GpuBenchPlan(mode="full", model="deit_base_patch16_224", model_kwargs={}, img_size=224, device="cuda",
                        dtype="bfloat16", batches=(64, 256), iterations=400,
                        schedule=StopSchedule((5, 10, 20, 30), (0.3, 0.3, 0.3, 0.3)), pack=4,
                        compile_modes=compile_modes, shard_images=64, time_budget_s=TIME_BUDGET_S)


def smoke_plan(compile_modes: tuple[str, ...] = ("default",), device: str = "cpu") -> GpuBenchPlan:
    return GpuBenchPlan(mode="smoke", model="vit_tiny_patch16_224",
                        model_kwargs={"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 10},
                        img_size=32, device=device, dtype="float32", batches=(4, 16), iterations=20,
                        schedule=StopSchedule((1, 2, 4, 6), (0.3, 0.3, 0.3, 0.3)), pack=4,
                        compile_modes=compile_modes, shard_images=4)


def toy_plan(compile_modes: tuple[str, ...] = ("default",), device: str = "cpu") -> GpuBenchPlan:
    """The demo's workload on the CPU: the toy teacher's dimensions (64 patches), 300 iterations, its stops."""
    return GpuBenchPlan(mode="smoke", model="vit_tiny_patch16_224",
                        model_kwargs={"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0,
                                      "num_classes": 10},
                        img_size=32, device=device, dtype="float32", batches=(8, 32), iterations=300,
                        schedule=StopSchedule((20, 40, 80, 120), (0.3, 0.3, 0.3, 0.3)), pack=4,
                        compile_modes=compile_modes, shard_images=8)


CPU_PRESETS = {"tiny": smoke_plan, "toy": toy_plan}


def one_stop_schedule(schedule: StopSchedule, num_patches: int) -> StopSchedule:
    """One stop at ``schedule``'s last stop iteration, straight to its final kept count."""
    final = schedule.kept_counts(num_patches)[-1]
    ratio = (num_patches - final + 0.5) / num_patches  # kept = n - int(ratio * n) = final
    one = StopSchedule((schedule.iterations[-1],), (ratio,))
    assert one.kept_counts(num_patches) == [final]
    return one


def build_model(plan: GpuBenchPlan) -> nn.Module:
    import timm

    torch.manual_seed(plan.seed)
    model = timm.create_model(plan.model, pretrained=False, img_size=plan.img_size, **plan.model_kwargs)
    return model.eval().requires_grad_(False).to(plan.device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


class Bench:
    """Runs the measurements of one plan on one model."""

    def __init__(self, plan: GpuBenchPlan) -> None:
        self.plan = plan
        self.model = build_model(plan)
        self.geometry = vit_geometry(self.model)
        self.autocast = torch.bfloat16 if plan.dtype == "bfloat16" else None
        self.params = sum(p.numel() for p in self.model.parameters())

    def config(self, kind: str, schedule: StopSchedule, iterations: int, compile: str = "off") -> InversionConfig:
        """``kind``'s run at ``iterations``: ``schedule``'s stops, or rebirth's own (:func:`rebirth_schedule`)."""
        if kind == "rebirth":
            schedule = rebirth_schedule(iterations)
        return InversionConfig(iterations=iterations, selection=SelectionConfig(kind, schedule),  # type: ignore[arg-type]
                               compile=compile)  # type: ignore[arg-type]

    def flops_per_image(self, config: InversionConfig) -> float:
        """Counted FLOPs of one image under ``config`` (a rebirth run's shared by the images it yields)."""
        flops = schedule_flops(self.model, self.geometry, config.selection, config.iterations, 1,
                               device=torch.device(self.plan.device))
        return flops / images_per_target(config.selection)

    def batches(self, batch: int, count: int, first_seed: int) -> list[tuple[torch.Tensor, torch.Generator]]:
        classes = int(self.model.num_classes)
        return [(torch.arange(batch, device=self.plan.device) % classes,
                 torch.Generator(device="cpu").manual_seed(self.plan.seed + first_seed + i)) for i in range(count)]

    def estimate(self, images: int) -> int:
        t = self.geometry
        return inversion_memory(images=images, img_size=t.img_size, patch_size=t.patch_size,
                                num_prefix_tokens=t.num_prefix_tokens, embed_dim=int(self.model.embed_dim),
                                depth=len(self.model.blocks), mlp_ratio=self.model.blocks[0].mlp.fc1.out_features
                                / int(self.model.embed_dim), params=self.params, dtype=self.plan.dtype)["total"]

    def warm(self, config: InversionConfig, batch: int, pack: int = 1) -> float:
        """A short run through every shape of ``config`` (compiles them when compiled); its seconds."""
        stops = config.selection.schedule.iterations if config.selection.kind != "dense" else ()
        short = replace(config, iterations=min(config.iterations, max(stops, default=0) + 2))
        start = time.perf_counter()
        invert_packed(self.model, self.batches(batch, pack, 1000), short, autocast_dtype=self.autocast,
                      count_flops=False)
        _sync(self.plan.device)
        return time.perf_counter() - start

    def timed(self, config: InversionConfig, batch: int, pack: int = 1, calls: int = 1) -> tuple[dict, list]:
        """``calls`` engine calls of ``pack`` batches of ``batch`` (batch seeds 0, 1, ...): images/s and peak."""
        _peak_reset(self.plan.device)
        results, seconds = [], 0.0
        for c in range(calls):
            out = invert_packed(self.model, self.batches(batch, pack, c * pack), config,
                                autocast_dtype=self.autocast, count_flops=False)
            seconds += sum(r.seconds for r in out)
            results += out
        images = sum(r.images.shape[0] for r in results)  # rebirth: several per target
        row = {"images": images, "images_per_call": batch * pack, "seconds": seconds,
               "images_per_second": images / seconds, "peak_memory_bytes": _peak(self.plan.device),
               "estimated_memory_bytes": self.estimate(batch * pack)}
        return row, results


def _distance(a: list, b: list) -> dict:
    """How far two runs' images are apart (same batches in the same order)."""
    images = max(float((x.images - y.images).abs().max()) for x, y in zip(a, b))
    steps = max(int(((x.images * 255).round() != (y.images * 255).round()).sum()) for x, y in zip(a, b))
    return {"max_abs_pixel_difference": images, "uint8_values_differing": steps,
            "kept_masks_equal": all(bool(torch.equal(x.kept_mask, y.kept_mask)) for x, y in zip(a, b)),
            "images_with_another_kept_mask": sum(int((x.kept_mask != y.kept_mask).any(1).sum()) for x, y in zip(a, b)),
            "images": sum(x.images.shape[0] for x in a),
            "bit_identical": all(bool(torch.equal(x.images, y.images)) for x, y in zip(a, b))}


def side_by_side(runs: list[Callable[[], tuple[dict, list]]], repeats: int) -> list[tuple[dict, list]]:
    """Run the compared measurements alternately ``repeats`` times (so load changes hit them alike) and
    keep each one's fastest run, with every run's seconds in ``seconds_all``."""
    best: list[tuple[dict, list] | None] = [None] * len(runs)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, fn in enumerate(runs):
            row, results = fn()
            times[i].append(row["seconds"])
            if best[i] is None or row["seconds"] < best[i][0]["seconds"]:  # type: ignore[index]
                best[i] = (row, results)
    return [({**b[0], "seconds_all": t}, b[1]) for b, t in zip(best, times)]  # type: ignore[index]


EAGER_KINDS = ("dense", "smi", "rebirth")


def measure_eager(bench: Bench) -> list[dict]:
    """Dense, SMI and rebirth side by side at each batch (targets in the forward): images/s, and per image the
    speedup over dense against its counted FLOP ratio (the limit)."""
    plan, rows = bench.plan, []
    configs = [bench.config(kind, plan.schedule, plan.iterations) for kind in EAGER_KINDS]
    flops = [bench.flops_per_image(c) for c in configs]  # per image: the same at every batch
    for batch in plan.batches:
        for config in configs:
            bench.warm(config, batch)
        timed = side_by_side([lambda c=c, b=batch: bench.timed(c, b) for c in configs], plan.repeats)
        dense = timed[0][0]
        for kind, (row, _), f in zip(EAGER_KINDS, timed, flops):
            vs = {} if kind == "dense" else {
                "speedup_over_dense": row["images_per_second"] / dense["images_per_second"],
                "flop_ratio": flops[0] / f}
            rows.append({"kind": kind, "batch": batch, **row, "flops_per_image": f, **vs})
    return rows


def measure_packing(bench: Bench) -> dict:
    plan = bench.plan
    batch, config = plan.batches[0], bench.config("smi", plan.schedule, plan.iterations)
    bench.warm(config, batch)
    bench.warm(config, batch, plan.pack)
    (one_by_one, alone), (packed, together) = side_by_side(
        [lambda: bench.timed(config, batch, pack=1, calls=plan.pack), lambda: bench.timed(config, batch, pack=plan.pack)],
        plan.repeats)
    return {"kind": "smi", "batch": batch, "pack": plan.pack, "one_by_one": one_by_one, "packed": packed,
            "speedup": packed["images_per_second"] / one_by_one["images_per_second"],
            "packed_vs_one_by_one": _distance(alone, together)}


def _error(exc: Exception) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "traceback_tail": traceback.format_exc().splitlines()[-3:]}


def measure_compiled(bench: Bench, started: float) -> dict:
    """Eager against each compile mode on a one-stop schedule: every mode compiled first (its warm-up's
    seconds are the compile time), then timed alternately with eager. A mode that fails is reported."""
    plan = bench.plan
    batch = plan.batches[0]
    schedule = one_stop_schedule(plan.schedule, bench.geometry.num_patches)
    configs = {"off": bench.config("smi", schedule, plan.iterations)}
    out: dict[str, Any] = {"kind": "smi", "batch": batch, "schedule": {"iterations": list(schedule.iterations),
                           "kept": [bench.geometry.num_patches, *schedule.kept_counts(bench.geometry.num_patches)]},
                           "modes": {}}
    bench.warm(configs["off"], batch)
    compile_seconds = {}
    for mode in plan.compile_modes:
        if plan.time_budget_s is not None and time.perf_counter() - started > plan.time_budget_s:
            out["modes"][mode] = {"skipped": f"time budget of {plan.time_budget_s:.0f} s spent"}
            continue
        try:
            config = bench.config("smi", schedule, plan.iterations, compile=mode)
            compile_seconds[mode] = bench.warm(config, batch)
            configs[mode] = config
        except Exception as exc:  # noqa: BLE001 - a failing mode is a finding, not the end of the bench
            out["modes"][mode] = _error(exc)
    names = list(configs)
    try:
        measured = dict(zip(names, side_by_side([lambda c=configs[n]: bench.timed(c, batch) for n in names],
                                                plan.repeats)))
    except Exception as exc:  # noqa: BLE001 - e.g. CUDA graphs failing only when replayed
        measured = {"off": bench.timed(configs["off"], batch)}
        out["modes"].update({n: _error(exc) for n in names if n != "off"})
    eager, eager_results = measured.pop("off")
    out["eager"] = eager
    for mode, (row, results) in measured.items():
        out["modes"][mode] = {**row, "compile_seconds": compile_seconds[mode],
                              "speedup_over_eager": eager["seconds"] / row["seconds"],
                              "vs_eager": _distance(eager_results, results)}
    return out


def measure_shards(bench: Bench, folder: Path) -> dict:
    """Two shards written in the corpus format by the real worker, and shard 0 again elsewhere."""
    plan = bench.plan
    teacher = folder / "teacher.safetensors"
    save_checkpoint(bench.model.float().cpu(), teacher, arch=plan.model,
                    model_kwargs={"img_size": plan.img_size, **plan.model_kwargs},
                    class_names=[f"class_{i}" for i in range(int(bench.model.num_classes))], license="apache-2.0")
    bench.model.to(plan.device)
    inversion = bench.config("smi", plan.schedule, plan.iterations)
    tasks = [ShardTask(i, i, f"class_{i}", 0, plan.shard_images, 1000 + i) for i in range(2)]
    outs: dict[str, Any] = {"images_per_shard": plan.shard_images, "iterations": plan.iterations}
    digests = {}
    for name, todo in (("first", tasks), ("again", tasks[:1])):
        out = folder / f"corpus-{name}"
        config = WorkerConfig(teacher_spec=str(teacher), out=str(out), inversion=inversion, method="smi",
                              batch_size=plan.shard_images, image_format="png",
                              num_classes=int(bench.model.num_classes), device=plan.device, dtype=plan.dtype)
        worker = ShardWorker(config)
        start = time.perf_counter()
        stats = [worker.run(t) for t in todo]
        seconds = time.perf_counter() - start
        layout = CorpusLayout(out)
        digests[name] = {t.shard_id: (layout.storage.sha256(layout.tar(t.shard_id)),
                                      layout.storage.sha256(layout.parquet(t.shard_id))) for t in todo}
        if name == "first":
            outs.update(shards=len(stats), seconds=seconds, images_per_second=sum(s["samples"] for s in stats) / seconds,
                        tar_sha256_matches_stats=all(digests[name][s["shard"]][0] == s["tar_sha256"] for s in stats),
                        teacher_load_seconds=worker.load_seconds)
    outs["shard0_tar_identical"] = digests["first"][0][0] == digests["again"][0][0]
    outs["shard0_parquet_identical"] = digests["first"][0][1] == digests["again"][0][1]
    return outs


def run(plan: GpuBenchPlan, folder: Path) -> dict:
    started = time.perf_counter()
    # a worker's settings from the start (cuBLAS reads its workspace setting once): what production runs
    determinism = deterministic_settings(torch.device(plan.device))
    bench = Bench(plan)
    report: dict[str, Any] = {
        "bench": "gpu", "mode": plan.mode, "notes": plan.notes, "date": datetime.now(timezone.utc).isoformat(),
        "device": plan.device, "device_name": torch.cuda.get_device_name() if plan.device.startswith("cuda")
        else platform.processor() or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": plan.model, "model_kwargs": plan.model_kwargs, "params": bench.params, "img_size": plan.img_size,
        "dtype": plan.dtype, "iterations": plan.iterations, "repeats": plan.repeats, "determinism": determinism,
        "schedule": {"iterations": list(plan.schedule.iterations), "ratios": list(plan.schedule.ratios),
                     "kept": [bench.geometry.num_patches, *plan.schedule.kept_counts(bench.geometry.num_patches)]},
    }
    report["eager"] = measure_eager(bench)
    report["packing"] = measure_packing(bench)
    report["compiled"] = measure_compiled(bench, started)
    report["shards"] = measure_shards(bench, folder)
    report["total_seconds"] = time.perf_counter() - started
    return report


def _gib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**30:.2f}"


def markdown(r: dict) -> str:
    """The BENCHMARKS.md table of a report."""
    head = (f"{r['mode']} mode, {r['model']} {r['model_kwargs'] or ''} at {r['img_size']} px, {r['dtype']}, "
            f"{r['device']} ({r['device_name']}), torch {r['torch']}, {r['iterations']} iterations, "
            f"kept {' -> '.join(map(str, r['schedule']['kept']))}, best of {r['repeats']} alternated runs, "
            f"{r['date'][:10]}")
    lines = [head, "", "| what | batch (images/call) | images/s | ratio | peak GiB (estimate) | note |",
             "|---|---|---|---|---|---|"]
    for row in r["eager"]:
        ratio = (f"{row['speedup_over_dense']:.2f}x vs dense (FLOPs {row['flop_ratio']:.2f}x)"
                 if "speedup_over_dense" in row else "")
        lines.append(f"| eager {row['kind']} | {row['batch']} | {row['images_per_second']:.2f} | {ratio} | "
                     f"{_gib(row['peak_memory_bytes'])} ({_gib(row['estimated_memory_bytes'])}) | |")
    p = r["packing"]
    d = p["packed_vs_one_by_one"]
    lines.append(f"| SMI {p['pack']} batches one by one | {p['batch']} | {p['one_by_one']['images_per_second']:.2f} | "
                 f"1.00x | {_gib(p['one_by_one']['peak_memory_bytes'])} | |")
    lines.append(f"| SMI {p['pack']} batches packed | {p['packed']['images_per_call']} | "
                 f"{p['packed']['images_per_second']:.2f} | {p['speedup']:.2f}x vs one by one | "
                 f"{_gib(p['packed']['peak_memory_bytes'])} ({_gib(p['packed']['estimated_memory_bytes'])}) | "
                 f"max pixel diff {d['max_abs_pixel_difference']:.2e}, bit-identical {d['bit_identical']} |")
    c = r["compiled"]
    lines.append(f"| SMI one stop, eager | {c['batch']} | {c['eager']['images_per_second']:.2f} | 1.00x | "
                 f"{_gib(c['eager']['peak_memory_bytes'])} | kept {' -> '.join(map(str, c['schedule']['kept']))} |")
    for mode, m in c["modes"].items():
        if "images_per_second" not in m:
            lines.append(f"| SMI one stop, compile {mode} | {c['batch']} | - | - | - | {m.get('error') or m.get('skipped')} |")
            continue
        v = m["vs_eager"]
        lines.append(f"| SMI one stop, compile {mode} | {c['batch']} | {m['images_per_second']:.2f} | "
                     f"{m['speedup_over_eager']:.2f}x vs eager | {_gib(m['peak_memory_bytes'])} | compile "
                     f"{m['compile_seconds']:.0f} s, max pixel diff {v['max_abs_pixel_difference']:.2e}, "
                     f"{v['images_with_another_kept_mask']} of {v['images']} images kept other patches |")
    s = r["shards"]
    lines.append(f"| 2 shards in corpus format | {s['images_per_shard']} | {s['images_per_second']:.2f} | | | "
                 f"shard 0 again: tar identical {s['shard0_tar_identical']}, parquet identical "
                 f"{s['shard0_parquet_identical']} |")
    lines.append("")
    lines.append(f"total {r['total_seconds']:.0f} s" + ("; " + "; ".join(r["notes"]) if r["notes"] else ""))
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the tiny CPU-sized run even where CUDA is available")
    parser.add_argument("--out", help="folder to write bench-gpu.json and bench-gpu.md into (default: print only)")
    parser.add_argument("--cpu-preset", choices=sorted(CPU_PRESETS), default="tiny",
                        help="smoke mode's workload: tiny (seconds; the test) or toy (the demo's teacher size and "
                             "300 iterations; minutes) (default: tiny)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run compared measurements alternately this many times and keep each one's fastest "
                             "(default: 1)")
    parser.add_argument("--compile-modes", default=None,
                        help="comma-separated torch.compile modes to measure against eager, or 'none' "
                             "(default: default,reduce-overhead on CUDA; default in smoke mode)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    modes: tuple[str, ...] | None = None
    if args.compile_modes is not None:
        modes = () if args.compile_modes == "none" else tuple(m.strip() for m in args.compile_modes.split(","))
        bad = [m for m in modes if m not in COMPILE_MODES or m == "off"]
        if bad:
            print(f"--compile-modes: expected 'none' or modes among default, reduce-overhead, got {bad[0]!r}",
                  file=sys.stderr)
            return 2
    if args.repeats < 1:
        print(f"--repeats: must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    if torch.cuda.is_available() and not args.smoke:
        plan = full_plan(modes) if modes is not None else full_plan()
    else:
        preset = CPU_PRESETS[args.cpu_preset]
        plan = preset(modes) if modes is not None else preset()
        why = "--smoke given" if args.smoke else "no CUDA device"
        plan.notes.append(f"SMOKE MODE ({why}): a small ViT ({args.cpu_preset} preset) on the CPU, {plan.iterations} "
                          "iterations; not a GPU measurement")
        print(f"bench-gpu: {plan.notes[-1]}", file=sys.stderr)
    plan = replace(plan, repeats=args.repeats)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
            report = run(plan, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - the CLI contract: exit 1 with the reason
        print(f"bench-gpu: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    table = markdown(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench-gpu.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "bench-gpu.md").write_text(table + "\n")
    print(table)
    emit_json(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
