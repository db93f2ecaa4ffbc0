"""Quantization calibration study: does a corpus calibrate a ViT's post-training quantizer as real images do?

For each suite teacher (:mod:`pipeline.teachers.suite`: ``shapes64``, ``digits64``, ``glyphs196``; trained
once and cached) and each seed, two small corpora of C classes x M images are inverted in-process with the
project's recipe (dense and SMI, :func:`quality_suite.write_inverted`, the project's corpus format), and the
teacher is quantized (:func:`pipeline.evaluate.quant.model.quantize_vit`) at each bit setting with four
calibration sets of the same size: the dense corpus, the SMI corpus (both read back through
:func:`pipeline.evaluate.quantize.calibration_samples`, as ``smi-synth quantize`` reads them), real training
images (:func:`pipeline.teachers.suite.real_images`, the train split: disjoint from the held-out split the
scores come from) and standard-normal noise in the normalised input space (the sets:
:func:`quality_suite.calibration_sets`; quantizing and scoring: :func:`pipeline.evaluate.quantize.quantize_and_score`). Each quantized model is scored on
the teacher's held-out images (a fixed class-mixed subset), beside the float teacher.

    python benchmarks/quant_calibration.py                      # all three teachers, seeds 0,1,2
    python benchmarks/quant_calibration.py --quick --out /tmp/q.json   # smoke: tiny teachers and sizes

Writes ``--out`` (default ``benchmarks/results/quant_calibration.json``: command, commit, date, machine,
settings, per teacher the top-1 of every (bits, calibration set, seed) and the goals of issue 29) and prints a
table; the last stdout line is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_suite  # noqa: E402  (benchmarks/quality_suite.py: in-process corpus generation)
from pipeline.console import emit_json  # noqa: E402
from pipeline.evaluate.common import EvalSet, top1  # noqa: E402
from pipeline.evaluate.quant.model import QuantSettings  # noqa: E402
from pipeline.evaluate.quantize import CalibrationSet, parse_bits, quantize_and_score  # noqa: E402
from pipeline.teachers import suite  # noqa: E402
from pipeline.teachers.loading import load_teacher  # noqa: E402
from pipeline.teachers.trainer import TrainRecipe  # noqa: E402
from smi_core.recipe import recommended_config  # noqa: E402

CALIB = ("dense", "smi", "real", "noise")
FORMAT = "quant-calibration-v1"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quant_calibration.json"


def eval_subset(name: str, limit: int) -> EvalSet:
    """``limit`` held-out images of ``name`` (a fixed seed-0 shuffle, so every class appears; 0: all)."""
    images, labels = suite.heldout_images(name)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    if limit:
        order = order[:limit]
    return EvalSet.from_tensors(f"{name}-heldout", images[order], labels[order])


def calibration_sets(name: str, teacher: Any, checkpoint: Path, seed: int, args: argparse.Namespace,
                     work: Path) -> tuple[dict[str, CalibrationSet], dict[str, float]]:
    """The four normalised calibration batches of one seed, and the corpora's generation seconds. The corpora
    come with their kept-patch masks (read as ``smi-synth quantize`` reads them): the SMI corpus calibrates
    the activation ranges on its kept tokens."""
    classes = len(teacher.class_names)
    roots = {m: work / name / f"seed{seed}" / m for m in ("dense", "smi")}
    configs = {m: recommended_config(m, args.iterations) for m in roots}
    timing = quality_suite.write_inverted(roots, configs, teacher, checkpoint, classes, args.per_class, seed)
    sets = quality_suite.calibration_sets(name, teacher, roots, classes, args.per_class, seed)
    return sets, {m: round(t["gen_seconds"], 2) for m, t in timing.items()}


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def run_teacher(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    recipe = TrainRecipe(steps=args.teacher_steps) if args.teacher_steps else None
    checkpoint, _meta = suite.load_or_build_suite_teacher(name, args.cache, recipe=recipe)
    teacher = load_teacher(str(checkpoint))
    model = teacher.model.eval()
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    heldout = eval_subset(name, args.eval_images)
    fp = top1(model, heldout, mean=mean, std=std)
    scores: dict[str, dict[str, list[float]]] = {label: {c: [] for c in CALIB} for label in args.labels}
    gen: list[dict[str, float]] = []
    started = time.process_time()
    for seed in args.seeds:
        sets, timing = calibration_sets(name, teacher, checkpoint, seed, args, work)
        gen.append(timing)
        measured = quantize_and_score(model, {c: sets[c] for c in CALIB}, args.bits,
                                      lambda qv: top1(qv, heldout, mean=mean, std=std))
        for label, by in measured.items():
            for c in CALIB:
                scores[label][c].append(by[c])
            row = "  ".join(f"{c} {100 * by[c]:.1f}" for c in CALIB)
            print(f"{name} seed {seed} {label}: {row}", file=sys.stderr, flush=True)
    rows = {label: {c: spread(v) for c, v in by.items()} for label, by in scores.items()}
    return {"teacher_top1": fp, "eval_images": heldout.num_images, "calib_images": len(teacher.class_names) * args.per_class,
            "generation_seconds": gen, "cpu_seconds": round(time.process_time() - started, 1), "rows": rows,
            "goals": goals(fp, rows)}


def goals(fp: float, rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Issue 29's goals on the means over seeds (W4A4 and W8A8 rows when measured)."""
    out: dict[str, Any] = {}
    if "W8A8" in rows:
        out["w8a8_within_1pt_of_float"] = {c: rows["W8A8"][c]["mean"] >= fp - 0.01 for c in CALIB}
    if "W4A4" in rows:
        r = {c: rows["W4A4"][c]["mean"] for c in CALIB}
        out["w4a4_calibration_matters"] = r["noise"] <= r["real"] - 0.10
        for c in ("dense", "smi"):
            out[f"w4a4_{c}_within_2pt_of_real"] = r[c] >= r["real"] - 0.02
            out[f"w4a4_{c}_10pt_above_noise"] = r[c] >= r["noise"] + 0.10
        out["w4a4_smi_within_1pt_of_dense"] = abs(r["smi"] - r["dense"]) <= 0.01
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"{'teacher':10} {'bits':5} {'float':>7} " + " ".join(f"{c:>13}" for c in CALIB))
    for name, t in result["teachers"].items():
        for label in result["settings"]["bits"]:
            row = t["rows"][label]
            cells = " ".join(f"{100 * row[c]['mean']:6.2f} ({100 * row[c]['sd']:.1f})" for c in CALIB)
            print(f"{name:10} {label:5} {100 * t['teacher_top1']:6.2f}% {cells}")
    print(f"cells: top-1 % mean over seeds {result['settings']['seeds']} (sd, points); "
          f"{result['settings']['per_class']} images per class per calibration set")
    for name, t in result["teachers"].items():
        print(f"{name}: {json.dumps(t['goals'], sort_keys=True)}")


def with_report(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the fields ``benchmarks/render.py`` tabulates (section, columns, one row per teacher
    and bit width with the mean top-1 % and sd over seeds per calibration set, notes on the goals)."""
    figures = []
    for name, t in result["teachers"].items():
        for label in result["settings"]["bits"]:
            row = t["rows"][label]
            figures.append({"teacher": name, "bits": label, "float": round(100 * t["teacher_top1"], 2),
                            **{c: f"{100 * row[c]['mean']:.2f} ({100 * row[c]['sd']:.1f})" for c in CALIB}})
    settings = result["settings"]
    notes = []
    for name, t in result["teachers"].items():
        if not {"W4A4", "W8A8"} <= t["rows"].keys():
            continue
        m = {c: 100 * t["rows"]["W4A4"][c]["mean"] for c in CALIB}
        w8 = all(100 * t["rows"]["W8A8"][c]["mean"] >= 100 * t["teacher_top1"] - 1 for c in ("dense", "smi", "real"))
        notes.append(f"{name}, W4A4 means: noise {m['noise'] - m['real']:+.1f} points from real, dense "
                     f"{m['dense'] - m['real']:+.1f}, SMI {m['smi'] - m['real']:+.1f}, SMI - dense "
                     f"{m['smi'] - m['dense']:+.1f}; W8A8 on corpora and real images within 1 point of float: "
                     f"{'yes' if w8 else 'no'} (`{t['run']['command']}`, commit {str(t['run']['commit'])[:7]})")
    return {**result, "section": "quant", "title": "Post-training quantization by calibration set",
            "setup": (f"The corpus's teacher fake-quantized (per-channel searched weights, searched activation "
                      f"ranges at every matmul input, log-base softmax, twin-uniform GELU, LayerNorm reparameterised "
                      f"per channel) and calibrated on {settings['per_class']} images per class of each set: a dense "
                      f"and an SMI corpus ({settings['iterations']} iterations; the SMI corpus calibrates on its "
                      f"kept tokens), real training images disjoint from the evaluation set, Gaussian noise; "
                      f"top-1 % on {settings['eval_images']} held-out images, mean (sd) over seeds {settings['seeds']}."),
            "columns": {"teacher": "teacher", "bits": "bits", "float": "float %", **{c: f"{c} %" for c in CALIB}},
            "figures": figures, "notes": notes}


def merge_results(previous: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the teachers of ``previous`` it did not measure, when both have the same settings
    (each teacher keeps its own ``run``: command, commit, date); else ``result`` alone."""
    if previous.get("format") != FORMAT or previous.get("settings") != result["settings"]:
        print("--merge: the existing result has other settings; overwriting it", file=sys.stderr)
        return result
    merged = {**previous["teachers"], **result["teachers"]}
    return {**result, "teachers": {k: merged[k] for k in suite.TEACHERS if k in merged}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny teachers (5 training steps, own cache), 2 images per class, 4 iterations, "
                        "one seed, W8A8 and W4A4, 50 eval images")
    p.add_argument("--teachers", default=",".join(suite.TEACHERS), help=f"some of {', '.join(suite.TEACHERS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (corpora and calibration draws)")
    p.add_argument("--bits", default="W8A8,W6A6,W4A8,W4A4", help="bit settings")
    p.add_argument("--per-class", type=int, default=4, help="images per class in every calibration set")
    p.add_argument("--iterations", type=int, default=200, help="inversion iterations (dense and SMI)")
    p.add_argument("--eval-images", type=int, default=500, help="held-out images per teacher (0: all)")
    p.add_argument("--cache", type=Path, help="teacher cache root (default: the project's; --quick: a temporary one)")
    p.add_argument("--teacher-steps", type=int, default=0, help="train the teachers this many steps (0: their recipe)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON")
    p.add_argument("--merge", action="store_true",
                   help="keep the other teachers of an existing --out measured with the same settings")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.bits, args.per_class, args.iterations = "0", "W8A8,W4A4", 2, 4
        args.eval_images, args.teacher_steps = 50, args.teacher_steps or 5
    args.teachers = [t for t in args.teachers.split(",") if t]
    bad = [t for t in args.teachers if t not in suite.TEACHERS]
    if bad or not args.teachers:
        p.error(f"--teachers: expected some of {', '.join(suite.TEACHERS)}, got {args.teachers}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.bits = parse_bits(args.bits)
    args.labels = [f"W{w}A{a}" for w, a in args.bits]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="quant-calibration-"))
    if args.quick and args.cache is None:
        args.cache = work / "teachers-quick"
    try:
        started = time.time()
        teachers = {name: run_teacher(name, args, work) for name in args.teachers}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
           "commit": quality_suite.git_commit(), "date": quality_suite.utc_now(),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)",
           "wall_seconds": round(time.time() - started, 1)}
    for t in teachers.values():
        t["run"] = run
    result = {
        "format": FORMAT, **run,
        "settings": {"seeds": args.seeds, "bits": args.labels, "per_class": args.per_class,
                     "iterations": args.iterations, "eval_images": args.eval_images, "teacher_steps": args.teacher_steps,
                     "quantizer": json.loads(json.dumps(QuantSettings().__dict__)), "calibration_sets": list(CALIB),
                     "corpus_tokens": "kept"},
        "teachers": teachers,
    }
    if args.merge and args.out.is_file():
        result = merge_results(json.loads(args.out.read_text()), result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = with_report(result)
    args.out.write_text(json.dumps(result, indent=1) + "\n")  # insertion order: the table's column order
    print_table(result)
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
