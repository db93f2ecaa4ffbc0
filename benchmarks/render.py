"""Render BENCHMARKS.md and its plots from the measured results under ``benchmarks/results/*.json``.

    python benchmarks/render.py           # writes BENCHMARKS.md, docs/quality_vs_time.png, docs/speed_vs_flops.png
    python benchmarks/render.py --check   # exit 1 when those files differ from what the results render

A result file holds one measured command: ``command`` (a string or a list), ``commit``, ``date``,
``machine`` and ``figures`` (a list of row dicts); optionally ``section`` (which heading it goes under),
``title``, ``order`` (its place in the section), ``setup`` (a paragraph), ``columns`` (row key -> table
header, in order) and ``notes``. A file of a section this script does not know is rendered as a table of
its ``figures`` under its own heading. Plots are drawn with Pillow (already a dependency), deterministically: the same results and
Pillow version give the same bytes.
"""

import argparse
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_seeds import T95  # noqa: E402  (the t quantiles of the suite's own summary)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Section:
    key: str
    heading: str
    intro: str
    plot: str | None = None  # file name under docs/


SECTIONS = [
    Section("engine", "Engine speed against the FLOP limit",
            "Dense and SMI inversion of the same model, batch, seed and iteration count, side by side in one "
            "process. The counted FLOP ratio dense / SMI is the physical limit of SMI's speedup.",
            "speed_vs_flops.png"),
    Section("quality", "Quality per teacher",
            "What a corpus teaches: a student distilled from it, scored on the teacher's real held-out images, "
            "next to a student distilled the same way from Gaussian noise. Means over seeds (sd in points); the "
            "interval is the paired SMI - dense difference's 95% t interval."),
    Section("quality_time", "Quality against generation time",
            "The same students against what their corpora cost: each seed's dense and SMI student at its "
            "corpus's generation time (SMI's as a share of dense's, measured in one process); the dashed line "
            "is the noise student, the dotted one the teacher.",
            "quality_vs_time.png"),
    Section("budget", "Quality per FLOP",
            "What a student learns per FLOP of generation: dense, SMI and patch-rebirth corpora of the same images "
            "per class at several iteration counts, each point's student against the FLOPs the engine counted."),
    Section("studies", "What SMI's stops pick", ""),
    Section("quant", "Quantization calibration", ""),
    Section("class_count", "Class count", ""),
    Section("loader", "Loading and writing a corpus", ""),
    Section("driver", "The driver", ""),
    Section("node_loss", "Node loss", ""),
    Section("demo", "The demo", ""),
    Section("fresh_clone", "A fresh clone", ""),
    Section("plan", "Planning", ""),
    Section("gpu", "The GPU path", ""),
]
FILE_SECTIONS = {"quant_calibration": "quant", "class_count": "class_count"}  # files written without a section key


@dataclass(frozen=True)
class Result:
    name: str  # file stem
    section: str
    title: str
    commands: list[str]
    commit: str | None
    date: str | None
    machine: str | None
    setup: str | None
    columns: dict[str, str]
    figures: list[dict]
    notes: list[str]
    order: int  # place within its section (then the file name)
    plot: str | None = None  # a plot the measuring command drew, relative to the repository (shown when present)
    timing: dict | None = None  # distill_cost's alternating short runs: seconds per step per arm, and ratios


def load_results(results_dir: Path) -> list[Result]:
    """Every ``*.json`` under ``results_dir``, ordered by ``order`` (default 100), then file name."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        figures = data.get("figures")
        if not isinstance(figures, list) or not all(isinstance(row, dict) for row in figures):
            raise ValueError(f"{path}: 'figures' must be a list of rows (objects)")
        command = data.get("command") or []
        keys = list(dict.fromkeys(k for row in figures for k in row))
        notes = data.get("notes") or []
        results.append(Result(
            name=path.stem,
            section=str(data.get("section") or FILE_SECTIONS.get(path.stem, path.stem)),
            title=str(data.get("title") or path.stem.replace("_", " ")),
            commands=[command] if isinstance(command, str) else [str(c) for c in command],
            commit=data.get("commit"), date=data.get("date"), machine=data.get("machine"),
            setup=data.get("setup"),
            columns=dict(data.get("columns") or {k: k for k in keys}),
            figures=figures,
            notes=[notes] if isinstance(notes, str) else [str(n) for n in notes],
            order=int(data.get("order", 100)),
            plot=data.get("plot"),
            timing=data.get("timing") if isinstance(data.get("timing"), dict) else None,
        ))
    return sorted(results, key=lambda r: (r.order, r.name))


# ---- tables -------------------------------------------------------------------------------------------

def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,}" if abs(value) >= 1_000 else repr(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table; columns whose values are all numbers are right-aligned."""
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               and any(r[i] is not None for r in rows) for i in range(len(headers))]
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "".join(" ---: |" if n else " --- |" for n in numeric)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def result_block(r: Result, md_dir: Path = REPO) -> list[str]:
    """One result's heading, commands, setup, its plot (when the file exists), table and notes."""
    out = [f"### {r.title}", ""]
    if r.commands:
        out += ["```bash", *r.commands, "```", ""]
    where = ", ".join(x for x in [r.date, f"commit `{r.commit}`" if r.commit else None, r.machine] if x)
    text = " ".join(x for x in [f"Measured {where}." if where else None, r.setup] if x)
    out += [text, ""] if text else []
    if r.plot and (REPO / r.plot).is_file():
        out += [f"![{r.title}]({os.path.relpath(REPO / r.plot, md_dir).replace(os.sep, '/')})", ""]
    keys = list(r.columns)
    out += table([r.columns[k] for k in keys], [[row.get(k) for k in keys] for row in r.figures]) + [""]
    out += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
    return out


def fixed(x: float, places: int) -> str:
    """``x`` rounded half up at ``places`` decimals (25.25 -> 25.3, as a reader rounds)."""
    return f"{Decimal(repr(x)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)}"


def mean_sd(values: list[float]) -> str:
    if not values:
        return ""
    return fixed(statistics.fmean(values), 2) + (f" ({fixed(statistics.stdev(values), 1)})" if len(values) > 1 else "")


def paired_interval(diffs: list[float]) -> str:
    """Mean of the paired differences and its 95% t interval (as ``quality_seeds`` computes it)."""
    if len(diffs) < 2:
        return f"one seed: {plus(diffs[0])}" if diffs else ""
    m, t = statistics.fmean(diffs), T95.get(len(diffs) - 1)
    if t is None:
        return plus(m)
    half = t * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{plus(m)} ({plus(m - half)} to {plus(m + half)})"


def plus(x: float) -> str:
    return ("+" if x >= 0 else "") + fixed(x, 1)


def quality_rows(results: list[Result]) -> dict[str, list[dict]]:
    """Per teacher, its seed rows from every quality result (rows with dense and SMI students)."""
    by_teacher: dict[str, list[dict]] = {}
    for r in results:
        for row in r.figures:
            if r.section == "quality" and {"teacher", "dense_top1", "smi_top1"} <= row.keys():
                by_teacher.setdefault(str(row["teacher"]), []).append(row)
    return by_teacher


def quality_summary(by_teacher: dict[str, list[dict]]) -> list[str]:
    headers = ["teacher", "patches", "seeds", "teacher %", "noise %", "dense %", "SMI %", "dense / teacher",
               "SMI - dense, pt (95%)", "SMI / dense time %"]
    rows = []
    for teacher, seeds in by_teacher.items():
        dense, smi = [s["dense_top1"] for s in seeds], [s["smi_top1"] for s in seeds]
        noise = [s["noise_top1"] for s in seeds if s.get("noise_top1") is not None]
        times = [s["smi_dense_time_pct"] for s in seeds if s.get("smi_dense_time_pct") is not None]
        top = seeds[0].get("teacher_top1")
        rows.append([teacher, seeds[0].get("patches"), len(seeds), top, mean_sd(noise), mean_sd(dense), mean_sd(smi),
                     fixed(statistics.fmean(dense) / top, 3) if top else "",
                     paired_interval([b - a for a, b in zip(dense, smi)]),
                     fixed(statistics.fmean(times), 1) if times else ""])
    return table(headers, rows)


def distill_cost_summary(members: list[Result]) -> list[str]:
    """The distillation-cost results' means: for each arm beside ``before`` (rows ``seed``, ``before_top1``,
    ``ARM_s``, ``ARM_top1``; top-1 in %), over the seeds run in both, both arms' top-1 and the paired difference,
    and the arm's seconds as a share of before's: per step from the result's alternating short runs (``timing``)
    when it has them, else of the full runs' mean seconds (the arms of a seed side by side)."""
    out = []
    for r in members:
        arms = [k[:-2] for k in r.columns if k.endswith("_s") and k != "before_s"]
        for arm in arms:
            rows = [row for row in r.figures if all(row.get(k) is not None for k in
                                                     ("before_s", "before_top1", f"{arm}_s", f"{arm}_top1"))]
            if not rows:
                continue
            before, after = [row["before_top1"] for row in rows], [row[f"{arm}_top1"] for row in rows]
            timed = ((r.timing or {}).get("arms") or {}).get(arm, {}).get("per_step_ratio")
            if timed is not None:
                share = f"{100 * timed:.1f} (per step)"
            else:
                share = fixed(100 * statistics.fmean(row[f"{arm}_s"] for row in rows)
                              / statistics.fmean(row["before_s"] for row in rows), 1)
            out.append([arm, len(rows), mean_sd(before), mean_sd(after), share,
                        paired_interval([b - a for a, b in zip(before, after)])])
    if not out:
        return []
    return [*table(["arm", "seeds", "before top-1 %", "arm top-1 %", "arm / before s %",
                    "arm - before top-1, pt (95%)"], out), ""]


def quant_beside_students(results: list[Result], by_teacher: dict[str, list[dict]]) -> list[Result]:
    """``results`` with the quality section's quantization rows (rows with ``w4a4_dense``, one per teacher, as
    ``quality_suite.py --report`` writes them) given the students' dense and SMI top-1 (mean (sd) over the
    seeds of ``by_teacher``) beside their float column, where their own run distilled none."""
    out = []
    for r in results:
        if r.section != "quality" or not any("w4a4_dense" in row and "student_dense" not in row for row in r.figures):
            out.append(r)
            continue
        figures = []
        for row in r.figures:
            seeds = by_teacher.get(str(row.get("teacher")), [])
            if "student_dense" in row or not seeds:
                figures.append(row)
                continue
            figures.append({**row, "student_dense": mean_sd([s["dense_top1"] for s in seeds]),
                            "student_smi": mean_sd([s["smi_top1"] for s in seeds])})
        keys = list(r.columns)
        at = keys.index("float") + 1 if "float" in keys else len(keys)
        students = {"student_dense": "dense student %", "student_smi": "SMI student %"}
        columns = {k: r.columns[k] for k in keys[:at]} | students | {k: r.columns[k] for k in keys[at:]}
        out.append(replace(r, figures=figures, columns=columns))
    return out


# ---- plots ----------------------------------------------------------------------------------------------

S = 2  # drawn at twice the size, then downsampled: smooth lines with Pillow's aliased primitives
INK, GRID, GREY = (40, 40, 40), (225, 225, 225), (120, 120, 120)
DENSE, SMI, NOISE = (31, 119, 180), (255, 127, 14), (110, 110, 110)
REBIRTH = (44, 160, 44)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size * S)


@dataclass(frozen=True)
class Axes:
    left: int
    top: int
    right: int
    bottom: int
    x: tuple[float, float]
    y: tuple[float, float]

    def px(self, x: float, y: float) -> tuple[float, float]:
        fx = (x - self.x[0]) / (self.x[1] - self.x[0])
        fy = (y - self.y[0]) / (self.y[1] - self.y[0])
        return S * (self.left + fx * (self.right - self.left)), S * (self.bottom - fy * (self.bottom - self.top))


def draw_axes(img: Image.Image, ax: Axes, xticks: Sequence[tuple[float, str]], yticks: Sequence[tuple[float, str]],
              xlabel: str, ylabel: str, title: str) -> None:
    d, f = ImageDraw.Draw(img), font(11)
    for v, text in xticks:
        (x, y0), (_, y1) = ax.px(v, ax.y[0]), ax.px(v, ax.y[1])
        d.line([(x, y0), (x, y1)], fill=GRID, width=S)
        d.text((x, y0 + 4 * S), text, fill=INK, font=f, anchor="ma")
    for v, text in yticks:
        (x0, y), (x1, _) = ax.px(ax.x[0], v), ax.px(ax.x[1], v)
        d.line([(x0, y), (x1, y)], fill=GRID, width=S)
        d.text((x0 - 5 * S, y), text, fill=INK, font=f, anchor="rm")
    d.rectangle([S * ax.left, S * ax.top, S * ax.right, S * ax.bottom], outline=INK, width=S)
    d.text((S * (ax.left + ax.right) / 2, S * (ax.bottom + 20)), xlabel, fill=INK, font=f, anchor="ma")
    d.text((S * (ax.left + ax.right) / 2, S * (ax.top - 6)), title, fill=INK, font=font(12), anchor="md")
    label = Image.new("RGBA", (int(d.textlength(ylabel, font=f)) + 4 * S, 16 * S), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2 * S, 0), ylabel, fill=INK, font=f)
    label = label.rotate(90, expand=True)
    img.paste(label, (int(S * (ax.left - 48)), int(S * (ax.top + ax.bottom) / 2 - label.height / 2)), label)


def marker(d: ImageDraw.ImageDraw, xy: tuple[float, float], shape: str, colour: tuple[int, int, int],
           r: float, filled: bool = True) -> None:
    x, y, r = xy[0], xy[1], r * S
    fill = colour if filled else (255, 255, 255)
    if shape == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=S)
    elif shape == "square":
        d.rectangle([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=S)
    else:  # diamond
        d.polygon([(x, y - r * 1.3), (x + r * 1.3, y), (x, y + r * 1.3), (x - r * 1.3, y)], fill=fill, outline=colour,
                  width=S)


def dashed(d: ImageDraw.ImageDraw, x0: float, x1: float, y: float, colour: tuple[int, int, int], dash: int,
           gap: int) -> None:
    x = x0
    while x < x1:
        d.line([(x, y), (min(x + dash * S, x1), y)], fill=colour, width=2 * S)
        x += (dash + gap) * S


def hline(d: ImageDraw.ImageDraw, ax: Axes, y: float, colour: tuple[int, int, int], dash: int, gap: int) -> None:
    (x0, py), (x1, _) = ax.px(ax.x[0], y), ax.px(ax.x[1], y)
    dashed(d, x0, x1, py, colour, dash, gap)


def legend(d: ImageDraw.ImageDraw, x: int, y: int, items: Sequence[tuple[str, Callable[[tuple[float, float]], None]]]
           ) -> None:
    f = font(11)
    for text, draw_key in items:
        draw_key((S * (x + 8), S * (y + 7)))
        d.text((S * (x + 22), S * (y + 7)), text, fill=INK, font=f, anchor="lm")
        x += 36 + int(d.textlength(text, font=f) / S)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.resize((img.width // S, img.height // S), Image.Resampling.LANCZOS).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


PERCENT_TICKS = [(v, f"{v:g}") for v in range(0, 101, 20)]
SHARE_TICKS = [(v, f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1.0)]


def quality_plot(by_teacher: dict[str, list[dict]]) -> bytes:
    """Per teacher, each seed's dense and SMI student against the generation-time share; noise and teacher lines."""
    cols, pw, ph = 2, 330, 250
    rows = math.ceil(len(by_teacher) / cols)
    img = Image.new("RGB", (S * (cols * pw + 20), S * (rows * ph + 50)), "white")
    d = ImageDraw.Draw(img)
    for k, (teacher, seeds) in enumerate(by_teacher.items()):
        ox, oy = 20 + (k % cols) * pw, 40 + (k // cols) * ph
        ax = Axes(ox + 50, oy + 30, ox + pw - 20, oy + ph - 45, (0.0, 1.1), (0.0, 105.0))
        patches = f", {seeds[0]['patches']} patches" if seeds[0].get("patches") else ""
        draw_axes(img, ax, SHARE_TICKS, PERCENT_TICKS, "generation time, share of dense", "student top-1 %",
                  f"{teacher}{patches}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
        noise = [s["noise_top1"] for s in seeds if s.get("noise_top1") is not None]
        if seeds[0].get("teacher_top1"):
            hline(d, ax, seeds[0]["teacher_top1"], INK, 2, 3)
        if noise:
            hline(d, ax, statistics.fmean(noise), NOISE, 7, 4)
        for s in seeds:
            if s.get("smi_dense_time_pct") is not None:
                marker(d, ax.px(1.0, s["dense_top1"]), "circle", DENSE, 4.5, filled=False)
                marker(d, ax.px(s["smi_dense_time_pct"] / 100, s["smi_top1"]), "diamond", SMI, 4.5, filled=False)
        times = [s["smi_dense_time_pct"] / 100 for s in seeds if s.get("smi_dense_time_pct") is not None]
        if times:
            marker(d, ax.px(1.0, statistics.fmean(s["dense_top1"] for s in seeds)), "circle", DENSE, 3)
            marker(d, ax.px(statistics.fmean(times), statistics.fmean(s["smi_top1"] for s in seeds)), "diamond", SMI, 3)
    legend(d, 70, 8, [("dense (seeds: open; mean: filled)", lambda xy: marker(d, xy, "circle", DENSE, 4.5)),
                      ("SMI", lambda xy: marker(d, xy, "diamond", SMI, 4.5)),
                      ("noise student", lambda xy: dashed(d, xy[0] - 9 * S, xy[0] + 9 * S, xy[1], NOISE, 7, 4)),
                      ("teacher", lambda xy: dashed(d, xy[0] - 9 * S, xy[0] + 9 * S, xy[1], INK, 2, 3))])
    return png(img)


def speed_plot(points: list[tuple[str, float, float]]) -> bytes:
    """Measured speedup against the counted FLOP ratio, with the limit (speedup = FLOP ratio) and 90% of it."""
    w, h = 620, 440
    top = math.ceil(max(max(p[1], p[2]) for p in points) + 0.5)
    ax = Axes(70, 40, w - 30, h - 55, (1.0, float(top)), (1.0, float(top)))
    img = Image.new("RGB", (S * w, S * h), "white")
    d = ImageDraw.Draw(img)
    ticks = [(float(v), f"{v}x") for v in range(1, top + 1)]
    draw_axes(img, ax, ticks, ticks, "counted FLOP ratio, dense / SMI (the limit)", "measured speedup, dense / SMI",
              "SMI's speedup against its FLOP limit")
    d.line([ax.px(1, 1), ax.px(top, top)], fill=INK, width=S)
    d.line([ax.px(1, 0.9), ax.px(top, 0.9 * top)], fill=GREY, width=S)
    f = font(11)
    d.text(ax.px(top - 0.1, top - 0.25), "speedup = FLOP ratio", fill=INK, font=f, anchor="rm")
    d.text(ax.px(top - 0.1, 0.9 * top - 0.3), "90% of it", fill=GREY, font=f, anchor="rm")
    placed: list[tuple[float, float, float, float]] = []
    for label, flops, speed in sorted(points, key=lambda p: -p[2]):
        x, y = ax.px(flops, speed)
        marker(d, (x, y), "circle", DENSE, 4)
        box = d.textbbox((x - 8 * S, y), label, font=f, anchor="rm")
        while any(box[1] < b[3] and box[3] > b[1] and box[0] < b[2] and box[2] > b[0] for b in placed):
            box = (box[0], box[1] + 4 * S, box[2], box[3] + 4 * S)
        placed.append(box)
        d.rectangle([box[0] - S, box[1] - S, box[2] + S, box[3] + S], fill="white")
        d.text((box[2], (box[1] + box[3]) / 2), label, fill=INK, font=f, anchor="rm")
    return png(img)


def speed_points(results: list[Result]) -> list[tuple[str, float, float]]:
    return [(str(row.get("workload", r.title)), float(row["flop_ratio"]), float(row["speedup"]))
            for r in results if r.section == "engine" for row in r.figures
            if row.get("flop_ratio") is not None and row.get("speedup") is not None]


# ---- the document -------------------------------------------------------------------------------------

HEADER = """# Benchmarks

Today's figure for each measure, with the command that produced it, its date, commit (where recorded)
and machine. Generated by `make bench-render` (`python benchmarks/render.py`) from
`benchmarks/results/*.json`: do not edit this file by hand; change or add a result file and render
again (`python benchmarks/render.py --check`, run by the tests, fails when this file is stale). Earlier
figures are in the history of these files. "Dev box" is a shared 2-CPU VM with no GPU; other work
often ran beside a measure, so compare the ratios measured side by side in one process.
"""


def render(results_dir: Path, md_path: Path, docs_dir: Path) -> dict[Path, bytes]:
    """BENCHMARKS.md and the plots, as {path: bytes}."""
    results = load_results(results_dir)
    known = {s.key for s in SECTIONS}
    sections = SECTIONS + [Section(k, next(r.title for r in results if r.section == k), "")
                           for k in dict.fromkeys(r.section for r in results) if k not in known]
    by_teacher = quality_rows(results)
    results = quant_beside_students(results, by_teacher)
    points = speed_points(results)
    images = {"engine": speed_plot(points) if points else None,
              "quality_time": quality_plot(by_teacher) if by_teacher else None}
    files: dict[Path, bytes] = {}
    body: list[str] = []
    for sec in sections:
        members = [r for r in results if r.section == sec.key]
        if sec.key == "quality" and by_teacher:
            extra = quality_summary(by_teacher) + [""]
        elif sec.key == "distill_cost":
            extra = distill_cost_summary(members)
        else:
            extra = []
        if not members and not extra and images.get(sec.key) is None:
            continue
        body += [f"## {sec.heading}", ""] + ([sec.intro, ""] if sec.intro else [])
        image = images.get(sec.key)
        if image is not None and sec.plot:
            path = docs_dir / sec.plot
            files[path] = image
            body += [f"![{sec.heading}]({os.path.relpath(path, md_path.parent).replace(os.sep, '/')})", ""]
        body += extra
        for r in members:
            body += result_block(r, md_path.parent)
    contents = " · ".join(f"[{line[3:]}](#{anchor(line[3:])})" for line in body if line.startswith("## "))
    files[md_path] = ("\n".join([HEADER, "Measures: " + contents, "", *body]).rstrip() + "\n").encode()
    return files


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def stale(files: dict[Path, bytes]) -> list[Path]:
    return [p for p, data in files.items() if not p.is_file() or p.read_bytes() != data]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="folder of *.json results")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="the Markdown file to write")
    p.add_argument("--docs", type=Path, default=REPO / "docs", help="folder for the plots")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any output is out of date")
    args = p.parse_args(argv)
    try:
        files = render(args.results, args.out, args.docs)
    except (ValueError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    if args.check:
        old = stale(files)
        for path in old:
            print(f"{path} is out of date with {args.results}: run `make bench-render`", file=sys.stderr)
        return 1 if old else 0
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
