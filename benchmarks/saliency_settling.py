"""When does SMI's ranking settle? The CLS saliency of a dense inversion, iteration by iteration (issue 14).

SMI stops the lowest-saliency patches at fixed iterations (the paper's, scaled: 2, 5, 10 and 15 of 200).
This asks whether those early rankings already say which patches end least salient, and where a stop
placed by convergence (the ranking no longer moving) would fall. For each suite teacher it inverts N
classes x M images densely with the recommended recipe and, after every iteration, reads the last block's
CLS attention over all patches of the current image (a dense forward of the canonical image, outside the
run). With S_t the lowest ``--ratio`` of patches at iteration t (per image), it reports

- ``with_final``: the share of S_t also in S_T at the last iteration T (chance: ``--ratio``);
- ``with_window``: the share of S_t also in S_(t - window) (how fast the ranking still moves);
- ``first_settled``: the first iteration whose ``with_window`` reaches ``--threshold`` (where a stop placed
  by convergence would fall), and ``settles_at``: the first from which it stays there (None: it dips
  below again), next to the paper's stop iterations.

    python benchmarks/saliency_settling.py --teachers shapes64,digits64,glyphs196 --out /tmp/settling.json
    python benchmarks/saliency_settling.py --quick                     # smoke: tiny teachers, 12 iterations

The last stdout line is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.console import emit_json  # noqa: E402
from pipeline.teachers import suite  # noqa: E402
from pipeline.teachers.loading import load_teacher  # noqa: E402
from pipeline.teachers.trainer import TrainRecipe  # noqa: E402
from smi_core import invert  # noqa: E402
from smi_core.recipe import paper_stops, recommended_config  # noqa: E402
from smi_core.selection import keep_top_salient  # noqa: E402
from smi_core.vit import forward_subset  # noqa: E402

REPORT_AT = (1, 2, 3, 5, 10, 15, 20, 30, 40, 60, 80, 100, 120, 150, 180)  # iterations (1-based) in the table


def lowest_set(saliency: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(B, P)`` bool: the ``int(ratio * P)`` patches of each row that SMI's stop rule
    (:func:`smi_core.selection.keep_top_salient`) would stop, i.e. all but the most salient."""
    batch, patches = saliency.shape
    count = int(ratio * patches)
    if count < 1:
        raise ValueError(f"ratio: {ratio} of {patches} patches selects none")
    every = torch.arange(patches, device=saliency.device).expand(batch, patches)
    kept = keep_top_salient(every, saliency.float(), patches - count)
    return torch.ones_like(saliency, dtype=torch.bool).scatter_(1, kept, False)


def shared(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the share of ``a``'s patches also in ``b`` (two equal-size ``(N, P)`` bool sets)."""
    return float(((a & b).sum(1).float() / a.sum(1).clamp(min=1).float()).mean())


def _still(sets: list[torch.Tensor], window: int, threshold: float) -> list[bool]:
    """Per iteration from ``window`` on (0-based): whether its set shares ``threshold`` with ``window`` before."""
    return [shared(sets[t], sets[t - window]) >= threshold for t in range(window, len(sets))]


def first_settled(sets: list[torch.Tensor], window: int, threshold: float) -> int | None:
    """First iteration (1-based) whose set shares at least ``threshold`` with the set ``window`` iterations
    before; None if none does."""
    return next((i + window + 1 for i, ok in enumerate(_still(sets, window, threshold)) if ok), None)


def settles_at(sets: list[torch.Tensor], window: int, threshold: float) -> int | None:
    """First iteration (1-based) t >= window + 1 from which every set shares at least ``threshold`` with
    the set ``window`` iterations before; None if the ranking never settles so."""
    flags = _still(sets, window, threshold)
    start = len(flags)
    while start > 0 and flags[start - 1]:  # the run of settled iterations that reaches the end
        start -= 1
    return start + window + 1 if start < len(flags) else None


def saliency_sets(teacher: Any, label: int, per_class: int, iterations: int, ratio: float, seed: int
                  ) -> list[torch.Tensor]:
    """The lowest-saliency set of every iteration of a dense inversion of ``per_class`` images of ``label``."""
    sets: list[torch.Tensor] = []

    def observe(state: Any) -> None:
        with torch.no_grad():
            _, saliency = forward_subset(teacher.model, state.pixels, None, saliency=True)
        sets.append(lowest_set(saliency, ratio))

    targets = torch.full((per_class,), label, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed * 1000 + label)
    invert(teacher.model, targets, recommended_config("dense", iterations), generator, img_size=teacher.img_size,
           mean=teacher.mean, std=teacher.std, observer=observe)
    return sets


def study(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One teacher's row: the shares at :data:`REPORT_AT`, where the ranking settles, the paper's stops."""
    recipe = TrainRecipe(steps=args.teacher_steps) if args.teacher_steps else None
    checkpoint, _ = suite.load_or_build_suite_teacher(name, args.cache, recipe=recipe)
    teacher = load_teacher(str(checkpoint))
    start = time.perf_counter()
    per_class = [saliency_sets(teacher, label, args.per_class, args.iterations, args.ratio, args.seed)
                 for label in range(args.classes)]
    sets = [torch.cat(step) for step in zip(*per_class)]  # per iteration: (classes x per_class, P)
    last = len(sets) - 1
    table = {t: {"with_final": round(shared(sets[t - 1], sets[last]), 3),
                 "with_window": round(shared(sets[t - 1], sets[t - 1 - args.window]), 3) if t > args.window else None}
             for t in REPORT_AT if t <= len(sets)}
    stops = paper_stops(args.iterations)
    return {"teacher": name, "patches": int(sets[0].shape[1]), "images": int(sets[0].shape[0]),
            "iterations": args.iterations, "chance": args.ratio, "by_iteration": table,
            "paper_stops": {t: round(shared(sets[t - 1], sets[last]), 3) for t in stops},
            "first_settled": first_settled(sets, args.window, args.threshold),
            "settles_at": settles_at(sets, args.window, args.threshold), "seconds": round(time.perf_counter() - start, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny teachers (own cache), 2 classes x 2, 12 iterations")
    p.add_argument("--teachers", default=",".join(suite.TEACHERS), help=f"some of {', '.join(suite.TEACHERS)}")
    p.add_argument("--classes", type=int, default=5, help="first N classes of each teacher")
    p.add_argument("--per-class", type=int, default=16, help="images per class, inverted as one batch")
    p.add_argument("--iterations", type=int, default=200, help="dense inversion iterations")
    p.add_argument("--ratio", type=float, default=0.3, help="share of patches in the lowest set (SMI's first stop)")
    p.add_argument("--window", type=int, default=5, help="iterations back for the ranking's movement")
    p.add_argument("--threshold", type=float, default=0.9, help="with_window share that counts as settled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="teacher cache root (default $SMI_SYNTH_CACHE or ~/.cache/smi-synth)")
    p.add_argument("--teacher-steps", type=int, default=0, help="train the teachers for this many steps (0: their recipe)")
    p.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = p.parse_args(argv)
    args.teachers = [t for t in args.teachers.split(",") if t]
    if not args.teachers or set(args.teachers) - set(suite.TEACHERS):
        p.error(f"--teachers: expected some of {', '.join(suite.TEACHERS)}, got {args.teachers}")
    if args.quick:
        args.classes, args.per_class, args.iterations, args.window = 2, 2, 12, 2
        args.teacher_steps = args.teacher_steps or 5
    for flag, value, low in (("--classes", args.classes, 1), ("--per-class", args.per_class, 1),
                             ("--window", args.window, 1), ("--seed", args.seed, 0)):
        if value < low:
            p.error(f"{flag}: must be >= {low}, got {value}")
    if args.iterations <= args.window + 1:
        p.error(f"--iterations: must exceed --window + 1 ({args.window + 1}), got {args.iterations}")
    if not 0 < args.ratio < 1 or not 0 < args.threshold <= 1:
        p.error("--ratio: must lie in (0, 1) and --threshold in (0, 1]")
    if args.classes > 10:
        p.error(f"--classes: every suite teacher has 10 classes, got {args.classes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(prefix="smi-settling-") if args.quick and args.cache is None else None
    if tmp is not None:
        args.cache = Path(tmp.name)  # tiny teachers never replace the real cached ones
    rows = []
    for name in args.teachers:
        row = study(name, args)
        rows.append(row)
        shares = ", ".join(f"{t}: {v:.2f}" for t, v in row["paper_stops"].items())
        print(f"{name} ({row['patches']} patches, {row['images']} images): lowest {args.ratio:.0%} set at the paper's "
              f"stops shares with the last iteration's {shares} (chance {args.ratio:.2f}); the ranking first shares "
              f">= {args.threshold:.2f} with {args.window} iterations before at iteration {row['first_settled']}, "
              f"and stays so from {row['settles_at']}",
              file=sys.stderr)
    result = {"settings": {k: args.__dict__[k] for k in ("classes", "per_class", "iterations", "ratio", "window",
                                                          "threshold", "seed")}, "teachers": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    emit_json(result)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
