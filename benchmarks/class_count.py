"""Class-count study: what dense, SMI and noise corpora teach as a teacher's classes grow (issue 28).

One family of teachers (:mod:`pipeline.teachers.suite`: the glyph renderer, a 56 px ViT of 196 patches):
``glyphs196`` (10 capitals), ``glyphs30x196`` (30 glyphs of six scripts) and ``glyphs100x196`` (100).
For each teacher and seed, :func:`benchmarks.quality_suite.run_one` writes the corpora at the same
number of images per class (all of the teacher's classes), distils the same student from each against
the live teacher, and scores it on the teacher's held-out images; dense and SMI generation are timed
side by side. The held-out many-class teacher (``glyphs100x196b``) is left out unless named.

    python benchmarks/class_count.py --per-class 8 --iterations 200 --steps 400 \\
        --json benchmarks/results/class_count.json --plot docs/class_count.png
    python benchmarks/class_count.py --quick --out /tmp/cc-quick        # smoke: tiny teachers, toy sizes

Writes ``--json`` (command, commit, date, machine, settings, one row per teacher: its classes, teacher
top-1, each corpus's student top-1 and share of the teacher as mean / sd over seeds, generation seconds)
and ``--plot``: the students' share of the teacher against classes (drawn with Pillow, as
``benchmarks/render.py`` draws its plots). The
per-(teacher, seed) results live under ``OUT/<teacher>/seed<k>/result.json`` (reused when the settings
match). The last stdout line is the JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_seeds  # noqa: E402  (benchmarks/quality_seeds.py: mean / sd)
import quality_suite  # noqa: E402  (benchmarks/quality_suite.py: corpora and students per teacher)
import suite_study  # noqa: E402  (benchmarks/suite_study.py: what the suite's studies share)
from pipeline.teachers import suite  # noqa: E402

log = logging.getLogger("class_count")

FORMAT = "class-count-v1"
DEFAULT_TEACHERS = ("glyphs196", "glyphs30x196", "glyphs100x196")
STUDENTS = ("noise", "dense", "smi", "real")


def suite_argv(name: str, args: argparse.Namespace) -> list[str]:
    """``quality_suite``'s command line for teacher ``name``: all of its classes, this study's sizes, no
    quantization (this study's rows are students' shares of the teacher)."""
    return ["--teachers", name, "--classes", str(len(suite.suite_teacher(name).class_names)),
            "--per-class", str(args.per_class), "--iterations", str(args.iterations), "--steps", str(args.steps),
            "--corpora", ",".join(args.corpora), "--out", str(args.out), *suite_study.suite_flags(args)]


def teacher_row(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One teacher's seeds, as the study's table row (mean / sd over seeds)."""
    row: dict[str, Any] = {
        "teacher": name, "classes": len(suite.suite_teacher(name).class_names), "heldout_teacher":
        name in suite.HELDOUT_TEACHERS, "num_patches": results[0]["num_patches"], "seeds": [r["seed"] for r in results],
        "teacher_top1": quality_seeds.spread([r["teacher_top1"] for r in results]),
        "teacher_train_seconds": results[0]["teacher_meta"]["train_seconds"],
        "eval_images": results[0]["eval_images"], "images_per_corpus": results[0]["images_per_corpus"],
        "distill_epochs": results[0]["epochs"],
        "smi_vs_dense_time": quality_seeds.spread([r["smi_vs_dense_time"] for r in results]), "corpora": {},
    }
    for kind in STUDENTS:
        cells = [r["corpora"][kind] for r in results if kind in r["corpora"]]
        entry: dict[str, Any] = {"gen_seconds": quality_seeds.spread([c["gen_seconds"] for c in cells])}
        if all("student_top1" in c for c in cells):
            entry.update(student_top1=quality_seeds.spread([c["student_top1"] for c in cells]),
                         student_vs_teacher=quality_seeds.spread([c["student_vs_teacher"] for c in cells]),
                         distill_seconds=quality_seeds.spread([c["distill_seconds"] for c in cells]))
        row["corpora"][kind] = entry
    return row


def plot_png(rows: list[dict[str, Any]]) -> bytes:
    """The students' share of the teacher against the teacher's classes (log axis), drawn with Pillow:
    the tuning family joined by lines (mean over seeds, sd as a bar), held-out teachers as open markers."""
    from PIL import Image, ImageDraw

    from render import DENSE, GREY, INK, NOISE, SMI, S, Axes, draw_axes, legend, marker, png

    styles = {"dense": (DENSE, "circle"), "smi": (SMI, "diamond"), "noise": (NOISE, "circle"), "real": (GREY, "diamond")}
    classes = sorted({r["classes"] for r in rows})
    lo, hi = math.log10(min(classes)) - 0.12, math.log10(max(classes)) + 0.12
    w, h = 560, 400
    ax = Axes(70, 50, w - 25, h - 55, (lo, hi), (0.0, 105.0))
    img = Image.new("RGB", (S * w, S * h), "white")
    d = ImageDraw.Draw(img)
    per_class = rows[0]["images_per_corpus"] // rows[0]["classes"]
    seeds = max(len(r["seeds"]) for r in rows)
    draw_axes(img, ax, [(math.log10(c), str(c)) for c in classes], [(v, f"{v:g}") for v in range(0, 101, 20)],
              "teacher classes (glyph family, 196 patches; log scale)", "student top-1 / teacher top-1 (%)",
              f"{per_class} images per class, {seeds} seed{'s' if seeds > 1 else ''} (bars: sd)")
    shown = []
    for kind, (colour, shape) in styles.items():
        points = []
        for r in sorted(rows, key=lambda r: r["classes"]):
            share = r["corpora"].get(kind, {}).get("student_vs_teacher")
            if share is None:
                continue
            held = r["heldout_teacher"]
            x = math.log10(r["classes"]) + (0.03 if held else 0.0)
            y, sd = 100 * share["mean"], 100 * share["sd"]
            (px, py), (_, top), (_, bottom) = ax.px(x, y), ax.px(x, y + sd), ax.px(x, y - sd)
            d.line([(px, top), (px, bottom)], fill=colour, width=S)
            marker(d, (px, py), shape, colour, 4.5, filled=not held)
            if not held:
                points.append((px, py))
        if len(points) > 1:
            d.line(points, fill=colour, width=2 * S)
        if any("student_vs_teacher" in r["corpora"].get(kind, {}) for r in rows):
            shown.append(kind)
    items = [(k if k != "smi" else "SMI", lambda xy, k=k: marker(d, xy, styles[k][1], styles[k][0], 4.5)) for k in shown]
    if any(r["heldout_teacher"] for r in rows):
        items.append(("open: held-out teacher", lambda xy: marker(d, xy, "circle", INK, 4.5, filled=False)))
    legend(d, 60, 8, items)
    return png(img)


def write_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """:func:`plot_png` of ``rows``, written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plot_png(rows))


def print_table(rows: list[dict[str, Any]]) -> None:
    pct = lambda c, k: f"{100 * c[k]['mean']:6.2f}%" if k in c else f"{'-':>7}"  # noqa: E731
    print(f"{'teacher':15} {'classes':>7} {'teacher':>8} {'noise':>16} {'dense':>16} {'SMI':>16} {'real':>16} "
          f"{'dense s':>8} {'SMI s':>8} {'SMI/dense t':>11}")
    for r in rows:
        c = r["corpora"]
        cell = lambda k: (f"{pct(c[k], 'student_top1')} ({pct(c[k], 'student_vs_teacher').strip()})"  # noqa: E731
                          if k in c and "student_top1" in c[k] else f"{'-':>16}")
        print(f"{r['teacher']:15} {r['classes']:7d} {100 * r['teacher_top1']['mean']:7.2f}% {cell('noise'):>16} "
              f"{cell('dense'):>16} {cell('smi'):>16} {cell('real'):>16} {c['dense']['gen_seconds']['mean']:8.1f} "
              f"{c['smi']['gen_seconds']['mean']:8.1f} {100 * r['smi_vs_dense_time']['mean']:10.1f}%")
    print("cells: student top-1 (its share of the teacher), mean over seeds; seconds: generation of the corpus")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny teachers (5 steps, own cache under OUT), "
                   "glyphs196 and glyphs30x196, 2 images per class, 4 iterations, 4 distillation steps")
    p.add_argument("--teachers", default=",".join(DEFAULT_TEACHERS), help=f"some of {', '.join(suite.ALL_TEACHERS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--per-class", type=int, default=8, help="images per class in every corpus")
    p.add_argument("--iterations", type=int, default=200, help="inversion iterations (dense and SMI)")
    p.add_argument("--steps", type=int, default=400, help="distillation steps per corpus (the same for every teacher)")
    p.add_argument("--corpora", default="noise,dense,smi", help="corpora to distil (all four are generated)")
    suite_study.add_common_arguments(p, "class_count")
    args = p.parse_args(argv)
    if args.quick:
        args.teachers, args.per_class, args.iterations, args.steps = "glyphs196,glyphs30x196", 2, 4, 4
        args.teacher_steps = args.teacher_steps or 5
        args.eval_images = args.eval_images or 60
    args.teachers = [t for t in args.teachers.split(",") if t]
    if not args.teachers or set(args.teachers) - set(suite.ALL_TEACHERS):
        p.error(f"--teachers: expected some of {', '.join(suite.ALL_TEACHERS)}, got {args.teachers}")
    args.corpora = [c for c in args.corpora.split(",") if c]
    if not args.corpora or set(args.corpora) - set(STUDENTS):
        p.error(f"--corpora: expected some of {', '.join(STUDENTS)}, got {args.corpora}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds: expected at least one seed")
    return args


def with_report(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` plus the fields ``benchmarks/render.py`` tabulates: one row per teacher, each corpus's student
    top-1 % (share of the teacher) on the means over seeds, and generation seconds."""
    def share(row: dict[str, Any], corpus: str) -> str:
        c = row["corpora"].get(corpus)
        if c is None:
            return ""
        return f"{100 * c['student_top1']['mean']:.2f} ({100 * c['student_vs_teacher']['mean']:.1f}%)"

    figures = [{"teacher": r["teacher"] + (" (held out)" if r["heldout_teacher"] else ""), "classes": r["classes"],
                "teacher_top1": round(100 * r["teacher_top1"]["mean"], 2),
                **{c: share(r, c) for c in ("noise", "dense", "smi")},
                "smi_time": round(100 * r["smi_vs_dense_time"]["mean"], 1), "seeds": len(r["seeds"])}
               for r in doc["rows"]]
    s = doc["settings"]
    return {**doc, "section": "class_count", "title": "Students' share of the teacher against class count",
            "setup": (f"One glyph family at 196 patches; {s['per_class']} images per class, {s['iterations']} "
                      f"inversion iterations, {s['distill_steps']} distillation steps of a {s['student']} student; "
                      "cells: student top-1 % on the teacher's held-out images (share of the teacher's top-1)."),
            "columns": {"teacher": "teacher", "classes": "classes", "teacher_top1": "teacher %", "noise": "noise",
                        "dense": "dense", "smi": "SMI", "smi_time": "SMI / dense time %", "seeds": "seeds"},
            "figures": figures}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # as quality_suite's main: generation in this process, timed
    tmp = suite_study.open_out(args, "smi-class-count-")
    start = time.perf_counter()
    rows = []
    for name in args.teachers:
        qargs = quality_suite.parse_args(suite_argv(name, args))
        rows.append(teacher_row(name, [quality_suite.run_one(name, seed, qargs) for seed in args.seeds]))
    if args.plot is not None:
        write_plot(rows, args.plot)
    doc = {
        **suite_study.record(FORMAT, "class_count", argv, args),
        "settings": {"per_class": args.per_class, "iterations": args.iterations, "distill_steps": args.steps,
                     "seeds": args.seeds, "corpora": args.corpora, "recipe": args.recipe, "student": "test_resnet",
                     "teacher_steps": args.teacher_steps or "recipe"},
        "rows": rows, "wall_seconds": time.perf_counter() - start,
    }
    doc = with_report(json.loads(json.dumps(doc, default=float)))
    print_table(rows)
    suite_study.publish(doc, args)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
