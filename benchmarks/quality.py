"""Quality benchmark on the toy teacher: noise vs dense inversion vs SMI inversion, side by side.

For each corpus of the same size (Gaussian-noise images, dense inversion, SMI inversion, and as the
ceiling real toy training images, all with the teacher's logits as soft labels) it records the
generation time, distils the same student (same epochs and seed) and reports its top-1 on the toy
held-out split, plus the teacher quantized at W8A8 and W4A8 calibrated on that corpus. Inverted corpora
are generated with the project's own machinery (``spec_from_dict`` + ``run_corpus``; ``--in-process``
runs ``ShardWorker`` directly, without Ray).

The default student is timm's ``test_resnet`` (374 k parameters), distilled against the live teacher
with the views of :mod:`pipeline.evaluate.kd_views` (``--stored-labels`` uses the corpus's soft labels
instead); on the real images it reaches about 99%, so a low score on a synthetic corpus is the
corpus's, not the student's. ``--student toy-student --sparse`` trains the small ViT on kept tokens only.

The default teacher is the robust toy teacher (``--teacher-recipe robust``, built once under ``--out``):
the default toy teacher's inversions are fooling images that carry nothing to a student. Inversion
runs the paper's stopping schedule (t = 50, 100, 200, 300 of 4,000) scaled to ``--iterations``, and
SMI lets the TV prior keep smoothing stopped patches (``--stopped-patches``). Corpora are distilled
``--jobs`` at a time in separate processes (one thread each). ``--teacher-patch 2`` builds the robust
teacher on a 16 x 16 grid of 2 x 2 patches (256, nearer a /16 ViT's 196 than the toy's 64), where
stopping patches saves more time (the paper schedule took 22.5% of dense time there, 35.5% at 64 patches).

    .venv/bin/python benchmarks/quality.py --quick --out /tmp/quality   # smoke: minutes on 2 cores
    .venv/bin/python benchmarks/quality.py --out /tmp/quality           # 10 x 32 images, 300 iterations
    .venv/bin/python benchmarks/quality.py --out /tmp/quality-p2 --teacher-patch 2 --corpora dense,smi

Targets: SMI student within 1 point of the dense student at <= 40% of dense generation time; SMI
student >= 80% of teacher top-1; both far above noise. The last stdout line is a JSON object; with
``--out`` it is also written to ``OUT/quality.json``. One seed's students move by a few points: run
one ``--out`` per ``--seed`` and summarise them with ``benchmarks/quality_seeds.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.console import emit_json  # noqa: E402
from pipeline.corpus.index import read_stats, refresh_index  # noqa: E402
from pipeline.corpus.layout import CorpusLayout  # noqa: E402
from pipeline.evaluate.common import corpus_info, eval_source, top1  # noqa: E402
from pipeline.evaluate.distill import (  # noqa: E402
    DistillConfig,
    build_student,
    count_params,
    distill,
)
from pipeline.evaluate.quantize import calibrate, corpus_calibration, quantize_model  # noqa: E402
from pipeline.run.plan import plan_shards  # noqa: E402
from smi_core.recipe import PAPER_STOP_FRACTIONS, scaled_stops  # noqa: E402

log = logging.getLogger("quality")

DEMO_STOP_FRACTIONS = (20 / 300, 40 / 300, 80 / 300, 120 / 300)  # manifests/demo.yaml's schedule, scaled
# paper-3: the paper's first three stops only, keeping 34% of the patches instead of 24%
SCHEDULES = {"paper": PAPER_STOP_FRACTIONS, "paper-3": PAPER_STOP_FRACTIONS[:3], "demo": DEMO_STOP_FRACTIONS}
QUANT_SETTINGS = ((8, 8), (4, 8))
CORPORA = ("noise", "dense", "smi", "real")  # real: the teacher's own data, the ceiling (not data-free)


# Robust toy teacher: one L2 adversarial step (eps 0.5, pixels in [0, 1]) per batch; twice the default
# steps, because robust training learns more slowly (1,200 steps gave 84% held-out top-1, 2,400 100%).
ROBUST_RECIPE = {"adversarial_l2_eps": 0.5, "steps": 2400, "threads": 2}
TEACHER_PATCHES = (4, 2)  # 4: the toy's 8 x 8 grid (64 patches); 2: 16 x 16 (256), nearer a /16 ViT's 196


def toy_num_patches(patch_size: int) -> int:
    """Patches of a toy image at ``patch_size``."""
    from pipeline.teachers.toy import toy_model_config

    return (toy_model_config()["img_size"] // patch_size) ** 2


def toy_teacher_spec(recipe: str, root: Path, patch_size: int = 4) -> str:
    """``toy`` (the built-in teacher) or the robust toy teacher's checkpoint, built once under ``root``.

    The robust teacher's sparse training phase shows it half of its patches, whatever ``patch_size``.
    """
    if recipe == "default":
        return "toy"
    from pipeline.teachers.cache import WEIGHTS_FILE
    from pipeline.teachers.toy import TrainConfig, cache_folder, load_or_build_toy_teacher

    cache = root / ("teacher-robust" if patch_size == 4 else f"teacher-robust-p{patch_size}")
    config = TrainConfig(**ROBUST_RECIPE, patch_size=patch_size, keep_tokens=toy_num_patches(patch_size) // 2)
    print(f"building / loading the robust toy teacher ({patch_size} x {patch_size} patches) ...", file=sys.stderr)
    _, meta = load_or_build_toy_teacher(cache, config=config)
    log.info("robust toy teacher: held-out top-1 %.4f", meta["heldout_top1"])
    return str(cache_folder(cache) / WEIGHTS_FILE)


def manifest_dict(method: str, args: argparse.Namespace, out: Path) -> dict:
    """A manifest for the toy teacher (the demo's settings at ``args``' size)."""
    n = args.iterations
    stops = list(scaled_stops(SCHEDULES[args.schedule], n))
    # saliency only where it is used: a dense corpus made before the option existed keeps its spec hash
    saliency = {"saliency": args.saliency} if method == "smi" else {}
    return {
        "name": f"quality-{method}",
        "teacher": args.teacher_spec,
        "classes": {"start": 0, "stop": args.classes},
        "images_per_class": args.per_class,
        "images_per_shard": args.per_class,
        "inversion": {
            "method": method if method in ("dense", "smi") else "smi",
            "iterations": n,
            "batch_size": min(args.per_class, args.inv_batch),
            "lr": args.inv_lr,
            "betas": [0.5, 0.99],
            "schedule": {"iterations": stops, "ratios": [0.3] * len(stops)},
            "stopped_patches": args.stopped_patches,
            **saliency,
            "loss": {"ce": 1.0, "tv_l2": args.tv_l2},
            "augment": {"max_roll_fraction": args.roll},
        },
        "seed": args.seed,
        "device": "cpu",
        "output": str(out),
        "resources": {"workers": args.workers, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "license": "other",
    }


def _shard_seconds(out: Path, key: str = "inversion_seconds") -> float:
    layout = CorpusLayout(out)
    return sum(float(read_stats(layout, int(p.stem.rsplit("-", 1)[1])).get(key, 0.0))
               for p in sorted(layout.stats_dir.glob("*.json")))


def generate_inverted(method: str, args: argparse.Namespace, out: Path) -> dict:
    """Dense or SMI corpus via the run machinery; returns timing."""
    from pipeline.run.spec import spec_from_dict

    spec = spec_from_dict(manifest_dict(method, args, out), label=f"quality-{method}")
    start = time.perf_counter()
    if args.in_process:
        from pipeline.run.runner import check_resumable, prepare_out
        from pipeline.run.worker import ShardWorker, WorkerConfig

        tasks = plan_shards(spec)
        complete = check_resumable(spec, CorpusLayout(out))
        pending = [t for t in tasks if t.shard_id not in complete]
        if pending:  # a complete corpus is reused as it is, whichever execution made it
            prepare_out(spec, tasks, complete, {"device": "cpu", "dtype": "float32", "threads": torch.get_num_threads()})
            worker = ShardWorker(WorkerConfig(
                teacher_spec=spec.teacher_spec, out=str(out), inversion=spec.inversion_config(), method=spec.method,
                batch_size=spec.batch_size, image_format=spec.image_format, num_classes=spec.teacher.num_classes,
            ))
            for task in pending:
                worker.run(task)
            refresh_index(CorpusLayout(out))
    else:
        from pipeline.run.runner import run_corpus

        report = run_corpus(spec, workers=args.workers, show_progress=False)
        if not report.ok:
            raise RuntimeError(f"{method} corpus generation failed: {report.as_dict()}")
    wall = time.perf_counter() - start
    return {"wall_seconds": wall, "gen_seconds": _shard_seconds(out)}


def reference_images(kind: str, count: int, label: int, seed: int, size: int) -> torch.Tensor:
    """``count`` images in [0, 1] for a reference corpus: Gaussian noise (0.5 + 0.25 N(0,1), clipped), or
    real toy training images of class ``label`` (the teacher's own data: the ceiling, not data-free)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return (0.5 + 0.25 * torch.randn(count, 3, size, size, generator=g)).clamp(0, 1)
    from pipeline.teachers.toy_data import NUM_CLASSES, make_toy_images

    images, labels = make_toy_images(count * NUM_CLASSES * 2, seed % 2**62, image_size=size, split="train")
    picked = images[labels == label][:count]
    if len(picked) < count:
        raise RuntimeError(f"only {len(picked)} toy images of class {label} drawn, {count} needed")
    return picked


def generate_reference(kind: str, args: argparse.Namespace, out: Path, teacher) -> dict:
    """A ``noise`` or ``real`` corpus of the same plan as the inverted ones, the teacher's logits as soft labels."""
    from pipeline.corpus.layout import sample_key
    from pipeline.corpus.writer import ShardSample, write_shard
    from pipeline.teachers.classify import normalize
    from pipeline.run.runner import check_resumable, prepare_out
    from pipeline.run.spec import spec_from_dict

    spec = spec_from_dict(manifest_dict(kind, args, out), label=f"quality-{kind}")
    tasks = plan_shards(spec)
    start = time.perf_counter()
    prepare_out(spec, tasks, check_resumable(spec, CorpusLayout(out)), {"device": "cpu", "dtype": "float32"})
    (height, width), (ph, pw) = spec.teacher.img_size, spec.teacher.patch_size
    size, grid = height, (height // ph, width // pw)
    gen_seconds = 0.0
    for task in tasks:
        t0 = time.perf_counter()
        images = reference_images(kind, task.count, task.label, task.seed, size)
        pixels = (images * 255).round().to(torch.uint8)
        hwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
        with torch.no_grad():
            logits = teacher.model(normalize(pixels.float() / 255, teacher.mean, teacher.std))
        gen_seconds += time.perf_counter() - t0
        probs = logits.softmax(-1)
        samples = [
            ShardSample(
                key=sample_key(task.label, task.first_index + i), image=hwc[i],
                label=task.label, class_name=task.class_name, seed=task.seed, shard_id=task.shard_id,
                teacher=teacher.teacher_id, method=kind, kept_patches=list(range(grid[0] * grid[1])),
                patch_grid=grid, final_loss=0.0, confidence=float(probs[i, task.label]),
                soft_label=logits[i].numpy().astype("float32"), generation_seconds=0.0,
            )
            for i in range(task.count)
        ]
        write_shard(CorpusLayout(out), task.shard_id, samples, num_classes=spec.teacher.num_classes)
    refresh_index(CorpusLayout(out))
    return {"wall_seconds": time.perf_counter() - start, "gen_seconds": gen_seconds}


def evaluate_corpus(name: str, out: Path, args: argparse.Namespace) -> dict:
    """Distil the student on the corpus and quantize the teacher calibrated on it (in a worker process)."""
    from pipeline.evaluate.kd_views import NO_AUGMENT, KDAugmentConfig
    from pipeline.teachers.loading import load_teacher

    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher_spec)
    info = corpus_info(out)
    eval_set = eval_source("toy", class_ids=info.class_ids, img_size=info.img_size, toy_images=args.eval_images)
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    torch.manual_seed(args.seed)
    student = build_student(args.student, num_classes=info.num_classes, img_size=info.img_size,
                            patch_size=info.patch_size)
    augment = NO_AUGMENT if args.stored_labels else KDAugmentConfig(adversarial_eps=args.adversarial_eps)
    cfg = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        sparse=args.sparse, show_progress=False, augment=augment)
    live = None if args.stored_labels else teacher.model
    res = distill(student, info, cfg, mean=mean, std=std, teacher=live, teacher_norm=(mean, std))
    row = {"student_top1": top1(res.model, eval_set, mean=mean, std=std), "distill_seconds": res.seconds,
           "student_params": count_params(res.model), "final_loss": res.losses[-1]}
    calibration = list(corpus_calibration(str(out), args.calib_images, mean, std))  # read once, used per setting
    for wb, ab in QUANT_SETTINGS:
        qm = quantize_model(teacher.model, wb, ab)
        calibrate(qm, calibration)
        row[f"w{wb}a{ab}_top1"] = top1(qm.model, eval_set, mean=mean, std=std)
    print(f"{name}: student top-1 {100 * row['student_top1']:.2f}% after {res.seconds:.0f} s", file=sys.stderr)
    return row


def evaluate_all(root: Path, args: argparse.Namespace) -> dict[str, dict]:
    """:func:`evaluate_corpus` for each corpus in ``args.corpora``, ``args.jobs`` at a time in spawned processes."""
    if args.jobs == 1:
        return {name: evaluate_corpus(name, root / name, args) for name in args.corpora}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(evaluate_corpus, name, root / name, args) for name in args.corpora}
        return {name: f.result() for name, f in futures.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 10 classes x 16 images, 100 iterations, 100 epochs")
    p.add_argument("--out", help="folder for the three corpora (default: a temporary folder, removed)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--inv-batch", type=int, default=32, help="inversion batch size")
    p.add_argument("--inv-lr", type=float, default=0.1, help="inversion learning rate")
    p.add_argument("--tv-l2", type=float, default=0.75, help="inversion TV-l2 weight")
    p.add_argument("--roll", type=float, default=0.0,
                   help="inversion augment.max_roll_fraction (whole-patch rolls; 0: flip only; the toy's objects "
                        "are centred and a one-patch roll stops transfer)")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="paper",
                   help="SMI stop steps: paper (t = 50..300 of 4,000, scaled), paper-3 (its first three) or demo "
                        "(manifests/demo.yaml's)")
    p.add_argument("--stopped-patches", choices=("frozen", "prior"), default="prior",
                   help="SMI's stopped pixels: pinned (frozen) or left to the TV prior (prior)")
    p.add_argument("--saliency", choices=("instant", "accumulated"), default="instant",
                   help="which CLS attention ranks SMI's patches at a stop: the forward before it (instant, the "
                        "paper) or the sum over every forward since the start (accumulated)")
    p.add_argument("--teacher-recipe", choices=("default", "robust"), default="robust",
                   help="robust: a toy teacher trained with L2 adversarial steps (cached under --out; minutes)")
    p.add_argument("--teacher-patch", type=int, choices=TEACHER_PATCHES, default=4,
                   help="the robust toy teacher's patch side: 4 (64 patches) or 2 (256; its build took 12 min "
                        "on 2 idle cores)")
    p.add_argument("--epochs", type=int, default=400, help="distillation epochs (2,000 steps at 320 images)")
    p.add_argument("--student", default="test_resnet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--sparse", action="store_true", help="distil on kept tokens only (inverted corpora)")
    p.add_argument("--stored-labels", action="store_true",
                   help="distil on the corpus's stored soft labels (default: the live teacher labels augmented views)")
    p.add_argument("--adversarial-eps", type=float, default=1.0,
                   help="L2 size of the adversarial student-teacher views (0: none)")
    p.add_argument("--jobs", type=int, default=2, help="corpora distilled at once (one process each)")
    p.add_argument("--corpora", default=",".join(CORPORA),
                   help="corpora to distil and quantize (all are generated, for the time ratio); e.g. smi for an ablation")
    p.add_argument("--threads", type=int, default=1, help="torch threads per distillation process")
    p.add_argument("--calib-images", type=int, default=256)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--in-process", action="store_true", help="ShardWorker in this process instead of Ray")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.corpora = [c for c in args.corpora.split(",") if c]
    unknown = sorted(set(args.corpora) - set(CORPORA))
    if unknown or not args.corpora:
        p.error(f"--corpora: expected some of {', '.join(CORPORA)}, got {args.corpora}")
    if args.teacher_recipe == "default" and args.teacher_patch != 4:
        p.error("--teacher-patch: the default toy teacher has 4 x 4 patches; pass --teacher-recipe robust")
    if args.quick:
        args.per_class, args.iterations, args.inv_batch, args.epochs = 16, 100, 16, 100
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from pipeline.teachers.loading import load_teacher

    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="smi-quality-")
    root = Path(args.out or tmp.name)  # type: ignore[union-attr]
    args.teacher_spec = toy_teacher_spec(args.teacher_recipe, root, args.teacher_patch)
    teacher = load_teacher(args.teacher_spec)
    gens: dict[str, dict] = {}
    for name in CORPORA:
        out = root / name
        print(f"generating {name} corpus ({args.classes} x {args.per_class}) in {out} ...", file=sys.stderr)
        gens[name] = generate_inverted(name, args, out) if name in ("dense", "smi") else generate_reference(name, args, out, teacher)
    info = corpus_info(root / "smi")
    eval_set = eval_source("toy", class_ids=info.class_ids, img_size=info.img_size, toy_images=args.eval_images)
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    result: dict = {"teacher": args.teacher_spec, "teacher_recipe": args.teacher_recipe,
                    "teacher_patch": args.teacher_patch, "num_patches": toy_num_patches(args.teacher_patch),
                    "inversion": {"lr": args.inv_lr, "tv_l2": args.tv_l2, "max_roll_fraction": args.roll,
                                  "schedule": manifest_dict("smi", args, root)["inversion"]["schedule"],
                                  "stopped_patches": args.stopped_patches, "saliency": args.saliency},
                    "labels": "stored" if args.stored_labels else "live teacher, augmented views",
                    "adversarial_eps": args.adversarial_eps,
                    "teacher_top1": top1(teacher.model, eval_set, mean=mean, std=std), "eval_images": eval_set.num_images,
                    "images_per_corpus": args.classes * args.per_class, "iterations": args.iterations,
                    "epochs": args.epochs, "student": args.student, "seed": args.seed, "corpora": {}}
    print(f"distilling / quantizing on {', '.join(args.corpora)} ({args.jobs} at a time) ...", file=sys.stderr)
    rows = evaluate_all(root, args)
    for name in CORPORA:
        result["corpora"][name] = {**gens[name], **rows.get(name, {})}
    c = result["corpora"]
    result["smi_vs_dense_time"] = c["smi"]["gen_seconds"] / max(c["dense"]["gen_seconds"], 1e-9)
    targets = {"smi_time_at_most_40pct": result["smi_vs_dense_time"] <= 0.40}
    if "student_top1" in c["smi"]:
        result["smi_student_vs_teacher"] = c["smi"]["student_top1"] / max(result["teacher_top1"], 1e-9)
        targets["smi_student_at_least_80pct_teacher"] = result["smi_student_vs_teacher"] >= 0.80
        if "student_top1" in c["dense"]:
            result["smi_minus_dense_top1"] = c["smi"]["student_top1"] - c["dense"]["student_top1"]
            targets["smi_within_1pt_of_dense"] = result["smi_minus_dense_top1"] >= -0.01
    result["targets_met"] = targets
    pct = lambda r, k: f"{100 * r[k]:7.2f}%" if k in r else f"{'-':>8}"  # noqa: E731
    print(f"\nteacher top-1 {100 * result['teacher_top1']:.2f}% on {eval_set.num_images} toy held-out images")
    print(f"{'corpus':8} {'gen s':>8} {'wall s':>8} {'student':>8} {'W8A8':>8} {'W4A8':>8}")
    for name, r in c.items():
        print(f"{name:8} {r['gen_seconds']:8.1f} {r['wall_seconds']:8.1f} {pct(r, 'student_top1')} "
              f"{pct(r, 'w8a8_top1')} {pct(r, 'w4a8_top1')}")
    print("(real: the teacher's own training distribution, the ceiling for this student; not data-free)")
    line = f"SMI/dense generation time {100 * result['smi_vs_dense_time']:.1f}%"
    if "smi_minus_dense_top1" in result:
        line += f"; SMI - dense student {100 * result['smi_minus_dense_top1']:+.2f} pt"
    if "smi_student_vs_teacher" in result:
        line += f"; SMI student / teacher {100 * result['smi_student_vs_teacher']:.1f}%"
    print(line)
    result = json.loads(json.dumps(result, default=float))
    if tmp is None:  # for benchmarks/quality_seeds.py, which summarises runs over seeds
        (root / "quality.json").write_text(json.dumps(result, sort_keys=True) + "\n")
    emit_json(result)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
