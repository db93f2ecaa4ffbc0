"""Distillation cost: ``smi-synth distill``'s seconds and student top-1 before and after a change.

Each arm is one ``smi-synth distill CORPUS --eval EVAL --seed S --json`` command line in its own process
with one torch thread; ``--parallel`` of them run at once, the arms of one seed side by side, so both arms
see the same load. The ``before`` and ``after`` arms spell out the defaults of commit 2805bf5 (3,000 steps at
lr 1e-2, every view also moved by one adversarial step); ``before`` runs the code of ``--before-root`` (a
checkout of the commit before the change, e.g. ``git worktree add --detach /tmp/before BASE``), the other arms
this checkout's. ``half-batch`` is ``after`` at half the batch; ``no-adversarial`` drops the adversarial views.

    smi-synth run manifests/demo.yaml --out /tmp/distcost/demo            # the demo-size corpus (10 x 8)
    nice -n 10 python benchmarks/distill_cost.py /tmp/distcost/demo --seeds 0,1,2 --before-root /tmp/before \\
        --runs /tmp/distcost/runs.jsonl --json benchmarks/results/distill_cost.json

Each finished run is appended to ``--runs`` (JSON lines) and reused by a later call with the same corpus,
eval set, arm flags, seed and code commit, so an interrupted study resumes. ``--json`` gets the document (command,
commit, date, machine, per arm and seed: seconds of training as the command reports them, wall seconds of
the whole command, student top-1; mean / sd per arm; after/before ratio of mean seconds). The last stdout
line is that document. Two cheaper measures of the cost alone (a step costs the same at any step count):

    nice -n 10 python benchmarks/distill_cost.py /tmp/distcost/demo --no-runs --profile-steps 20 \
        --timing-steps 30 --timing-rounds 3 --json benchmarks/results/distill_cost.json

``--profile-steps`` times each phase of this checkout's step in this process; ``--timing-steps`` runs short commands of
the arms one at a time, alternating, so both see the load of the moment.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "distill-cost-v1"
# The defaults of ``smi-synth distill`` at commit 2805bf5, spelled out (views: flip, colour jitter 0.3,
# channel shuffle, mixing every image, which the later defaults keep).
# ``half-batch``: the same steps at half the batch (32 images and their 32 adversarial views a step): every step
# costs about half (a step's passes scale with its views). ``no-adversarial``: 64 images a step without the ascent
# step (about a third of the cost). ``fresh-half`` / ``fresh-quarter``: the teacher labels views of half / a quarter
# of each batch afresh; the student trains on those and views drawn from a pool of earlier ones
# (pipeline.evaluate.view_pool).
ARMS: dict[str, list[str]] = {
    "before": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "1.0"],
    "after": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "1.0"],
    "half-batch": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "1.0", "--batch-size", "32"],
    "no-adversarial": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "0"],
    "fresh-half": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "1.0", "--fresh-views", "0.5"],
    "fresh-quarter": ["--steps", "3000", "--lr", "1e-2", "--adversarial-eps", "1.0", "--fresh-views", "0.25"],
}
MACHINE = "dev box: 2-core AMD EPYC VM, shared with other jobs"


class Run(NamedTuple):
    """One distillation command: an arm at a seed."""

    arm: str
    seed: int
    argv: list[str]
    root: Path = ROOT  # the checkout whose code runs it

    def key(self, corpus: str, eval_spec: str) -> dict[str, Any]:
        return {"corpus": corpus, "eval": eval_spec, "arm": self.arm, "seed": self.seed, "argv": self.argv,
                "commit": commit(self.root)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", help="corpus folder to distil from (e.g. the demo's: smi-synth run manifests/demo.yaml)")
    p.add_argument("--eval", default="toy", help="--eval of every distill command (default: toy)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated distillation seeds (default: 0,1,2)")
    p.add_argument("--arms", default="before,after", help=f"comma-separated arms, of {', '.join(ARMS)}")
    p.add_argument("--before-root", type=Path, default=ROOT,
                   help="the checkout whose code the before arm runs (default: this one)")
    p.add_argument("--parallel", type=int, default=2, help="distill commands at once, one torch thread each")
    p.add_argument("--runs", type=Path, help="JSON-lines file of finished runs, appended to and reused")
    p.add_argument("--json", type=Path, help="write the result document here")
    p.add_argument("--timing-steps", type=int, default=0, metavar="N",
                   help="also time each arm for N steps in alternating commands (--timing-rounds of them, one at a "
                        "time), a per-step cost that the load of the moment affects alike (0: none)")
    p.add_argument("--timing-rounds", type=int, default=3, help="rounds of the alternating timing")
    p.add_argument("--profile-steps", type=int, default=0, metavar="N",
                   help="also profile N steps of each arm in this process: milliseconds per phase of a step (a toy "
                        "corpus; 0: none)")
    p.add_argument("--no-runs", action="store_true", help="no full runs: only --profile-steps and --timing-steps")
    p.add_argument("--note", action="append", default=[], help="a line added to the result's notes (repeatable)")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        p.error(f"--arms: one or more of {', '.join(ARMS)}, got {', '.join(unknown) or 'none'}")
    if args.profile_steps and any("--fresh-views" in ARMS[a] for a in args.arms):
        p.error("--profile-steps: the profile times the step without a view pool; leave out the fresh-* arms")
    if not args.seeds:
        p.error("--seeds: at least one seed")
    if len(set(args.seeds)) != len(args.seeds):
        p.error("--seeds: a seed is given twice")
    if not (args.before_root / "pipeline" / "cli.py").is_file():
        p.error(f"--before-root: {args.before_root} is not a checkout of this project")
    if args.parallel < 1:
        p.error(f"--parallel: must be >= 1, got {args.parallel}")
    if args.profile_steps < 0:
        p.error(f"--profile-steps: must be >= 0, got {args.profile_steps}")
    if args.no_runs and not (args.timing_steps or args.profile_steps):
        p.error("--no-runs: give --timing-steps N or --profile-steps N")
    if args.timing_steps < 0 or args.timing_rounds < 1:
        p.error(f"--timing-steps: must be >= 0 and --timing-rounds >= 1, got {args.timing_steps}, {args.timing_rounds}")
    return args


def plan(args: argparse.Namespace) -> list[Run]:
    """The runs, seed by seed with the arms of a seed next to each other (so they run side by side)."""
    return [Run(arm, seed, ARMS[arm], root_of(arm, args)) for seed in args.seeds for arm in args.arms]


def root_of(arm: str, args: argparse.Namespace) -> Path:
    """The checkout an arm's commands run from: ``--before-root`` for ``before``, else this one."""
    return Path(args.before_root).resolve() if arm == "before" else ROOT


def with_steps(argv: list[str], steps: int) -> list[str]:
    """``argv`` with its ``--steps`` value (or an added one) set to ``steps``."""
    out = list(argv)
    if "--steps" in out:
        out[out.index("--steps") + 1] = str(steps)
        return out
    return [*out, "--steps", str(steps)]


def timing_plan(args: argparse.Namespace) -> list[Run]:
    """Short runs of every arm, alternating arm by arm, round by round (seed 0)."""
    return [Run(arm, 0, with_steps(ARMS[arm], args.timing_steps), root_of(arm, args))
            for _ in range(args.timing_rounds) for arm in args.arms]


def command(run: Run, corpus: str, eval_spec: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "distill", corpus, "--eval", eval_spec, "--seed", str(run.seed),
            "--json", *run.argv]


def execute(run: Run, corpus: str, eval_spec: str) -> dict[str, Any]:
    """Run one distill command with one torch thread; its report and wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(run.root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    out = subprocess.run(command(run, corpus, eval_spec), env=env, cwd=run.root, capture_output=True, text=True,
                         check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{run.arm} seed {run.seed} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {**run.key(corpus, eval_spec), "seconds": report["seconds"], "wall_seconds": round(wall, 3),
            "student_top1": report["student_top1"], "teacher_top1": report["teacher_top1"], "steps": report["steps"],
            "budget": report["chosen"]["budget"], "date": now()}


def profile_step(corpus: str, steps: int, eps: float = 1.0, batch_size: int = 64) -> dict[str, float]:
    """Milliseconds per step of each phase of the live-teacher step (:mod:`pipeline.evaluate.kd_views`' views,
    the adversarial step with ``eps`` > 0, the student's training pass) over ``steps`` steps of the corpus's
    first batches, one torch thread, the default student against the corpus's toy teacher."""
    import torch

    from pipeline.evaluate.common import corpus_info
    from pipeline.evaluate.defaults import default_student
    from pipeline.evaluate.distill import build_student
    from pipeline.evaluate.kd_views import KDAugmentConfig, flip_shift, kd_divergence, mix_pairs, photometric
    from pipeline.evaluate.memory_batches import load_in_memory
    from pipeline.teachers.adversarial import l2_step
    from pipeline.teachers.classify import normalize
    from pipeline.teachers.loading import load_teacher

    torch.set_num_threads(1)
    info = corpus_info(corpus)
    if info.teacher_spec != "toy":
        raise SystemExit(f"--profile-steps: {corpus} is not a toy-teacher corpus")
    teacher = load_teacher("toy")
    model, t_norm = teacher.model.eval(), (tuple(teacher.mean), tuple(teacher.std))
    s_norm = (info.mean or t_norm[0], info.std or t_norm[1])
    torch.manual_seed(0)
    student = build_student(default_student(info), num_classes=info.num_classes, img_size=info.img_size)
    student = student.to(memory_format=torch.channels_last).train()  # as distill trains it
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.05)
    memory = load_in_memory(info.root, num_images=info.num_images, img_size=info.img_size, batch_size=batch_size,
                            budget_bytes=1 << 34)
    assert memory is not None
    views_cfg, g = KDAugmentConfig(adversarial_eps=eps), torch.Generator().manual_seed(0)
    spent: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now_ = time.perf_counter()
        spent[name] = spent.get(name, 0.0) + now_ - clock[0]
        clock[0] = now_

    done = 0
    while done < steps:
        for images, _labels, _soft, _masks in memory.epoch(done):
            if done >= steps:
                break
            clock[0] = time.perf_counter()
            views = photometric(flip_shift(mix_pairs(images, g, views_cfg.mix), g, 0, views_cfg.flip), g,
                                views_cfg.colour_jitter, views_cfg.channel_shuffle)
            lap("views")
            if eps > 0:
                x = views.clone().requires_grad_(True)
                clean = model(normalize(x, *t_norm))
                lap("adversarial: teacher forward")
                loss = kd_divergence(student(normalize(x, *s_norm)), clean, 4.0)
                lap("adversarial: student forward")
                (grad,) = torch.autograd.grad(loss, [x])
                moved = l2_step(views, grad, eps)
                lap("adversarial: backward to the pixels")
                with torch.no_grad():
                    labels = torch.cat([clean.detach(), model(normalize(moved, *t_norm))])
                lap("teacher forward (labels)")
                batch = torch.cat([views, moved])
            else:
                with torch.no_grad():
                    labels = model(normalize(views, *t_norm))
                lap("teacher forward (labels)")
                batch = views
            logits = student(normalize(batch, *s_norm))
            lap("student forward")
            opt.zero_grad(set_to_none=True)
            kd_divergence(logits, labels, 4.0).backward()
            lap("student backward")
            opt.step()
            lap("optimizer step")
            done += 1
    return {name: round(1000 * value / steps, 2) for name, value in spent.items()}


def load_runs(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find(runs: list[dict[str, Any]], key: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in runs if all(r.get(k) == v for k, v in key.items())), None)


@functools.cache  # one git call per checkout; a run records the commit its study started from
def commit(root: Path = ROOT) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace, rows_timing: list[dict[str, Any]] | None = None,
              profile: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The result document as ``benchmarks/render.py`` reads it: ``figures`` has one row per seed with both
    arms' seconds and top-1 in % (without full runs: one row per timing round, else one per profiled phase);
    per arm the mean / sd of seconds and top-1; with ``rows_timing`` the alternating short runs' seconds per
    step; with ``profile`` the milliseconds per phase of a step."""
    rows_timing, profile = rows_timing or [], profile or {}
    arms: dict[str, Any] = {}
    for arm in args.arms:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        if not mine:
            continue
        arms[arm] = {"flags": ARMS[arm], "budget": mine[0]["budget"], "steps": mine[0]["steps"],
                     "seconds": spread([r["seconds"] for r in mine]),
                     "wall_seconds": spread([r["wall_seconds"] for r in mine]),
                     "student_top1": spread([r["student_top1"] for r in mine]),
                     "runs": [{k: r[k] for k in ("seed", "seconds", "wall_seconds", "student_top1", "commit", "date")}
                              for r in mine]}
    figures = []
    for seed in args.seeds:
        row: dict[str, Any] = {"seed": seed}
        for arm in args.arms:
            run = next((r for r in rows if r["arm"] == arm and r["seed"] == seed), None)
            row[f"{arm}_s"] = round(run["seconds"], 1) if run else None
            top = run["student_top1"] if run else None
            row[f"{arm}_top1"] = round(100 * top, 2) if top is not None else None
        figures.append(row)
    columns = {"seed": "seed", **{f"{a}_{k}": f"{a} {h}" for a in args.arms
                                  for k, h in (("s", "s"), ("top1", "top-1 %"))}}
    if not rows and rows_timing:
        rounds = [rows_timing[i:i + len(args.arms)] for i in range(0, len(rows_timing), len(args.arms))]
        figures = [{"round": i + 1, **{f"{r['arm']}_s_per_step": round(r["seconds"] / r["steps"], 4) for r in chunk}}
                   for i, chunk in enumerate(rounds)]
        columns = {"round": "timing round", **{f"{a}_s_per_step": f"{a} s per step" for a in args.arms}}
    elif not rows and profile:
        phases = list(dict.fromkeys(k for arm in args.arms for k in profile.get(arm, {})))
        figures = [{"phase": k, **{f"{a}_ms": profile.get(a, {}).get(k) for a in args.arms}} for k in phases]
        figures.append({"phase": "step", **{f"{a}_ms": round(sum(profile.get(a, {}).values()), 2) for a in args.arms}})
        columns = {"phase": "phase", **{f"{a}_ms": f"{a} ms per step" for a in args.arms}}
    notes = [f"{arm}: `smi-synth distill CORPUS --eval {args.eval} --seed S {shlex.join(ARMS[arm])}` (the code of "
             f"commit {commit(root_of(arm, args))[:7]})" for arm in args.arms]
    notes += args.note
    if profile:
        notes.append(f"Profile ({args.profile_steps} steps in one process, one thread), ms per step: " + "; ".join(
            f"{arm} {sum(p.values()):.1f} (" + ", ".join(f"{k} {v:.1f}" for k, v in p.items()) + ")"
            for arm, p in profile.items()))
    doc: dict[str, Any] = {
        "format": FORMAT, "section": "distill_cost", "title": "Distillation cost on the demo-size corpus",
        "command": "nice -n 10 python benchmarks/distill_cost.py " + shlex.join(sys.argv[1:]), "commit": commit(),
        "date": now(), "machine": MACHINE, "python": platform.python_version(), "torch": torch_version(),
        "setup": setup(args, bool(rows)),
        "columns": columns, "figures": figures, "notes": notes, "profile_ms_per_step": profile,
        "corpus": args.corpus, "eval": args.eval, "parallel": args.parallel, "threads_per_run": 1,
        "teacher_top1": (rows or rows_timing)[0]["teacher_top1"] if rows or rows_timing else None, "arms": arms,
    }
    if args.timing_steps:
        timing: dict[str, Any] = {}
        for arm in args.arms:
            per_step = [r["seconds"] / r["steps"] for r in rows_timing if r["arm"] == arm]
            if per_step:
                timing[arm] = {"seconds_per_step": spread(per_step), "per_round": per_step}
        doc["timing"] = {"steps": args.timing_steps, "rounds": args.timing_rounds, "arms": timing}
        others = [arm for arm in timing if arm != "before"] if "before" in timing else []
        for arm in others:  # each arm's seconds per step as a share of before's, round by round
            ratio = timing[arm]["seconds_per_step"]["mean"] / timing["before"]["seconds_per_step"]["mean"]
            paired = [a / b for a, b in zip(timing[arm]["per_round"], timing["before"]["per_round"])]
            timing[arm].update(per_step_ratio=ratio, per_round_ratio=paired)
        if "after" in others:
            doc["timing"].update(per_step_ratio=timing["after"]["per_step_ratio"],
                                 per_round_ratio=timing["after"]["per_round_ratio"])
        if others:
            notes.append(f"Alternating {args.timing_steps}-step commands, {args.timing_rounds} rounds, one at a time: "
                         f"before {timing['before']['seconds_per_step']['mean']:.3f} s per step; " + "; ".join(
                             f"{arm} {timing[arm]['seconds_per_step']['mean']:.3f} s "
                             f"({100 * timing[arm]['per_step_ratio']:.1f}% of before; per round "
                             f"{', '.join(f'{100 * r:.1f}%' for r in timing[arm]['per_round_ratio'])})"
                             for arm in others) + ".")
    if "before" in arms:
        for arm in (a for a in arms if a != "before"):
            arms[arm]["seconds_ratio"] = arms[arm]["seconds"]["mean"] / arms["before"]["seconds"]["mean"]
            arms[arm]["top1_difference"] = arms[arm]["student_top1"]["mean"] - arms["before"]["student_top1"]["mean"]
        if "after" in arms:
            doc["seconds_ratio"] = arms["after"]["seconds_ratio"]
            doc["top1_difference"] = arms["after"]["top1_difference"]
    return doc


def describe_corpus(corpus: str) -> str:
    """``corpus`` with its manifest's name, size and spec hash (its folder alone when it has no manifest)."""
    try:
        manifest = json.loads((Path(corpus) / "manifest.json").read_text())
        spec = manifest["spec"]
        return (f"{corpus} ({spec.get('source') or spec.get('name')}: {manifest['num_images']} images of "
                f"{len(spec['classes'])} classes, spec hash {manifest['spec_hash'][:12]})")
    except (OSError, ValueError, KeyError, TypeError):
        return corpus


def setup(args: argparse.Namespace, full_runs: bool) -> str:
    """The result's paragraph: what was run, and the machine's load average when the document was written."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    parts = [f"Corpus {describe_corpus(args.corpus)}, the default student, one torch thread per command."]
    if full_runs:
        parts.append(f"Each arm one `smi-synth distill --eval {args.eval}` command per seed, {args.parallel} at once, "
                     "the arms of a seed side by side; seconds are the training loop's as the command reports them, "
                     "top-1 in % on the held-out images.")
    if args.timing_steps:
        parts.append(f"Timing: {args.timing_steps}-step commands of each arm, one at a time, alternating arm by arm "
                     f"for {args.timing_rounds} rounds; seconds per step of the training loop.")
    if args.profile_steps:
        parts.append(f"Profile: {args.profile_steps} steps of each arm's step in one process, phase by phase.")
    parts.append(f"Load average (1, 5, 15 min) at the end: {load}.")
    return " ".join(parts)


def torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = str(Path(args.corpus).resolve())
    profile: dict[str, dict[str, float]] = {}
    if args.profile_steps:
        for arm in args.arms:
            flags = ARMS[arm]
            eps = float(flags[flags.index("--adversarial-eps") + 1])
            batch = int(flags[flags.index("--batch-size") + 1]) if "--batch-size" in flags else 64
            profile[arm] = phases = profile_step(corpus, args.profile_steps, eps, batch)
            print(f"distill_cost: profile {arm}: {sum(phases.values()):.1f} ms per step: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), file=sys.stderr, flush=True)
    known = load_runs(args.runs)
    full = [] if args.no_runs else plan(args)
    todo = [r for r in full if find(known, r.key(corpus, args.eval)) is None]
    rows = [row for r in full if (row := find(known, r.key(corpus, args.eval))) is not None]

    def one(run: Run) -> dict[str, Any]:
        print(f"distill_cost: {run.arm} seed {run.seed}: {shlex.join(command(run, corpus, args.eval))}",
              file=sys.stderr, flush=True)
        row = execute(run, corpus, args.eval)
        print(f"distill_cost: {run.arm} seed {run.seed}: {row['seconds']:.1f} s, top-1 {row['student_top1']:.4f}",
              file=sys.stderr, flush=True)
        if args.runs is not None:
            with args.runs.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    timing = []
    if args.timing_steps:
        for run in timing_plan(args):
            row = execute(run, corpus, args.eval)
            print(f"distill_cost: timing {run.arm}: {row['seconds'] / row['steps']:.4f} s per step", file=sys.stderr,
                  flush=True)
            timing.append(row)
    with ThreadPoolExecutor(args.parallel) as pool:
        rows += list(pool.map(one, todo))
    doc = summarise(rows, args, timing, profile)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
