"""Quality suite: what inverted corpora teach a student, per normally trained teacher, per seed.

For each teacher of :mod:`pipeline.teachers.suite` (``shapes64``, ``glyphs196``, and the held-out
``digits64``, trained once and cached) and each seed, four corpora of N classes x M images are written
in-process (no Ray) in the project's corpus format: Gaussian noise, dense inversion, SMI inversion, and
real training images (the ceiling, not data-free). Dense and SMI batches of the same class start from
the same generator seed and alternate class by class in this process, so their generation times are
measured side by side; each class is one inversion batch of M images (default 64, the batch a manifest
gets by default once it asks for 64 images per class or more). The same student (timm ``test_resnet`` by default, same seed) is distilled from
each corpus with :func:`pipeline.evaluate.distill.distill` against the live teacher on augmented views
(as ``benchmarks/quality.py`` does), and scored on the teacher's real held-out images.

Beside the students, the teacher is quantized for each (teacher, seed)
(:func:`pipeline.evaluate.quantize.quantize_and_score`, default W8A8 and W4A4) calibrated on K images a class of
each of that seed's dense and SMI corpora, of the teacher's real training images and of Gaussian noise
(:func:`calibration_sets`, as ``benchmarks/quant_calibration.py`` does), and scored on the same held-out images;
``--no-quant`` skips it. ``--quant-only`` distils nothing and inverts only the K images a class calibration
draws (``--per-class`` to invert the students' corpus size instead); a reused result whose corpora were kept
(``--keep-corpora``) gets its quantization measured on them.

The inversion recipe is a parameter: ``--recipe MODULE:FUNCTION`` (or ``path/to/file.py:FUNCTION``)
names a function ``(method: "dense" | "smi", iterations: int) -> smi_core.InversionConfig``; the default,
:func:`project_recipe`, is the project's recommended recipe, ``smi_core.recipe.recommended_config`` (the
one every manifest gets for the fields it leaves out).

    python benchmarks/quality_suite.py --quick --out /tmp/qs-quick           # smoke, tiny teachers
    python benchmarks/quality_suite.py --out /tmp/qs --seeds 0,1             # all three teachers
    python benchmarks/quality_suite.py --out /tmp/qs-new --recipe my_recipes:new_recipe
    python benchmarks/quality_suite.py --out /tmp/qs-quant --quant-only --seeds 0,1,2 --report benchmarks/results/quality_suite_quant.json

Writes ``OUT/<teacher>/seed<k>/result.json`` per (teacher, seed) (a finished one is reused when the
suite is run again with the same settings) and ``OUT/summary.json``: per teacher, mean and sd over
seeds and the paired 95% interval of SMI - dense (:func:`benchmarks.quality_seeds.summarise`), the
students' ratio to the teacher, the quantized teachers' top-1 (mean / sd over seeds) and which of issue 14's
goals the means meet (:func:`suite_goals`); ``--report FILE`` also writes the quantization rows
``benchmarks/render.py`` tabulates. The last stdout line is the summary as one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_seeds  # noqa: E402  (benchmarks/quality_seeds.py: the over-seeds summary)
from pipeline.console import emit_json  # noqa: E402
from pipeline.corpus.index import ShardTask, refresh_index, write_manifest  # noqa: E402
from pipeline.corpus.layout import CorpusLayout  # noqa: E402
from pipeline.corpus.writer import write_shard  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.evaluate.common import EvalSet, corpus_info, top1  # noqa: E402
from pipeline.evaluate.defaults import default_steps  # noqa: E402
from pipeline.evaluate.distill import DistillConfig  # noqa: E402
from pipeline.evaluate.kd_views import KDAugmentConfig  # noqa: E402
from pipeline.evaluate.noise import labelled_samples, noise_images  # noqa: E402
from pipeline.evaluate.quant.model import QUANTIZER_VERSION, QuantSettings  # noqa: E402
from pipeline.evaluate.quantize import (  # noqa: E402
    CalibrationSet, corpus_calibration_set, noise_calibration, parse_bits, quantize_and_score,
)
from pipeline.evaluate.worth import StudentJob, train_students  # noqa: E402
from pipeline.run.worker import batch_seed, samples_from_result  # noqa: E402
from pipeline.teachers import suite  # noqa: E402
from pipeline.teachers.classify import normalize  # noqa: E402
from pipeline.teachers.loading import load_teacher  # noqa: E402
from pipeline.teachers.trainer import TrainRecipe  # noqa: E402
from smi_core import InversionConfig, invert_packed  # noqa: E402
from smi_core.recipe import recommended_config  # noqa: E402
from smi_core.selection import images_per_target, targets_for  # noqa: E402

log = logging.getLogger("quality_suite")

CORPORA = ("noise", "dense", "smi", "rebirth", "real")
# what a recipe may return per corpus: the sparse corpus may stop patches at random (a control for saliency)
SELECTION_KINDS = {"dense": ("dense",), "smi": ("smi", "random"), "rebirth": ("rebirth",)}
RecipeFn = Callable[[str, int], InversionConfig]
FORMAT = "quality-suite-v1"
CALIB = ("dense", "smi", "real", "noise")  # the quantizer's calibration sets, in their table order
NAMES = {"dense": "dense", "smi": "SMI", "rebirth": "rebirth", "real": "real", "noise": "noise"}  # as tables name them


# The project's recommended recipe (smi_core.recipe), under the name the suite's docs and tests use.
project_recipe = recommended_config


def load_recipe(ref: str) -> RecipeFn:
    """``MODULE:FUNCTION`` or ``FILE.py:FUNCTION`` -> the function (ValueError saying why not)."""
    if ref == "project":
        return project_recipe
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ValueError(f"expected MODULE:FUNCTION or FILE.py:FUNCTION, got {ref!r}")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if spec is None or spec.loader is None or not Path(target).is_file():
                raise ValueError(f"no such file {target!r}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot import {target!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{target!r} has no function {attr!r}")
    return fn


def inverted_methods(corpora: list[str]) -> tuple[str, ...]:
    """The inverted corpora a run generates: dense and SMI always (they are timed side by side), rebirth when
    it is distilled."""
    return ("dense", "smi", "rebirth") if "rebirth" in corpora else ("dense", "smi")


def check_recipe(fn: RecipeFn, iterations: int, methods: tuple[str, ...] = ("dense", "smi")) -> dict[str, dict[str, Any]]:
    """The recipe's configs of ``methods`` as JSON dicts (ValueError when it does not give valid ones)."""
    configs = {}
    for method in methods:
        try:
            config = fn(method, iterations)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{method} at {iterations} iterations: {exc}") from None
        if not isinstance(config, InversionConfig):
            raise ValueError(f"{method}: returned {type(config).__name__}, not an InversionConfig")
        if config.selection.kind not in SELECTION_KINDS[method] or config.iterations != iterations:
            raise ValueError(f"{method}: returned selection.kind {config.selection.kind!r} and "
                             f"{config.iterations} iterations; expected one of {SELECTION_KINDS[method]} and "
                             f"{iterations}")
        configs[method] = json.loads(json.dumps(dataclasses.asdict(config)))
    return configs


# --- corpora -----------------------------------------------------------------------------------------


def _task_seed(seed: int, label: int) -> int:
    digest = hashlib.blake2b(f"quality-suite:{seed}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**62 - 1)


def _start_corpus(out: Path, kind: str, teacher: Any, checkpoint: Path, classes: int, per_class: int, seed: int,
                  inversion: dict | None) -> tuple[CorpusLayout, list[ShardTask]]:
    """An empty corpus folder with its manifest: one class shard per class."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = list(teacher.class_names)
    tasks = [ShardTask(shard_id=c, label=c, class_name=names[c], first_index=0, count=per_class,
                       seed=_task_seed(seed, c)) for c in range(classes)]
    spec = {
        "name": f"quality-suite-{kind}", "method": kind, "seed": seed,
        "teacher": {"spec": str(checkpoint), "num_classes": len(names), "img_size": list(teacher.img_size),
                    "patch_size": list(teacher.info.patch_size), "mean": list(teacher.mean), "std": list(teacher.std)},
        "classes": list(range(classes)), "class_names": names[:classes], "images_per_class": per_class,
        "inversion": inversion,
    }
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    layout = CorpusLayout(out)
    write_manifest(layout, spec=spec, spec_hash=spec_hash, package_version=FORMAT, tasks=tasks)
    return layout, tasks


def write_inverted(roots: dict[str, Path], configs: dict[str, InversionConfig], teacher: Any, checkpoint: Path,
                   classes: int, per_class: int, seed: int) -> dict[str, dict[str, float]]:
    """The inverted corpora (dense, SMI, rebirth), class by class, rotating which goes first (same generator seed
    per class): their inversion times, measured side by side, FLOPs, and the teacher's mean probability of the
    target class on the finished images seen whole (``confidence``: SMI optimises only its kept patches).

    A rebirth run yields several images per target: it inverts just enough targets, keeps ``per_class`` images,
    and packs as many classes into one engine call (:func:`smi_core.invert_packed`) as a target yields images,
    so its forward holds as many targets as dense's, as a manifest's default batch does."""
    started = {m: _start_corpus(roots[m], m, teacher, checkpoint, classes, per_class, seed,
                                json.loads(json.dumps(dataclasses.asdict(configs[m])))) for m in configs}
    timing = {m: {"gen_seconds": 0.0, "flops": 0.0, "confidence": 0.0} for m in configs}
    methods = list(started)
    for c in range(classes):
        shift = c % len(methods)
        for method in methods[shift:] + methods[:shift]:
            yields = images_per_target(configs[method].selection)
            if c % yields:
                continue  # packed into the call that began at class c - c % yields
            layout, tasks = started[method]
            group = tasks[c:c + yields]
            batches = [(torch.full((targets_for(configs[method].selection, per_class),), task.label, dtype=torch.int64),
                        torch.Generator().manual_seed(batch_seed(task.seed, 0))) for task in group]
            runs = invert_packed(teacher.model, batches, configs[method], img_size=teacher.img_size,
                                 mean=teacher.mean, std=teacher.std)
            for task, run in zip(group, runs):
                timing[method]["gen_seconds"] += run.seconds  # the whole run's, surplus images included
                timing[method]["flops"] += run.flops
                result = run.first(per_class)  # a rebirth run's last target may yield more
                timing[method]["confidence"] += float(result.confidence.sum()) / (classes * per_class)
                samples = samples_from_result(result, task, offset=0, teacher=teacher.teacher_id, method=method,
                                              seconds_per_image=result.seconds / per_class)
                write_shard(layout, task.shard_id, samples, num_classes=len(teacher.class_names),
                            extra_stats={"inversion_seconds": result.seconds})
    for layout, _ in started.values():
        refresh_index(layout)
    return timing


def write_reference(root: Path, kind: str, teacher: Any, checkpoint: Path, name: str, classes: int,
                    per_class: int, seed: int) -> dict[str, float]:
    """A ``noise`` (0.5 + 0.25 N(0, 1), clipped) or ``real`` (training images) corpus, teacher logits as labels."""
    layout, tasks = _start_corpus(root, kind, teacher, checkpoint, classes, per_class, seed, None)
    h, w = teacher.img_size
    grid = (h // teacher.info.patch_size[0], w // teacher.info.patch_size[1])
    start = time.perf_counter()
    if kind == "real":
        real, real_labels = suite.real_images(name, per_class, seed)
    for task in tasks:
        if kind == "noise":
            images = noise_images(per_class, h, w, torch.Generator().manual_seed(task.seed))
        else:
            images = real[real_labels == task.label][:per_class]
        samples = labelled_samples(task, images, lambda x: teacher.model(normalize(x, teacher.mean, teacher.std)),
                                   grid, teacher_name=teacher.teacher_id, method=kind)
        write_shard(layout, task.shard_id, samples, num_classes=len(teacher.class_names))
    refresh_index(layout)
    return {"gen_seconds": time.perf_counter() - start}


# --- quantization ---------------------------------------------------------------------------------------


def calibration_sets(name: str, teacher: Any, roots: dict[str, Path], classes: int, per_class: int,
                     seed: int) -> dict[str, CalibrationSet]:
    """Normalised calibration sets of ``classes x per_class`` images, drawn with ``seed``: each corpus of
    ``roots`` with its kept-patch masks (read as ``smi-synth quantize`` reads a corpus: an SMI corpus
    calibrates on its kept tokens), the teacher's real training images (``real``: the train split, disjoint
    from the held-out one) and standard-normal noise in the normalised input space (``noise``)."""
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    n = classes * per_class
    sets = {kind: corpus_calibration_set(root, n, mean, std, seed)[0] for kind, root in roots.items()}
    real, labels = suite.real_images(name, per_class, seed)
    sets["real"] = CalibrationSet(normalize(real[labels < classes], mean, std))
    sets["noise"] = CalibrationSet(noise_calibration(n, int(teacher.img_size[0]), seed=seed))
    return sets


def quant_record(args: argparse.Namespace) -> dict[str, Any]:
    """What a (teacher, seed)'s quantization depends on besides its corpora: measured again when it differs."""
    return {"per_class": args.quant_per_class, "bits": [f"W{w}A{a}" for w, a in args.quant_bits],
            "quantizer": dataclasses.asdict(QuantSettings()), "quantizer_version": QUANTIZER_VERSION,
            "calibration_sets": list(CALIB), "corpus_tokens": "kept"}


def measure_quant(name: str, seed: int, teacher: Any, heldout: EvalSet, folder: Path,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The teacher quantized at ``--quant-bits``, calibrated on each set of :func:`calibration_sets` (the dense
    and SMI corpora under ``folder/corpora``), scored on ``heldout``; with the wall and CPU seconds it took."""
    start, cpu = time.perf_counter(), time.process_time()
    roots = {kind: folder / "corpora" / kind for kind in ("dense", "smi")}
    sets = calibration_sets(name, teacher, roots, args.classes, args.quant_per_class, seed)
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    rows = quantize_and_score(teacher.model.eval(), sets, args.quant_bits,
                              lambda qv: top1(qv, heldout, mean=mean, std=std))
    for label, row in rows.items():
        cells = "  ".join(f"{kind} {100 * row[kind]:.2f}%" for kind in CALIB)
        print(f"{name} seed {seed} {label}: {cells}", file=sys.stderr, flush=True)
    return {"settings": quant_record(args), "calib_images": {k: len(v) for k, v in sets.items()},
            "seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "top1": rows}


# --- one (teacher, seed) -------------------------------------------------------------------------------


def kd_views(args: argparse.Namespace) -> KDAugmentConfig:
    """The live teacher's views every student is distilled on: the library's defaults but ``--adversarial-eps``."""
    return KDAugmentConfig(adversarial_eps=args.adversarial_eps)


def settings_record(args: argparse.Namespace, name: str, configs: dict[str, dict]) -> dict[str, Any]:
    """What a (teacher, seed) result depends on besides the seed: a finished result is reused only if equal."""
    return {"teacher": name, "classes": args.classes, "per_class": args.per_class, "iterations": args.iterations,
            "distill_steps": args.steps, "student": args.student, "batch_size": args.batch_size, "lr": args.lr,
            "kd_views": dataclasses.asdict(kd_views(args)), "eval_images": args.eval_images,
            "distill_memory_budget": DistillConfig.memory_budget,  # corpora within it are dealt from memory
            "corpora": list(args.corpora),  # the distilled ones ([] with --quant-only)
            "teacher_steps": args.teacher_steps, "inversion": configs}


def eval_set(name: str, classes: int, limit: int) -> EvalSet:
    """The teacher's held-out images of its first ``classes`` classes (at most ``limit``, 0: all)."""
    images, labels = suite.heldout_images(name)
    keep = labels < classes
    images, labels = images[keep], labels[keep]
    if limit:
        images, labels = images[:limit], labels[:limit]
    return EvalSet.from_tensors(f"{name}-heldout", images, labels)


def _teacher(name: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any], Any, EvalSet]:
    """The suite teacher's checkpoint, its metadata, the loaded teacher and its held-out images."""
    teacher_recipe = TrainRecipe(steps=args.teacher_steps) if args.teacher_steps else None
    checkpoint, meta = suite.load_or_build_suite_teacher(name, args.cache, recipe=teacher_recipe)
    return checkpoint, meta, load_teacher(str(checkpoint)), eval_set(name, args.classes, args.eval_images)


def reuse(previous: dict[str, Any], name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """A finished result of the same settings; its quantization measured on its kept corpora when it lacks
    one of today's ``quant_record`` (left without when the corpora were not kept)."""
    folder = args.out / name / f"seed{seed}"
    print(f"{name} seed {seed}: reusing {folder / 'result.json'}", file=sys.stderr)
    if not args.quant or (previous.get("quant") or {}).get("settings") == quant_record(args):
        return previous
    if not all((folder / "corpora" / kind / "manifest.json").is_file() for kind in ("dense", "smi")):
        print(f"{name} seed {seed}: its corpora were not kept (--keep-corpora), so its quantization is not measured",
              file=sys.stderr)
        return previous
    _, _, teacher, heldout = _teacher(name, args)
    previous = {**previous, "quant": measure_quant(name, seed, teacher, heldout, folder, args)}
    previous = json.loads(json.dumps(previous, default=float))
    (folder / "result.json").write_text(json.dumps(previous, sort_keys=True, indent=1) + "\n")
    return previous


def finished(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The result of teacher ``name`` and ``seed`` already under ``args.out`` with today's settings, else None."""
    result_path = args.out / name / f"seed{seed}" / "result.json"
    if not result_path.is_file():
        return None
    previous = json.loads(result_path.read_text())
    return previous if previous.get("settings") == settings_record(args, name, args.recipe_configs) else None


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Generate the corpora for teacher ``name`` and seed ``seed``, quantize the teacher on them and distil each
    (as the flags say); the result dict."""
    folder = args.out / name / f"seed{seed}"
    configs = {m: args.recipe_fn(m, args.iterations) for m in inverted_methods(args.corpora)}
    settings = settings_record(args, name, args.recipe_configs)
    result_path = folder / "result.json"
    previous = finished(name, seed, args)
    if previous is not None:
        return reuse(previous, name, seed, args)
    checkpoint, meta, teacher, heldout = _teacher(name, args)
    spec = suite.suite_teacher(name)
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    result: dict[str, Any] = {
        "format": FORMAT, "teacher": name, "heldout_teacher": spec.heldout_teacher, "seed": seed,
        "teacher_top1": top1(teacher.model, heldout, mean=mean, std=std), "eval_images": heldout.num_images,
        "teacher_meta": {k: meta.get(k) for k in ("heldout_top1", "train_seconds", "sha256", "teacher_id", "params")},
        "num_patches": spec.num_patches, "img_size": spec.img_size, "images_per_corpus": args.classes * args.per_class,
        "iterations": args.iterations, "student": args.student, "labels": "live teacher, augmented views",
        "adversarial_eps": args.adversarial_eps, "inversion": args.recipe_configs["smi"],
        "settings": settings, "corpora": {},
    }
    # quality_seeds.SETTINGS keys that mean nothing here, fixed so its consistency check compares like with like
    result.update({"teacher_recipe": f"suite:{name}", "teacher_patch": int(spec.model_config["patch_size"])})
    roots = {kind: folder / "corpora" / kind for kind in CORPORA}
    print(f"{name} seed {seed}: teacher top-1 {100 * result['teacher_top1']:.2f}% on {heldout.num_images} held-out "
          f"images; generating {args.classes} x {args.per_class} per corpus ...", file=sys.stderr)
    gens = write_inverted({m: roots[m] for m in configs}, configs, teacher, checkpoint, args.classes,
                          args.per_class, seed)
    for kind in ("noise", "real"):
        if not args.quant_only:  # only students learn from these two
            gens[kind] = write_reference(roots[kind], kind, teacher, checkpoint, name, args.classes, args.per_class,
                                         seed)
    if args.quant:
        result["quant"] = measure_quant(name, seed, teacher, heldout, folder, args)
    batches = math.ceil(args.classes * args.per_class / args.batch_size)
    epochs = max(1, round(args.steps / batches))
    result["epochs"] = epochs
    cfg = DistillConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, show_progress=False,
                        augment=kd_views(args))
    distilled = [kind for kind in CORPORA if kind in args.corpora]
    # the same student and seed per corpus, with the teacher's normalisation (the suite's corpora record it)
    jobs = [StudentJob(corpus_info(roots[kind]), teacher.model, (mean, std), args.student, cfg, args.threads)
            for kind in distilled]
    if args.parallel_students and len(jobs) > 1:
        print(f"{name} seed {seed}: distilling {', '.join(distilled)} at once, one process each", file=sys.stderr)
    students = dict(zip(distilled, train_students(jobs, parallel=args.parallel_students)))
    for kind in (k for k in CORPORA if k in gens):
        row: dict[str, Any] = dict(gens[kind])
        if kind in students:
            res = students[kind]
            row.update(student_top1=top1(res.model, heldout, mean=mean, std=std), distill_seconds=res.seconds,
                       final_loss=res.losses[-1])
            row["student_vs_teacher"] = row["student_top1"] / max(result["teacher_top1"], 1e-9)
            print(f"{name} seed {seed} {kind}: student top-1 {100 * row['student_top1']:.2f}% "
                  f"({res.seconds:.0f} s)", file=sys.stderr)
        result["corpora"][kind] = row
    c = result["corpora"]
    result["smi_vs_dense_time"] = c["smi"]["gen_seconds"] / max(c["dense"]["gen_seconds"], 1e-9)
    if not args.keep_corpora:
        shutil.rmtree(folder / "corpora", ignore_errors=True)
    result = json.loads(json.dumps(result, default=float))
    result_path.write_text(json.dumps(result, sort_keys=True, indent=1) + "\n")
    return result


# --- summary ---------------------------------------------------------------------------------------------


def summarise_teacher(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One teacher's seeds: ``quality_seeds.summarise`` (paired SMI - dense) plus every corpus's student
    and its ratio to the teacher, as mean / sd over seeds."""
    out: dict[str, Any] = {"seeds": sorted(r["seed"] for r in results),
                           "teacher_top1": quality_seeds.spread([r["teacher_top1"] for r in results]),
                           "time_ratio": quality_seeds.spread([r["smi_vs_dense_time"] for r in results]),
                           "corpora": {}}
    for kind in CORPORA:
        rows = [r["corpora"][kind] for r in results if "student_top1" in r["corpora"].get(kind, {})]
        if rows:
            out["corpora"][kind] = {"student_top1": quality_seeds.spread([x["student_top1"] for x in rows]),
                                    "student_vs_teacher": quality_seeds.spread([x["student_vs_teacher"] for x in rows])}
    quant = quant_summary(results)
    if quant:
        out["quant"] = quant
    try:
        out["paired"] = quality_seeds.summarise(results)
    except quality_seeds.SummaryError as exc:
        out["paired"] = None
        out["paired_error"] = str(exc)
    out["goals_met_on_means"] = suite_goals(out)
    return out


def quant_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The quantized teacher's top-1 per bit setting and calibration set, mean / sd over the seeds measured
    with the first such seed's settings ({} when none was)."""
    measured = [r for r in results if r.get("quant")]
    if not measured:
        return {}
    first = measured[0]["quant"]
    measured = [r for r in measured if r["quant"]["settings"] == first["settings"]]
    return {"seeds": [r["seed"] for r in measured], "settings": first["settings"],
            "seconds": quality_seeds.spread([r["quant"]["seconds"] for r in measured]),
            "top1": {label: {kind: quality_seeds.spread([r["quant"]["top1"][label][kind] for r in measured])
                             for kind in CALIB if kind in first["top1"][label]} for label in first["settings"]["bits"]},
            "per_seed": {str(r["seed"]): r["quant"]["top1"] for r in measured}}


def suite_goals(teacher: dict[str, Any]) -> dict[str, bool]:
    """Issue 14's goals for one teacher's summary, on the means over seeds (only those its corpora allow):
    the dense student at least 80% of the teacher, SMI within 2 points of dense, SMI's generation at most
    40% of dense's, and both inverted corpora's worst seed at least 20 points above the best noise seed.
    (``paired.targets_met_on_means`` are ``quality_seeds``' goals for the robust teacher of issue 6.)"""
    c = teacher["corpora"]
    goals = {"smi_time_at_most_40pct": teacher["time_ratio"]["mean"] <= 0.40}
    if "dense" in c:
        goals["dense_at_least_80pct_teacher"] = c["dense"]["student_vs_teacher"]["mean"] >= 0.80
    if "dense" in c and "smi" in c:
        goals["smi_within_2pt_of_dense"] = (c["smi"]["student_top1"]["mean"]
                                            >= c["dense"]["student_top1"]["mean"] - 0.02)
    inverted = [c[k]["student_top1"]["min"] for k in ("dense", "smi") if k in c]
    if "noise" in c and inverted:
        goals["far_above_noise"] = quality_seeds.far_above_noise(min(inverted), c["noise"]["student_top1"]["max"])
    return goals


def _print_table(summary: dict[str, Any]) -> None:
    pct = lambda s: f"{100 * s['mean']:6.2f}% ({100 * s['sd']:.1f})"  # noqa: E731
    print(f"{'teacher':10} {'teacher':>8} {'noise':>14} {'dense':>14} {'SMI':>14} {'real':>14} "
          f"{'SMI/teacher':>11} {'SMI/dense t':>11} {'SMI-dense 95% interval':>24}")
    for name, s in summary["teachers"].items():
        c = s["corpora"]
        cell = lambda k: pct(c[k]["student_top1"]) if k in c else f"{'-':>14}"  # noqa: E731
        ratio = f"{100 * c['smi']['student_vs_teacher']['mean']:10.1f}%" if "smi" in c else f"{'-':>11}"
        ci = (s.get("paired") or {}).get("gap_95ci")
        interval = f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} pt" if ci else "(one seed)"
        held = " (held out)" if name in suite.HELDOUT_TEACHERS else ""
        print(f"{name:10} {100 * s['teacher_top1']['mean']:7.2f}% {cell('noise')} {cell('dense')} {cell('smi')} "
              f"{cell('real')} {ratio} {100 * s['time_ratio']['mean']:10.1f}% {interval:>24}{held}")
    print("cells: student top-1 mean over seeds (sd, points); real = the teacher's training data, the ceiling")
    for name, s in summary["teachers"].items():
        q = s.get("quant")
        for label, row in (q or {}).get("top1", {}).items():
            print(f"{name}: {label} calibrated on {q['settings']['per_class']} images a class of "
                  + ", ".join(f"{kind} {pct(cell)}" for kind, cell in row.items())
                  + f" (seeds {q['seeds']}, {q['seconds']['mean']:.0f} s a seed)")
    for name, s in summary["teachers"].items():
        missed = [goal for goal, met in s["goals_met_on_means"].items() if not met]
        print(f"{name}: issue 14's goals on the means: {'all met' if not missed else 'not met: ' + ', '.join(missed)}")


# --- the rows benchmarks/render.py tabulates ----------------------------------------------------------------


def utc_now() -> str:
    """The time a benchmark result records, in UTC to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit() -> str | None:
    """This checkout's commit (None outside git): every benchmark result records it."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def quant_report(summary: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A render-ready result (``benchmarks/render.py``: command, commit, date, machine, one row per teacher): the
    quantized teacher per bit setting and calibration set, and the students where this run distilled them."""
    cell = lambda s: f"{100 * s['mean']:.2f} ({100 * s['sd']:.1f})"  # noqa: E731
    figures, columns = [], {"teacher": "teacher", "seeds": "seeds", "float": "float %"}
    settings: dict[str, Any] = {}
    for name, t in summary["teachers"].items():
        q = t.get("quant")
        if not q:
            continue
        settings = q["settings"]
        row: dict[str, Any] = {"teacher": name, "seeds": len(q["seeds"]), "float": round(100 * t["teacher_top1"]["mean"], 2)}
        for kind in ("dense", "smi"):
            if kind in t["corpora"]:
                row[f"student_{kind}"] = cell(t["corpora"][kind]["student_top1"])
                columns[f"student_{kind}"] = f"{NAMES[kind]} student %"
        for label in sorted(q["top1"], key=lambda b: (b != "W4A4", b)):  # the setting that tells corpora apart first
            for kind, s in q["top1"][label].items():
                row[f"{label.lower()}_{kind}"] = cell(s)
                columns[f"{label.lower()}_{kind}"] = f"{label} {NAMES.get(kind, kind)} %"
        row["quant_s"] = round(q["seconds"]["mean"], 1)
        figures.append(row)
    columns["quant_s"] = "quantization s a seed"
    s = summary["settings"]
    return {"section": "quality", "order": 2, "title": "The quality suite's quantization: the teacher calibrated on "
            "each seed's corpora", **run,
            "setup": (f"For each teacher and seed, the teacher fake-quantized (pipeline/evaluate/quant, "
                      f"{', '.join(settings.get('bits', []))}) calibrated on {settings.get('per_class')} images a "
                      f"class of that seed's dense and SMI corpora ({s['classes']} classes x {s['per_class']} "
                      f"images, {s['iterations']} iterations), of real training images and of Gaussian noise; "
                      f"top-1 % on the teacher's held-out images, mean (sd) over seeds {summary['seeds']}; "
                      f"the seconds are the quantization part's wall time per (teacher, seed)."
                      + ("" if any("student_dense" in row for row in figures) else
                         " Students: the quality table's, of the same teacher (its seeds).")),
            "columns": columns, "figures": figures, "format": FORMAT, "summary": summary}


# --- command line -----------------------------------------------------------------------------------------


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny teachers (5 steps, own cache under OUT), 3 classes x 4 images, 12 iterations, 6 steps")
    p.add_argument("--out", type=Path, help="results folder (default: a temporary folder, removed)")
    p.add_argument("--teachers", default=",".join(suite.TEACHERS),
                   help=f"some of {', '.join(suite.ALL_TEACHERS)} (default: the three 10-class ones)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (inversion and student)")
    p.add_argument("--recipe", default="project",
                   help="inversion recipe: MODULE:FUNCTION or FILE.py:FUNCTION, (method, iterations) -> InversionConfig; "
                        "default: today's project recipe (project_recipe)")
    p.add_argument("--classes", type=int, default=10, help="first N classes of each teacher")
    p.add_argument("--per-class", type=int,
                   help="images per class per corpus, inverted as one batch (default 64: the pipeline's default "
                        "inversion batch; --quant-only: --quant-per-class)")
    p.add_argument("--iterations", type=int, default=200, help="inversion iterations (dense and SMI)")
    p.add_argument("--steps", type=int, help="distillation steps per corpus, rounded to whole epochs (default: what "
                   "smi-synth distill chooses for the corpus's size, pipeline.evaluate.defaults.default_steps)")
    p.add_argument("--student", default="test_resnet")
    p.add_argument("--batch-size", type=int, default=64, help="distillation batch size")
    p.add_argument("--lr", type=float, default=DistillConfig.lr, help="distillation learning rate")
    p.add_argument("--adversarial-eps", type=float, default=1.0, help="L2 size of the adversarial KD views (0: none)")
    p.add_argument("--corpora", default=",".join(CORPORA),
                   help="corpora to distil (all four are generated); dense and smi are needed for the paired summary")
    p.add_argument("--eval-images", type=int, default=0, help="cap on held-out images per teacher (0: all)")
    p.add_argument("--cache", type=Path, help="teacher cache root (default $SMI_SYNTH_CACHE or ~/.cache/smi-synth; "
                                             "--quick: OUT/teachers-quick)")
    p.add_argument("--teacher-steps", type=int, default=0, help="train the teachers for this many steps (0: their recipe)")
    p.add_argument("--keep-corpora", action="store_true", help="keep the corpora under OUT (default: removed)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (of each student's process with --parallel-students)")
    p.add_argument("--no-quant", dest="quant", action="store_false",
                   help="do not quantize the teacher on each seed's corpora (W8A8 and W4A4 on four sets cost 21 CPU s "
                        "a seed on digits64, 55 on shapes64: about a minute beside students of 20-30 minutes each)")
    p.add_argument("--quant-only", action="store_true",
                   help="quantize only: distil no student and invert only what calibration draws (--quant-per-class "
                        "images a class, unless --per-class says more); the noise and real corpora are not written")
    p.add_argument("--quant-per-class", type=int, default=4,
                   help="calibration images a class in each calibration set (dense, SMI, real, noise)")
    p.add_argument("--quant-bits", default="W8A8,W4A4", help="bit settings the teacher is quantized at")
    p.add_argument("--report", type=Path,
                   help="also write the quantization rows benchmarks/render.py tabulates to this JSON file "
                        "(e.g. benchmarks/results/quality_suite_quant.json)")
    p.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
                   help="the machine, as --report records it")
    p.add_argument("--parallel-students", action="store_true",
                   help="distil the corpora of a (teacher, seed) at once, each in its own process with --threads "
                        "threads (the same students as in turn; generation stays in this process, side by side)")
    args = p.parse_args(argv)
    args.teachers = _csv(args.teachers)
    bad = [t for t in args.teachers if t not in suite.ALL_TEACHERS]
    if bad or not args.teachers:
        p.error(f"--teachers: expected some of {', '.join(suite.ALL_TEACHERS)}, got {args.teachers}")
    try:
        args.seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds: expected distinct non-negative integers, got {args.seeds}")
    args.corpora = _csv(args.corpora)
    if not args.corpora or set(args.corpora) - set(CORPORA):
        p.error(f"--corpora: expected some of {', '.join(CORPORA)}, got {args.corpora}")
    if args.quant_only and not args.quant:
        p.error("--quant-only: cannot be combined with --no-quant")
    try:
        args.quant_bits = parse_bits(args.quant_bits)
    except UserError as exc:
        p.error(f"--quant-bits: {str(exc).removeprefix('--bits: ')}")
    if args.per_class is None:
        args.per_class = args.quant_per_class if args.quant_only else 64
    if args.quick:
        args.classes, args.per_class, args.iterations, args.steps = 3, 4, 12, 6
        args.teacher_steps = args.teacher_steps or 5
        args.eval_images = args.eval_images or 90
    if args.steps is None and args.classes >= 1 and args.per_class >= 1 and args.batch_size >= 1:
        args.steps = default_steps(args.classes * args.per_class, num_classes=args.classes, batch_size=args.batch_size)
    for flag, value, low in (("--classes", args.classes, 1), ("--per-class", args.per_class, 1),
                             ("--iterations", args.iterations, 2), ("--batch-size", args.batch_size, 1),
                             ("--threads", args.threads, 1), ("--eval-images", args.eval_images, 0),
                             ("--teacher-steps", args.teacher_steps, 0), ("--steps", args.steps, 1),
                             ("--quant-per-class", args.quant_per_class, 1)):
        if value < low:
            p.error(f"{flag}: must be >= {low}, got {value}")
    if args.quant and args.quant_per_class > args.per_class:
        p.error(f"--quant-per-class: calibration draws from corpora of {args.per_class} images a class, "
                f"got {args.quant_per_class}")
    if args.quant_only:
        args.corpora = []  # no student
    fewest = min(len(suite.suite_teacher(t).class_names) for t in args.teachers)
    if args.classes > fewest:
        p.error(f"--classes: the teachers' fewest classes are {fewest}, got {args.classes}")
    if not args.lr > 0 or args.adversarial_eps < 0:
        p.error("--lr: must be > 0 and --adversarial-eps >= 0")
    try:
        args.recipe_fn = load_recipe(args.recipe)
        args.recipe_configs = check_recipe(args.recipe_fn, args.iterations, inverted_methods(args.corpora))
    except ValueError as exc:
        p.error(f"--recipe: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="smi-quality-suite-") if args.out is None else None
    args.out = Path(args.out or tmp.name)  # type: ignore[union-attr]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick and args.cache is None:
        args.cache = args.out / "teachers-quick"  # tiny teachers never replace the real cached ones
    start = time.perf_counter()
    per_teacher: dict[str, list[dict[str, Any]]] = {}
    for name in args.teachers:
        for seed in args.seeds:
            per_teacher.setdefault(name, []).append(run_one(name, seed, args))
    summary = {"format": FORMAT, "recipe": args.recipe, "inversion": args.recipe_configs,
               "settings": {k: v for k, v in settings_record(args, "*", {}).items() if k not in ("teacher", "inversion")},
               "seeds": args.seeds, "teachers": {n: summarise_teacher(r) for n, r in per_teacher.items()},
               "heldout_teachers": [n for n in args.teachers if n in suite.HELDOUT_TEACHERS],
               "wall_seconds": time.perf_counter() - start}
    summary = json.loads(json.dumps(summary, default=float))
    (args.out / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=1) + "\n")
    if args.report is not None:
        run = {"command": shlex.join(["python", os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)]),
               "commit": git_commit(), "date": utc_now(),
               "machine": args.machine}  # no wall time: finished (teacher, seed) results are reused
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(quant_report(summary, run), indent=1) + "\n")
    _print_table(summary)
    emit_json(summary)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
