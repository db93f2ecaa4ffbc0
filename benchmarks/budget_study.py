"""Budget study: what a student learns per FLOP of generation, over inversion iterations (issue 32).

For each suite teacher, seed and iteration count, :func:`benchmarks.quality_suite.run_one` writes a dense
and an SMI corpus of the same images per class with the recipe at that iteration count (dense and SMI
alternating class by class in one process, so their seconds are side by side), distils the same student
from each against the live teacher and scores it on the teacher's held-out images. The engine counts each
corpus's FLOPs. The lowest iteration count of the first seed also distils a Gaussian-noise corpus (the floor).

    python benchmarks/budget_study.py --teachers shapes64,digits64 --seeds 0,1,2 --iterations 25,50,100,200 \\
        --per-class 32 --steps 1000 --parallel-students --out /tmp/budget \\
        --json benchmarks/results/budget_study.json --plot docs/budget_study.png
    python benchmarks/budget_study.py --quick --out /tmp/budget-quick      # smoke: tiny teachers, toy sizes
    python benchmarks/budget_study.py --out /tmp/budget --finished-only ...  # what an unfinished study has so far

Each (iterations, teacher, seed) result lives under ``OUT/iters<N>/<teacher>/seed<k>/result.json`` and is
reused when its settings match, so an interrupted study resumes. ``--json`` gets the document: per teacher
and point (method, iterations), FLOPs and seconds per image and the student's top-1 (mean / sd over seeds);
and per SMI point what issue 32 asks of it: its gap to the best dense student, and its FLOPs and seconds as a
share of the cheapest dense point whose student is at least as good. ``--plot``: top-1 against FLOPs per
image, one panel per teacher. The last stdout line is the JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
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

log = logging.getLogger("budget_study")

FORMAT = "budget-study-v1"
METHODS = ("dense", "smi")  # run at every point; --rebirth adds patch rebirth (smi_core.selection)
SPARSE = ("smi", "rebirth")  # the methods judged against the dense curve
NAMES = quality_suite.NAMES  # as tables name them


def point_corpora(seed: int, iterations: int, args: argparse.Namespace) -> list[str]:
    """The corpora distilled at (seed, iterations): dense and SMI; noise too at the first seed's lowest point."""
    floor = seed == args.seeds[0] and iterations == min(args.iterations) and not args.no_noise
    return ["noise", *METHODS] if floor else list(METHODS)


def suite_argv(name: str, seed: int, iterations: int, args: argparse.Namespace, rebirth: bool = False) -> list[str]:
    """``quality_suite``'s command line for one point of teacher ``name`` (no quantization); ``rebirth``: the
    point's rebirth student, in a run of its own (``OUT/rebirth-iters<N>``: its corpora timed beside dense's)."""
    corpora, folder = (["rebirth"], f"rebirth-iters{iterations}") if rebirth else \
        (point_corpora(seed, iterations, args), f"iters{iterations}")
    return ["--teachers", name, "--classes", str(args.classes), "--per-class", str(args.per_class),
            "--iterations", str(iterations), "--steps", str(args.steps),
            "--corpora", ",".join(corpora), "--out", str(args.out / folder), *suite_study.suite_flags(args)]


def with_rebirth(result: dict[str, Any], rebirth: dict[str, Any]) -> dict[str, Any]:
    """The point's ``result`` with the rebirth corpus of its own run ``rebirth``, whose seconds are compared with
    the dense corpus timed beside it (``dense_gen_seconds``)."""
    cell = {**rebirth["corpora"]["rebirth"], "dense_gen_seconds": rebirth["corpora"]["dense"]["gen_seconds"]}
    return {**result, "corpora": {**result["corpora"], "rebirth": cell}}


def curve(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One teacher's points from its ``quality_suite`` results (each one (seed, iterations)): per method and
    iteration count, FLOPs and generation seconds per image and the student's top-1 over seeds."""
    images = results[0]["images_per_corpus"]
    points = []
    for method in (m for m in ("dense", *SPARSE) if any(m in r["corpora"] for r in results)):
        for iterations in sorted({r["iterations"] for r in results if method in r["corpora"]}):
            runs = [r for r in results if r["iterations"] == iterations and method in r["corpora"]]
            cells = [r["corpora"][method] for r in runs]
            points.append({
                "method": method, "iterations": iterations, "seeds": len(cells),
                "flops_per_image": statistics.fmean(c["flops"] / images for c in cells),
                "seconds_per_image": statistics.fmean(c["gen_seconds"] / images for c in cells),
                "confidence": statistics.fmean(c.get("confidence", math.nan) for c in cells),
                "student_top1": quality_seeds.spread([c["student_top1"] for c in cells]),
                # its generation seconds over dense's of the same runs (side by side in one process)
                "time_vs_dense": statistics.fmean(
                    c["gen_seconds"] / c.get("dense_gen_seconds", r["corpora"]["dense"]["gen_seconds"])
                    for c, r in zip(cells, runs)),
            })
    noise = [r["corpora"]["noise"]["student_top1"] for r in results if "student_top1" in r["corpora"].get("noise", {})]
    return {"teacher": name, "heldout_teacher": name in suite.HELDOUT_TEACHERS, "images_per_corpus": images,
            "teacher_top1": statistics.fmean(r["teacher_top1"] for r in results),
            "noise_top1": quality_seeds.spread(noise) if noise else None, "points": points,
            "verdicts": verdicts(points)}


def verdicts(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SMI or rebirth point, on the means over seeds: its top-1's gap to the best dense point, and its FLOPs
    and seconds as a share of the cheapest dense point whose student is at least as good, or of the best dense
    point when none is (``above_dense``: the point beats the whole dense curve)."""
    dense = [p for p in points if p["method"] == "dense"]
    best_dense = max(dense, key=lambda d: d["student_top1"]["mean"])
    best = best_dense["student_top1"]["mean"]
    out = []
    for p in (p for p in points if p["method"] in SPARSE):
        top1 = p["student_top1"]["mean"]
        reaching = [d for d in dense if d["student_top1"]["mean"] >= top1]
        cheapest = min(reaching, key=lambda d: d["flops_per_image"]) if reaching else best_dense
        out.append({
            "method": p["method"], "iterations": p["iterations"], "student_top1": top1, "gap_to_best_dense": top1 - best,
            "above_dense": not reaching, "cheapest_dense_iterations": cheapest["iterations"],
            "flops_share": p["flops_per_image"] / cheapest["flops_per_image"],
            "seconds_share": p["seconds_per_image"] / cheapest["seconds_per_image"],
            "goal_met": top1 >= best - 0.01 and p["flops_per_image"] <= cheapest["flops_per_image"] / 8,
        })
    return out


def plot_png(curves: list[dict[str, Any]]) -> bytes:
    """Student top-1 against generation FLOPs per image (log axis), one panel per teacher: dense, SMI (and rebirth)
    curves over iterations (mean over seeds, sd as a bar, iterations labelled), noise dashed, teacher dotted."""
    from PIL import Image, ImageDraw

    from render import DENSE, GREY, NOISE, REBIRTH, SMI, S, Axes, dashed, draw_axes, font, hline, legend, marker, png

    styles = {"dense": (DENSE, "circle"), "smi": (SMI, "diamond"), "rebirth": (REBIRTH, "square")}
    pw, h = 420, 400
    img = Image.new("RGB", (S * pw * len(curves), S * h), "white")
    d = ImageDraw.Draw(img)
    for i, c in enumerate(curves):
        flops = [p["flops_per_image"] for p in c["points"]]
        lo, hi = math.floor(math.log10(min(flops)) * 4) / 4, math.ceil(math.log10(max(flops)) * 4) / 4
        ax = Axes(i * pw + 70, 50, (i + 1) * pw - 20, h - 55, (lo - 0.05, hi + 0.05), (0.0, 105.0))
        ticks = [(math.log10(v), si(v)) for e in range(math.floor(lo), math.ceil(hi) + 1) for v in
                 (10.0**e, 2 * 10.0**e, 5 * 10.0**e) if lo - 0.05 <= math.log10(v) <= hi + 0.05]
        seeds = max(p["seeds"] for p in c["points"])
        draw_axes(img, ax, ticks, [(v, f"{v:g}") for v in range(0, 101, 20)], "generation FLOPs per image (log)",
                  "student top-1 (%)", f"{c['teacher']}{' (held out)' if c['heldout_teacher'] else ''}, "
                  f"{seeds} seed{'s' if seeds > 1 else ''}; labels: iterations")
        hline(d, ax, 100 * c["teacher_top1"], GREY, 2, 3)
        if c["noise_top1"] is not None:
            hline(d, ax, 100 * c["noise_top1"]["mean"], NOISE, 6, 4)
        for method, (colour, shape) in styles.items():
            line = []
            for p in (p for p in c["points"] if p["method"] == method):
                x, top1 = math.log10(p["flops_per_image"]), p["student_top1"]
                (px, py), (_, top), (_, bottom) = (ax.px(x, 100 * top1["mean"]), ax.px(x, 100 * (top1["mean"] + top1["sd"])),
                                                   ax.px(x, 100 * (top1["mean"] - top1["sd"])))
                d.line([(px, top), (px, bottom)], fill=colour, width=S)
                marker(d, (px, py), shape, colour, 4.5)
                d.text((px + 6 * S, py + (-6 if method == "dense" else 6) * S), str(p["iterations"]), fill=colour,
                       font=font(9), anchor="lb" if method == "dense" else "lt")
                line.append((px, py))
            if len(line) > 1:
                d.line(line, fill=colour, width=2 * S)
    drawn = {p["method"] for c in curves for p in c["points"]}
    methods = [(NAMES[m], lambda xy, m=m: marker(d, xy, styles[m][1], styles[m][0], 4.5)) for m in styles if m in drawn]
    legend(d, 60, 8, [*methods,
                      ("noise student", lambda xy: dashed(d, xy[0] - 8 * S, xy[0] + 8 * S, xy[1], NOISE, 6, 4)),
                      ("teacher", lambda xy: dashed(d, xy[0] - 8 * S, xy[0] + 8 * S, xy[1], GREY, 2, 3))])
    return png(img)


def si(value: float) -> str:
    """``value`` with an SI prefix: ``si(2e9) == "2G"``."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{prefix}"
    return f"{value:g}"


def with_report(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` plus the rows ``benchmarks/render.py`` tabulates: one per (teacher, method, iterations), each SMI or
    rebirth point beside the dense point of the same iterations."""
    figures = []
    for c in doc["curves"]:
        by_point = {(v["method"], v["iterations"]): v for v in c["verdicts"]}
        dense = {p["iterations"]: p for p in c["points"] if p["method"] == "dense"}
        for sparse in (p for p in c["points"] if p["method"] in SPARSE):
            d, v = dense[sparse["iterations"]], by_point[sparse["method"], sparse["iterations"]]
            top1 = lambda p: f"{100 * p['student_top1']['mean']:.2f} ({100 * p['student_top1']['sd']:.2f})"  # noqa: E731
            figures.append({
                "teacher": c["teacher"] + (" (held out)" if c["heldout_teacher"] else ""),
                "method": NAMES[sparse["method"]], "iterations": sparse["iterations"], "seeds": sparse["seeds"],
                "dense_mflops": round(d["flops_per_image"] / 1e6, 1), "dense_top1": top1(d), "top1": top1(sparse),
                "conf": round(sparse["confidence"], 3),
                "flops_pct": round(100 * sparse["flops_per_image"] / d["flops_per_image"], 1),
                "time_pct": round(100 * sparse["time_vs_dense"], 1),
                "gap": round(100 * v["gap_to_best_dense"], 2),
                "vs_dense": f"{100 * v['flops_share']:.1f}% (dense {v['cheapest_dense_iterations']}"
                            f"{', above every dense point' if v['above_dense'] else ''})",
            })
    s = doc["settings"]
    noise = "; ".join(f"{c['teacher']} {100 * c['noise_top1']['mean']:.2f}%" for c in doc["curves"] if c["noise_top1"])
    return {**doc, "section": "budget", "title": "Student top-1 against generation FLOPs",
            "setup": (f"Per teacher, {s['classes']} classes x {s['per_class']} images per corpus, the recipe "
                      f"'{s['recipe']}' at {', '.join(map(str, s['iterations']))} iterations, dense and SMI (and "
                      "rebirth, in a run of its own beside a dense corpus) alternating class by class in one process; "
                      f"a {s['student']} student distilled {s['distill_steps']} steps from each against the live "
                      "teacher, top-1 % on the teacher's held-out images, mean (sd) over seeds. Dense MFLOPs: "
                      "generation FLOPs per image, counted by the engine (rebirth: a run's FLOPs over the four images "
                      "it yields per target). FLOPs %, s %: the method's FLOPs and seconds (side by side) as a share "
                      "of dense's at the same iterations. Gap: the method minus the best dense point, in points. Vs "
                      "dense: its FLOPs as a share of the cheapest dense point whose student is at least as good "
                      f"(issue 32 asks for 1/8 within a point of the best dense). Noise students: {noise or 'not run'}."),
            "columns": {"teacher": "teacher", "method": "method", "iterations": "iterations", "seeds": "seeds",
                        "dense_mflops": "dense MFLOPs / image", "dense_top1": "dense top-1", "top1": "top-1",
                        "conf": "target conf", "flops_pct": "FLOPs % of dense", "time_pct": "s % of dense",
                        "gap": "gap to best dense", "vs_dense": "FLOPs vs dense"},
            "figures": figures}


def print_table(curves: list[dict[str, Any]]) -> None:
    print(f"{'teacher':12} {'method':6} {'iters':>5} {'MFLOP/img':>10} {'ms/img':>8} {'top-1':>16} {'conf':>6}")
    for c in curves:
        for p in c["points"]:
            t = p["student_top1"]
            print(f"{c['teacher']:12} {p['method']:6} {p['iterations']:5d} {p['flops_per_image'] / 1e6:10.1f} "
                  f"{1000 * p['seconds_per_image']:8.1f} {100 * t['mean']:7.2f}% ({100 * t['sd']:5.2f}) "
                  f"{p['confidence']:6.3f}")
        for v in c["verdicts"]:
            share = f"{100 * v['flops_share']:.1f}% of dense {v['cheapest_dense_iterations']}" + \
                (" (above every dense point)" if v["above_dense"] else "")
            print(f"{c['teacher']:12} {NAMES[v['method']]} {v['iterations']}: {100 * v['gap_to_best_dense']:+.2f} points to the best "
                  f"dense; FLOPs {share}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny teachers (5 steps, own cache under OUT), "
                   "shapes64, 3 classes x 2 images, 4 and 8 iterations, 4 distillation steps")
    p.add_argument("--teachers", default="shapes64,digits64", help=f"some of {', '.join(suite.ALL_TEACHERS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--iterations", default="25,50,100,200", help="comma-separated inversion iteration counts")
    p.add_argument("--classes", type=int, default=10, help="first N classes of each teacher")
    p.add_argument("--per-class", type=int, default=32, help="images per class in every corpus")
    p.add_argument("--steps", type=int, default=1000, help="distillation steps per corpus")
    p.add_argument("--no-noise", action="store_true", help="distil no noise corpus")
    p.add_argument("--rebirth", action="store_true",
                   help="also patch rebirth at every point (a run of its own per point, under OUT/rebirth-iters<N>)")
    p.add_argument("--finished-only", action="store_true",
                   help="run nothing: summarise the points already finished under --out (each point counts its seeds)")
    suite_study.add_common_arguments(p, "budget_study")
    args = p.parse_args(argv)
    if args.quick:
        args.teachers, args.classes, args.per_class, args.iterations, args.steps = "shapes64", 3, 2, "4,8", 4
        args.teacher_steps = args.teacher_steps or 5
        args.eval_images = args.eval_images or 60
    args.teachers = [t for t in args.teachers.split(",") if t]
    if not args.teachers or set(args.teachers) - set(suite.ALL_TEACHERS):
        p.error(f"--teachers: expected some of {', '.join(suite.ALL_TEACHERS)}, got {args.teachers}")
    for flag in ("seeds", "iterations"):
        try:
            values = [int(s) for s in getattr(args, flag).split(",") if s]
        except ValueError:
            p.error(f"--{flag}: expected comma-separated integers, got {getattr(args, flag)!r}")
        if not values or len(set(values)) != len(values) or min(values) < (0 if flag == "seeds" else 2):
            p.error(f"--{flag}: expected distinct integers >= {0 if flag == 'seeds' else 2}, got {values}")
        setattr(args, flag, values)
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # as quality_suite's main: generation in this process, timed
    tmp = suite_study.open_out(args, "smi-budget-study-")
    start = time.perf_counter()
    curves = []
    for name in args.teachers:
        results = []
        for seed in args.seeds:
            for iterations in args.iterations:
                run = quality_suite.finished if args.finished_only else quality_suite.run_one
                if (result := run(name, seed, quality_suite.parse_args(suite_argv(name, seed, iterations, args)))) is None:
                    continue
                if args.rebirth:
                    qargs = quality_suite.parse_args(suite_argv(name, seed, iterations, args, rebirth=True))
                    if (rebirth := run(name, seed, qargs)) is not None:
                        result = with_rebirth(result, rebirth)
                results.append(result)
        if results:
            curves.append(curve(name, results))
    if not curves:
        raise SystemExit(f"budget_study: no finished point under {args.out}")
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_bytes(plot_png(curves))
    doc = {
        **suite_study.record(FORMAT, "budget_study", argv, args),
        "settings": {"classes": args.classes, "per_class": args.per_class, "iterations": args.iterations,
                     "rebirth": args.rebirth,
                     "distill_steps": args.steps, "seeds": args.seeds, "recipe": args.recipe, "student": "test_resnet",
                     "teacher_steps": args.teacher_steps or "recipe"},
        "curves": curves, "wall_seconds": time.perf_counter() - start,
    }
    doc = with_report(json.loads(json.dumps(doc, default=float)))
    print_table(curves)
    suite_study.publish(doc, args)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
