"""``smi-synth distill``: data-free knowledge distillation of a timm student from a corpus.

The loss is ``KL(softmax(s/T) || softmax(t/T)) * T^2`` against the stored soft labels (``.logits.npy``)
or a live teacher (``--teacher``). A live teacher labels augmented views of each batch
(:mod:`pipeline.evaluate.kd_views`: flip/shift, colour jitter and channel shuffle, and one adversarial
student-teacher step), which is what lets a student learn from a few hundred inverted images.
The corpus is streamed through :func:`pipeline.corpus.loader.load_corpus` with a seeded shard shuffle and a
bounded sample-shuffle buffer. ``--sparse`` trains a ViT student on each image's kept patch tokens only
(``smi_core.vit.forward_subset``); the student's patch grid must be the corpus's (a live teacher
still sees the whole image, and only colour views apply, so the kept masks stay aligned). Top-1 of the
student and of the teacher is measured on real held-out images.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from pipeline.console import emit_json, progress
from pipeline.corpus.loader import iter_samples, load_corpus
from pipeline.errors import UserError
from pipeline.evaluate.common import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    CorpusInfo,
    EvalSet,
    corpus_info,
    default_eval_spec,
    eval_class_ids,
    eval_source,
    load_teacher_spec,
    normalize,
    resolve_recorded_teacher,
    top1,
)
from pipeline.evaluate.kd_views import (
    NO_AUGMENT,
    KDAugmentConfig,
    augment_views,
    kd_divergence,
)
from smi_core.vit import forward_subset, vit_geometry

log = logging.getLogger(__name__)

TOY_STUDENT = "toy-student"
SHUFFLE_BUFFER = 4096  # samples held for shuffling (bounded memory; a class shard is contiguous)


@dataclass
class DistillConfig:
    """Training hyper-parameters (the CLI's)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 4.0
    sparse: bool = False
    device: str = "cpu"
    seed: int = 0
    weight_decay: float = 0.05
    # views the live teacher labels (stored soft labels fit the stored image only, so none without one)
    augment: KDAugmentConfig = field(default_factory=KDAugmentConfig)
    show_progress: bool = True


@dataclass
class DistillResult:
    """What :func:`distill` did."""

    model: nn.Module
    images_seen: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch


def build_student(name: str, *, num_classes: int, img_size: int, patch_size: int | None = None) -> nn.Module:
    """A freshly initialised student: ``toy-student`` (ViT, embed 64, depth 3, patch 4) or a timm model name."""
    import timm

    if name == TOY_STUDENT:
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=img_size, patch_size=patch_size or 4, num_classes=num_classes, embed_dim=64, depth=3,
            num_heads=4, mlp_ratio=2.0,
        )
    if not timm.is_model(name):
        raise UserError(f"--student: unknown timm model {name!r} (or use '{TOY_STUDENT}')")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size)
    except TypeError:  # models without an img_size argument (CNNs)
        return timm.create_model(name, pretrained=False, num_classes=num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _batches(ds: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Collate the loader's (image, label, soft, mask) tuples into batches."""
    buf: list[tuple] = []
    for item in ds:
        buf.append(item)
        if len(buf) == batch_size:
            yield _collate(buf)
            buf = []
    if buf:
        yield _collate(buf)


def _collate(items: list[tuple]) -> tuple[torch.Tensor, ...]:
    images, labels, soft, masks = zip(*items)
    return torch.stack(images), torch.tensor(labels), torch.stack(soft), torch.stack(masks)


def _sparse_forward(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Student logits on each image's kept patches; images with different kept counts run in groups."""
    flat = masks.flatten(1)
    counts = flat.sum(1)
    out: torch.Tensor | None = None
    for k in torch.unique(counts).tolist():
        rows = (counts == k).nonzero().flatten()
        if k == 0:
            logits, _ = forward_subset(model, images[rows], torch.zeros(len(rows), 1, dtype=torch.long))
        else:
            index = flat[rows].nonzero()[:, 1].view(len(rows), int(k))  # row-major kept indices
            logits, _ = forward_subset(model, images[rows], index)
        if out is None:
            out = logits.new_empty(len(images), logits.shape[-1])
        out[rows] = logits
    assert out is not None
    return out


def check_sparse_student(student: nn.Module, info: CorpusInfo, grid: tuple[int, int] | None) -> None:
    """``--sparse`` needs a timm ViT whose patch grid is the corpus's kept-mask grid."""
    try:
        geom = vit_geometry(student, (info.img_size, info.img_size))
    except ValueError as exc:
        raise UserError(f"--sparse: the student must be a timm ViT ({exc})") from None
    if grid is not None and tuple(geom.grid) != tuple(grid):
        raise UserError(f"--sparse: the student's patch grid {geom.grid} differs from the corpus's {tuple(grid)}")


def distill(
    student: nn.Module,
    info: CorpusInfo,
    cfg: DistillConfig,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    teacher: nn.Module | None = None,
    teacher_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> DistillResult:
    """Train ``student`` on the corpus at ``info.root`` by KD; returns the trained model and stats.

    ``teacher`` (a live teacher) replaces the stored soft labels; it sees the images normalised with
    ``teacher_norm`` (its own mean/std) when given, else with the student's ``mean``/``std``.
    """
    device = torch.device(cfg.device)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    ds = load_corpus(
        info.root, soft_labels=True, kept_mask=True, shuffle_shards=True,
        shuffle_buffer=SHUFFLE_BUFFER, seed=cfg.seed, split_by_node=False, split_by_worker=False,
    )
    total_steps = max(1, cfg.epochs * math.ceil(ds.num_samples / cfg.batch_size))
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(total_steps // 10, 200)
    def lr_factor(step: int) -> float:  # linear warmup, then cosine to 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    g = torch.Generator().manual_seed(cfg.seed)
    augment = NO_AUGMENT
    if teacher is not None:  # kept masks stay aligned only without moving pixels: sparse gets colour only
        augment = cfg.augment if not cfg.sparse else replace(cfg.augment, flip=False, max_shift=0, adversarial_eps=0.0)
    teacher_mean, teacher_std = teacher_norm or (mean, std)

    def student_logits(raw: torch.Tensor) -> torch.Tensor:
        return student(normalize(raw, mean, std))

    def teacher_logits(raw: torch.Tensor) -> torch.Tensor:
        return teacher(normalize(raw, teacher_mean, teacher_std))  # type: ignore[misc]

    start, seen, losses = time.perf_counter(), 0, []
    for epoch in range(cfg.epochs):
        ds.set_epoch(epoch)
        bar = progress(ds.num_samples, f"epoch {epoch + 1}/{cfg.epochs}", unit="img",
                       disable=not (cfg.show_progress and sys.stderr.isatty()))
        total, n = 0.0, 0
        with bar:
            for images, _labels, soft, masks in _batches(ds, cfg.batch_size):
                count = len(images)  # corpus images in this step (adversarial views double the batch)
                raw = images.to(device)
                if teacher is not None:
                    raw, soft = augment_views(raw, g, augment, student=student_logits, teacher=teacher_logits,
                                              temperature=cfg.temperature)
                images = normalize(raw, mean, std)
                soft = soft.to(device)
                if soft.shape[-1] != info.num_classes:
                    raise UserError(
                        f"corpus soft labels have {soft.shape[-1]} classes, the manifest says {info.num_classes}"
                    )
                logits = _sparse_forward(student, images, masks.to(device)) if cfg.sparse else student(images)
                loss = kd_divergence(logits, soft, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * count
                n += count
                bar.update(count)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        seen += n
        losses.append(total / max(n, 1))
        log.info("epoch %d: loss %.4f over %d images", epoch + 1, losses[-1], n)
    student.eval()
    return DistillResult(student, seen, time.perf_counter() - start, losses)


def _first_mask_grid(info: CorpusInfo) -> tuple[int, int] | None:
    for rec in iter_samples(info.root):
        return tuple(int(g) for g in rec["kept_mask"].shape)  # type: ignore[return-value]
    return None


def cmd_distill(args: argparse.Namespace) -> int:
    """Entry point of ``smi-synth distill``."""
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.temperature <= 0:
        raise UserError("--epochs and --batch-size must be >= 1, --lr and --temperature > 0")
    try:
        augment = KDAugmentConfig(max_shift=args.max_shift, colour_jitter=args.colour_jitter,
                                  channel_shuffle=args.channel_shuffle, adversarial_eps=args.adversarial_eps)
    except ValueError as exc:
        name, _, why = str(exc).partition(": ")
        raise UserError(f"--{name.replace('_', '-')}: {why}") from None
    info = corpus_info(args.out)
    teacher = None
    teacher_spec = args.teacher or resolve_recorded_teacher(info)
    if args.teacher:
        teacher = load_teacher_spec(args.teacher, device=args.device)
        if int(teacher.num_classes) != info.num_classes:
            raise UserError(
                f"--teacher: {args.teacher} has {teacher.num_classes} classes, the corpus has {info.num_classes}"
            )
    eval_spec = args.eval_spec or default_eval_spec(info.teacher_spec, info.class_ids)
    mean = info.mean or (tuple(teacher.mean) if teacher is not None else None)
    std = info.std or (tuple(teacher.std) if teacher is not None else None)
    torch.manual_seed(args.seed)
    student = build_student(args.student, num_classes=info.num_classes, img_size=info.img_size,
                            patch_size=info.patch_size)
    heads = getattr(student, "num_classes", info.num_classes)
    if int(heads) != info.num_classes:
        raise UserError(f"--student: {args.student} has {heads} classes, the corpus has {info.num_classes}")
    if args.sparse:
        check_sparse_student(student, info, _first_mask_grid(info))
    # the teacher for eval (and its normalisation when the manifest records none)
    eval_teacher = teacher
    if eval_teacher is None and teacher_spec is not None and (eval_spec is not None or mean is None):
        try:
            eval_teacher = load_teacher_spec(teacher_spec, device=args.device)
        except UserError as exc:
            log.warning("cannot load the corpus's teacher for evaluation: %s", exc)
    class_ids = eval_class_ids(info, eval_teacher)
    eval_set: EvalSet | None = eval_source(eval_spec, class_ids=class_ids, img_size=info.img_size)
    if mean is None or std is None:
        if eval_teacher is not None:
            mean, std = tuple(eval_teacher.mean), tuple(eval_teacher.std)
        else:
            log.warning("no teacher mean/std recorded; normalising with %s/%s", DEFAULT_MEAN, DEFAULT_STD)
            mean, std = DEFAULT_MEAN, DEFAULT_STD
    cfg = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, temperature=args.temperature,
                        sparse=args.sparse, device=args.device, seed=args.seed, augment=augment)
    result = distill(student, info, cfg, mean=mean, std=std,
                     teacher=teacher.model if teacher is not None else None,
                     teacher_norm=(tuple(teacher.mean), tuple(teacher.std)) if teacher is not None else None)
    student_top1 = teacher_top1 = None
    if eval_set is not None:
        student_top1 = top1(result.model, eval_set, mean=mean, std=std, device=args.device)
        if eval_teacher is not None:
            teacher_top1 = top1(eval_teacher.model, eval_set, mean=tuple(eval_teacher.mean),
                                std=tuple(eval_teacher.std), device=args.device)
    report = {
        "student": args.student, "student_params": count_params(result.model), "student_top1": student_top1,
        "teacher": teacher_spec, "teacher_top1": teacher_top1, "images": result.images_seen,
        "corpus_images": info.num_images, "epochs": args.epochs, "seconds": round(result.seconds, 3),
        "sparse": bool(args.sparse), "final_loss": result.losses[-1] if result.losses else None,
        "eval": eval_set.name if eval_set is not None else None,
        "eval_images": eval_set.num_images if eval_set is not None else 0,
    }
    if args.json:
        emit_json(report)
    else:
        fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        print(f"student {args.student} ({report['student_params']:,} params): top-1 {fmt(student_top1)}; "
              f"teacher top-1 {fmt(teacher_top1)}; {result.images_seen} images in {result.seconds:.1f} s")
    return 0
