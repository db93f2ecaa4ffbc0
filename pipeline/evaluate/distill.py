"""``smi-synth distill``: data-free knowledge distillation of a timm student from a corpus.

The loss is ``KL(softmax(s/T) || softmax(t/T)) * T^2`` against the stored soft labels (``.logits.npy``)
or a live teacher (``--teacher``). A live teacher labels augmented views of each batch
(:mod:`pipeline.evaluate.kd_views`: flip/shift, colour jitter and channel shuffle, and one adversarial
student-teacher step), which is what lets a student learn from a few hundred inverted images. With
``--fresh-views F`` below 1 the teacher labels views of only that share of each batch and the student also
trains on views it labelled earlier (:mod:`pipeline.evaluate.view_pool`): fewer teacher passes a step.
A corpus whose decoded pixels fit in ``DistillConfig.memory_budget`` is decoded once and dealt from
memory in full batches (:mod:`pipeline.evaluate.memory_batches`; one process, no ``--workers``); else it is
streamed through :func:`pipeline.corpus.loader.load_corpus` (seeded shard shuffle, several shards open at
once, a shuffle buffer of raw samples, so batches mix classes) by a torch ``DataLoader`` with
``--workers`` processes. Under ``torchrun`` the student trains data-parallel (DDP; gloo on CPU, NCCL
on GPUs) and the loader gives every rank the same number of batches. On CUDA the forward passes run
under autocast (bfloat16, or float16 with a gradient scaler). ``--checkpoint DIR`` saves the training
state after every ``--checkpoint-every`` epochs and resumes from it; ``--save DIR`` keeps the student
(:mod:`pipeline.evaluate.checkpoints`). ``--sparse`` trains a ViT student on each image's kept patch
tokens only (``smi_core.vit.forward_subset``); the student's patch grid must be the corpus's (a live
teacher still sees the whole image, and only colour views apply, so the kept masks stay aligned).
Top-1 of the student and of the teacher is measured on real held-out images.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.console import emit_json, progress
from pipeline.corpus.loader import iter_samples, load_corpus
from pipeline.errors import UserError
from pipeline.evaluate.checkpoints import (
    STATE_FILE,
    load_state,
    save_state,
    save_student,
    student_config,
)
from pipeline.evaluate.common import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    CorpusInfo,
    EvalSet,
    corpus_info,
    default_eval_spec,
    eval_class_ids,
    eval_source,
    format_top1,
    load_teacher_spec,
    recorded_teacher_if_found,
    resolve_recorded_teacher,
    top1,
)
from pipeline.evaluate.defaults import corpus_classes, default_student, step_budget
from pipeline.evaluate.kd_views import (
    NO_AUGMENT,
    KDAugmentConfig,
    augment_views,
    kd_divergence,
)
from pipeline.evaluate.memory_batches import (
    MEMORY_BUDGET_BYTES,
    Batch,
    fits_in_memory,
    load_in_memory,
)
from pipeline.evaluate.view_pool import ViewPool, pool_capacity
from pipeline.teachers.classify import normalize
from pipeline.teachers.trainer import warmup_cosine
from smi_core.vit import forward_subset, vit_geometry

log = logging.getLogger(__name__)

TOY_STUDENT = "toy-student"
TOY_STUDENT_ARCH = "vit_tiny_patch16_224"  # the timm architecture the toy student's arguments override
AMP_MODES = ("auto", "on", "off")
DEFAULT_STREAM_WORKERS = 2  # --workers left out and the corpus streamed (too large for memory, or DDP)


@dataclass
class DistillConfig:
    """Training hyper-parameters (the CLI's)."""

    epochs: int = 10
    steps: int | None = None  # optimizer steps to train for; when set, ``epochs`` is ignored
    batch_size: int = 64
    # 3e-3 beat 1e-3; 1e-2 with every image mixed beat 3e-3 with half mixed on shapes64 (3 seeds, +3.0 points)
    # and on the demo corpus (58.95% vs 40.9%) (BENCHMARKS.md, "Quality")
    lr: float = 1e-2
    temperature: float = 4.0
    sparse: bool = False
    device: str = "cpu"
    seed: int = 0
    weight_decay: float = 0.05
    # views the live teacher labels (stored soft labels fit the stored image only, so none without one)
    augment: KDAugmentConfig = field(default_factory=KDAugmentConfig)
    show_progress: bool = True
    # DataLoader worker processes (0: load in the training process; None: none when the corpus is held in
    # memory, else DEFAULT_STREAM_WORKERS)
    workers: int | None = 0
    # a single process without workers decodes a corpus of at most this many pixel bytes once and keeps it
    # in memory (0: always stream it through the DataLoader)
    memory_budget: int = MEMORY_BUDGET_BYTES
    amp: str = "auto"  # autocast: "auto" (on CUDA only), "on" (bfloat16 on CPU), "off"
    checkpoint_dir: Path | None = None  # training state saved here and resumed from
    checkpoint_every: int = 1  # epochs between checkpoints
    # with a live teacher, the share of each step's views labelled afresh (from that share of a batch of
    # corpus images); the rest are drawn from a pool of earlier labelled views (view_pool). 1: no pool
    fresh_views: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.fresh_views <= 1:
            raise ValueError(f"fresh_views: must lie in (0, 1], got {self.fresh_views}")

    def corpus_batch(self, pooled: bool) -> int:
        """Corpus images a step reads: the batch, or its ``fresh_views`` share when a view pool is on."""
        return max(1, round(self.fresh_views * self.batch_size)) if pooled else self.batch_size


@dataclass
class DistillResult:
    """What :func:`distill` did (``images_seen`` summed over ranks under DDP)."""

    model: nn.Module
    images_seen: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch (this rank's)
    resumed_from_epoch: int = 0
    steps: int = 0  # optimizer steps taken (a resumed run counts those before the interruption too)
    in_memory: bool = False  # batches dealt from the corpus decoded in memory (else streamed)
    workers: int = 0  # DataLoader worker processes it used (``DistillConfig.workers`` resolved)

    @property
    def epochs(self) -> int:
        """Passes over the corpus started (the last may be partial under a step budget)."""
        return len(self.losses)


@dataclass(frozen=True)
class StudentRecipe:
    """How to rebuild a student: ``timm.create_model(arch, pretrained=False, **model_args)``."""

    name: str
    arch: str
    model_args: dict[str, Any]


def student_recipe(name: str, *, num_classes: int, img_size: int, patch_size: int | None = None) -> StudentRecipe:
    """``toy-student`` (ViT, embed 64, depth 3, patch 4, or the corpus's patch size) or a timm model name."""
    import timm

    if name == TOY_STUDENT:
        args = {"img_size": img_size, "patch_size": patch_size or 4, "num_classes": num_classes, "embed_dim": 64,
                "depth": 3, "num_heads": 4, "mlp_ratio": 2.0}
        return StudentRecipe(name, TOY_STUDENT_ARCH, args)
    if not timm.is_model(name):
        raise UserError(f"--student: unknown timm model {name!r} (or use '{TOY_STUDENT}')")
    return StudentRecipe(name, name, {"num_classes": num_classes, "img_size": img_size})


def make_student(recipe: StudentRecipe) -> tuple[nn.Module, StudentRecipe]:
    """A freshly initialised student, and the recipe that rebuilds it (without ``img_size`` for CNNs)."""
    import timm

    if recipe.name == TOY_STUDENT:
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(**recipe.model_args), recipe
    try:
        return timm.create_model(recipe.arch, pretrained=False, **recipe.model_args), recipe
    except TypeError:  # models without an img_size argument (CNNs)
        args = {k: v for k, v in recipe.model_args.items() if k != "img_size"}
        return timm.create_model(recipe.arch, pretrained=False, **args), replace(recipe, model_args=args)


def build_student(name: str, *, num_classes: int, img_size: int, patch_size: int | None = None) -> nn.Module:
    """A freshly initialised student (see :func:`student_recipe`)."""
    return make_student(student_recipe(name, num_classes=num_classes, img_size=img_size, patch_size=patch_size))[0]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
        out[rows] = logits.to(out.dtype)
    assert out is not None
    return out


class _Trainable(nn.Module):
    """The student's training forward (dense, or on kept patches) as one module, so DDP can wrap it."""

    def __init__(self, student: nn.Module, sparse: bool) -> None:
        super().__init__()
        self.student, self.sparse = student, sparse

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return _sparse_forward(self.student, images, masks) if self.sparse else self.student(images)


def check_sparse_student(student: nn.Module, info: CorpusInfo, grid: tuple[int, int] | None) -> None:
    """``--sparse`` needs a timm ViT whose patch grid is the corpus's kept-mask grid."""
    try:
        geom = vit_geometry(student, (info.img_size, info.img_size))
    except ValueError as exc:
        raise UserError(f"--sparse: the student must be a timm ViT ({exc})") from None
    if grid is not None and tuple(geom.grid) != tuple(grid):
        raise UserError(f"--sparse: the student's patch grid {geom.grid} differs from the corpus's {tuple(grid)}")


# ---------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Distributed, str]:
    """Join the ``torchrun`` process group named by RANK/WORLD_SIZE (gloo on CPU, NCCL on CUDA) and pick
    this rank's device; a plain process is left alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank), device


def _all_sum(value: float, ddp: Distributed, device: torch.device) -> float:
    if ddp.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _barrier(ddp: Distributed) -> None:
    if ddp.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------- training


def _amp(cfg: DistillConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether forward passes run under autocast, and in which dtype."""
    if cfg.amp not in AMP_MODES:
        raise UserError(f"--amp: one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    on = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return on, torch.float16
    return on, torch.bfloat16


def _fingerprint(cfg: DistillConfig, identity: dict[str, Any], ddp: Distributed, in_memory: bool,
                 workers: int, pooled: bool) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (anything that changes the run's arithmetic or data order)."""
    keep = {k: v for k, v in asdict(cfg).items() if k not in ("show_progress", "checkpoint_dir", "checkpoint_every",
                                                            "device", "memory_budget")}
    if not pooled:  # no view pool: fingerprints as before the pool existed
        del keep["fresh_views"]
    keep["workers"] = workers  # as resolved: an explicit 0 and a default that chose 0 are the same run
    if in_memory:  # batches dealt from memory (a streamed run's fingerprint is as before this path existed)
        keep["in_memory"] = True
    if keep["steps"] is None:  # an epoch budget: fingerprints as before the step budget existed
        del keep["steps"]
    else:
        del keep["epochs"]
    keep["augment"] = asdict(cfg.augment)
    return {**keep, **identity, "world": ddp.world}


def resolve_workers(cfg: DistillConfig, info: CorpusInfo, world: int) -> int:
    """``cfg.workers``, or for ``None`` none when one process holds the corpus in memory, else
    :data:`DEFAULT_STREAM_WORKERS`."""
    if cfg.workers is not None:
        return cfg.workers
    in_memory = world == 1 and fits_in_memory(info.num_images, info.img_size, cfg.memory_budget)
    return 0 if in_memory else DEFAULT_STREAM_WORKERS


def _epoch_batches(info: CorpusInfo, cfg: DistillConfig, ddp: Distributed, device: torch.device, batch_size: int
                   ) -> tuple[Callable[[int], Iterable[Batch]], int, bool, int]:
    """The batches of ``batch_size`` corpus images of each epoch (a function of the epoch), steps per epoch,
    whether they come from memory, and the loader workers: a single process without loader workers holds a
    corpus within ``cfg.memory_budget`` decoded in memory (:mod:`pipeline.evaluate.memory_batches`), anything
    else is streamed by a ``DataLoader``."""
    workers = resolve_workers(cfg, info, ddp.world)
    memory = None
    if ddp.world == 1 and workers == 0:
        memory = load_in_memory(info.root, num_images=info.num_images, img_size=info.img_size,
                                batch_size=batch_size, seed=cfg.seed, budget_bytes=cfg.memory_budget)
    if memory is not None:
        log.info("%s: %d images decoded in memory, %d full batches per epoch", info.root, len(memory.images),
                 memory.steps_per_epoch)
        return memory.epoch, memory.steps_per_epoch, True, 0
    # DDP needs the same number of batches on every rank: equal-length readers; one process reads each
    # sample exactly once per epoch (its workers may differ in length)
    ds = load_corpus(info.root, soft_labels=True, kept_mask=True, shuffle_shards=True, seed=cfg.seed,
                     equal_epochs=ddp.world > 1)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    readers = max(1, workers)
    reader_samples = ds.epoch_samples(ddp.world * readers)
    if reader_samples is None:  # unequal workers of one process: a bound for the schedule
        steps_per_epoch = math.ceil(ds.num_samples / batch_size) + readers - 1
    else:
        steps_per_epoch = readers * math.ceil(reader_samples / batch_size)

    def streamed(epoch: int) -> Iterable[Batch]:
        ds.set_epoch(epoch)
        return loader

    return streamed, steps_per_epoch, False, workers


def distill(
    student: nn.Module,
    info: CorpusInfo,
    cfg: DistillConfig,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    teacher: nn.Module | None = None,
    teacher_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    identity: dict[str, Any] | None = None,
    ddp: Distributed | None = None,
) -> DistillResult:
    """Train ``student`` on the corpus at ``info.root`` by KD; returns the trained model and stats.

    ``teacher`` (a live teacher) replaces the stored soft labels; it sees the images normalised with
    ``teacher_norm`` (its own mean/std) when given, else with the student's ``mean``/``std``. ``ddp``
    (from :func:`init_distributed`) trains data-parallel. With ``cfg.checkpoint_dir`` the state is saved
    there and an existing checkpoint whose settings and ``identity`` match is resumed (else refused).
    """
    ddp = ddp or Distributed()
    device = torch.device(cfg.device)
    # channels-last convolutions: a demo-corpus step in 0.87x the seconds on the dev box's CPU (BENCHMARKS.md)
    student.to(device, memory_format=torch.channels_last).train()
    if teacher is not None:
        teacher.to(device).eval()
    model: nn.Module = _Trainable(student, cfg.sparse)
    if ddp.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # a live teacher labels every view, so views it labelled once can train the student again (view_pool)
    pooled = teacher is not None and not cfg.sparse and cfg.fresh_views < 1
    corpus_batch = cfg.corpus_batch(pooled)
    epoch_batches, steps_per_epoch, in_memory, workers = _epoch_batches(info, cfg, ddp, device, corpus_batch)
    if cfg.steps is not None:  # a step budget: as many passes as it takes, the last one cut short
        total_steps, epochs = cfg.steps, math.ceil(cfg.steps / max(1, steps_per_epoch))
    else:
        total_steps, epochs = max(1, cfg.epochs * steps_per_epoch), cfg.epochs
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(total_steps // 10, 200)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, warmup, cosine_after_warmup=True))
    use_amp, amp_dtype = _amp(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    augment = NO_AUGMENT
    if teacher is not None:  # kept masks stay aligned only without moving pixels: sparse gets colour only
        augment = cfg.augment if not cfg.sparse else replace(cfg.augment, flip=False, max_shift=0,
                                                             adversarial_eps=0.0, mix=0.0)
    teacher_mean, teacher_std = teacher_norm or (mean, std)
    # the views a step trains on: the batch's views, doubled by the adversarial ones
    train_views = cfg.batch_size * (2 if augment.adversarial_eps > 0 else 1)
    pool = ViewPool(pool_capacity(train_views, (3, info.img_size, info.img_size))) if pooled else None

    def student_logits(raw: torch.Tensor) -> torch.Tensor:  # views only: no gradient sync needed
        return student(normalize(raw, mean, std))

    def teacher_logits(raw: torch.Tensor) -> torch.Tensor:
        return teacher(normalize(raw, teacher_mean, teacher_std))  # type: ignore[misc]

    fingerprint = _fingerprint(cfg, identity or {}, ddp, in_memory, workers, pooled)
    state_path = cfg.checkpoint_dir / STATE_FILE if cfg.checkpoint_dir is not None else None
    first_epoch, seen, seconds, losses, step = 0, 0, 0.0, [], 0
    if state_path is not None and state_path.is_file():
        parts, meta = load_state(state_path)
        if meta.get("fingerprint") != fingerprint:
            diff = sorted(k for k in set(fingerprint) | set(meta.get("fingerprint", {}))
                          if fingerprint.get(k) != meta.get("fingerprint", {}).get(k))
            raise UserError(f"--checkpoint: {state_path} is from a different run (differs in: {', '.join(diff)})")
        student.load_state_dict(parts["model"])
        opt.load_state_dict(parts["optimizer"])
        sched.load_state_dict(parts["scheduler"])
        scaler.load_state_dict(parts["scaler"])
        if pool is not None:
            pool.load(parts.get("pool", {}), device)
        first_epoch, seen, seconds, losses = int(meta["epoch"]), int(meta["images"]), float(meta["seconds"]), list(
            meta["losses"])
        step = int(meta.get("step", sched.last_epoch))
        log.info("resuming from %s after epoch %d", state_path, first_epoch)
    start = time.perf_counter() - seconds

    def budget_left() -> bool:
        return step < cfg.steps if cfg.steps is not None else True

    epoch = first_epoch
    while (epoch < epochs if cfg.steps is None else budget_left()):
        # views drawn per (seed, rank, epoch): a resumed run draws what an uninterrupted one would
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ddp.rank * 10_007 + epoch)
        bar = progress(steps_per_epoch * corpus_batch * ddp.world, f"epoch {epoch + 1}/{epochs}", unit="img",
                       disable=not (cfg.show_progress and ddp.main and sys.stderr.isatty()))
        total, n, batches = 0.0, 0, 0
        with bar:
            for images, _labels, soft, masks in epoch_batches(epoch):
                if not budget_left():  # every rank stops at the same step: they all get equal batches
                    break
                batches += 1
                count = len(images)  # corpus images in this step (adversarial views double the batch)
                raw = images.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    if teacher is not None:
                        raw, soft = augment_views(raw, g, augment, student=student_logits, teacher=teacher_logits,
                                                  temperature=cfg.temperature)
                        if pool is not None:  # the fresh views, and earlier ones up to a full training batch
                            pool.add(raw, soft)
                            if len(raw) < train_views:
                                old_raw, old_soft = pool.draw(train_views - len(raw), g)
                                raw, soft = torch.cat([raw, old_raw]), torch.cat([soft, old_soft])
                    soft = soft.to(device).float()
                    if soft.shape[-1] != info.num_classes:
                        raise UserError(f"corpus soft labels have {soft.shape[-1]} classes, the manifest says "
                                        f"{info.num_classes}")
                    logits = model(normalize(raw, mean, std), masks.to(device))
                loss = kd_divergence(logits.float(), soft, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                total += float(loss.detach()) * count
                n += count
                bar.update(count * ddp.world)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if batches == 0:
            raise UserError(f"{info.root}: the corpus gave no training batch (no complete shard?)")
        seen += int(_all_sum(n, ddp, device))
        losses.append(total / max(n, 1))
        log.info("epoch %d: loss %.4f over %d images", epoch + 1, losses[-1], n)
        epoch += 1
        last = epoch == epochs if cfg.steps is None else not budget_left()
        if state_path is not None and (epoch % cfg.checkpoint_every == 0 or last):
            if ddp.main:
                meta = {"epoch": epoch, "images": seen, "seconds": time.perf_counter() - start, "losses": losses,
                        "fingerprint": fingerprint, "step": step}
                parts = {"model": student.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "scaler": scaler.state_dict()}
                if pool is not None:
                    parts["pool"] = pool.state()
                save_state(state_path, parts, meta)
            _barrier(ddp)
    student.to(memory_format=torch.contiguous_format).eval()
    return DistillResult(student, seen, time.perf_counter() - start, losses, first_epoch, step, in_memory, workers)


def _first_mask_grid(info: CorpusInfo) -> tuple[int, int] | None:
    for rec in iter_samples(info.root):
        return tuple(int(g) for g in rec["kept_mask"].shape)  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class DistillChoices:
    """What a ``distill`` command uses, and why: a flag, or the default chosen for this corpus."""

    teacher: str | None  # the live teacher's spec; None: the corpus's stored soft labels
    teacher_why: str
    student: str
    student_why: str
    steps: int | None  # the budget: optimizer steps, or ...
    epochs: int | None  # ... passes over the corpus
    budget_why: str
    eval: str | None
    eval_why: str

    def lines(self) -> list[str]:
        """One line per choice, as the command prints them."""
        labels = f"teacher {self.teacher} (live)" if self.teacher else "the corpus's stored soft labels"
        budget = f"{self.steps:,} steps" if self.steps is not None else f"{self.epochs} epochs"
        return [f"labels: {labels}; {self.teacher_why}", f"student: {self.student}; {self.student_why}",
                f"budget: {budget}; {self.budget_why}", f"eval: {self.eval or 'none'}; {self.eval_why}"]

    def as_dict(self) -> dict[str, str]:
        """Why each choice was made, for the ``--json`` object."""
        return {"teacher": self.teacher_why, "student": self.student_why, "budget": self.budget_why,
                "eval": self.eval_why}


def choose(args: argparse.Namespace, info: CorpusInfo) -> DistillChoices:
    """The teacher, student, training budget and eval set of a ``distill`` command: each flag given wins,
    else the corpus's own teacher (live), :func:`~pipeline.evaluate.defaults.default_student`,
    :func:`~pipeline.evaluate.defaults.step_budget` for the corpus's images and classes, and the toy held-out
    split for a toy-teacher corpus."""
    if args.teacher and args.stored_labels:
        raise UserError("--stored-labels: give --teacher (a live teacher) or --stored-labels, not both")
    if args.steps is not None and args.epochs is not None:
        raise UserError("--steps: give --steps or --epochs, not both")
    if args.teacher:
        teacher, teacher_why = args.teacher, "--teacher"
    elif args.stored_labels:
        teacher, teacher_why = None, "--stored-labels"
    else:
        teacher = resolve_recorded_teacher(info)
        if teacher is None:
            raise UserError(f"--teacher: {info.root} records no teacher; pass --teacher SPEC, or --stored-labels to "
                            "learn from its stored soft labels")
        teacher_why = "the corpus's own, from its manifest (--teacher SPEC to change, --stored-labels for none)"
    student, student_why = (args.student, "--student") if args.student else (
        default_student(info), "the default (--student NAME to change)")
    if args.steps is not None:
        steps, epochs, budget_why = args.steps, None, "--steps"
    elif args.epochs is not None:
        steps, epochs, budget_why = None, args.epochs, "--epochs"
    else:
        budget = step_budget(max(1, info.num_images), num_classes=corpus_classes(info), batch_size=args.batch_size)
        steps, epochs, budget_why = budget.steps, None, f"{budget.why()} (--steps N or --epochs N to change)"
    if args.eval_spec:
        eval_spec, eval_why = args.eval_spec, "--eval"
    else:
        eval_spec = default_eval_spec(info.teacher_spec, info.class_ids)
        eval_why = ("the toy held-out split, the default for a toy-teacher corpus (--eval DIR to change)"
                    if eval_spec else "no held-out images given (--eval toy|DIR to score the student)")
    return DistillChoices(teacher, teacher_why, student, student_why, steps, epochs, budget_why, eval_spec, eval_why)


def cmd_distill(args: argparse.Namespace) -> int:
    """Entry point of ``smi-synth distill`` (every rank runs it under ``torchrun``; rank 0 reports and saves)."""
    for flag, value in (("--epochs", args.epochs), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    if args.batch_size < 1 or args.lr <= 0 or args.temperature <= 0:
        raise UserError("--batch-size must be >= 1, --lr and --temperature > 0")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers: must be >= 0, got {args.workers}")
    if args.checkpoint_every < 1:
        raise UserError(f"--checkpoint-every: must be >= 1, got {args.checkpoint_every}")
    if not 0 < args.fresh_views <= 1:
        raise UserError(f"--fresh-views: must lie in (0, 1], got {args.fresh_views}")
    try:
        augment = KDAugmentConfig(max_shift=args.max_shift, colour_jitter=args.colour_jitter,
                                  channel_shuffle=args.channel_shuffle, adversarial_eps=args.adversarial_eps,
                                  mix=args.mix)
    except ValueError as exc:
        name, _, why = str(exc).partition(": ")
        raise UserError(f"--{name.replace('_', '-')}: {why}") from None
    if args.save is not None and Path(args.save).exists() and not Path(args.save).is_dir():
        raise UserError(f"--save: {args.save} exists and is not a folder")
    info = corpus_info(args.out)
    choices = choose(args, info)
    if args.fresh_views < 1 and (choices.teacher is None or args.sparse):
        raise UserError("--fresh-views: the view pool holds views a live teacher labelled; it applies neither to "
                        "--stored-labels nor to --sparse")
    ddp, device = init_distributed(args.device)
    try:
        return _distill_command(args, info, choices, augment, ddp, device)
    finally:
        if ddp.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _distill_command(args: argparse.Namespace, info: CorpusInfo, choices: DistillChoices, augment: KDAugmentConfig,
                     ddp: Distributed, device: str) -> int:
    if ddp.main:  # what was chosen, before the work starts (stderr under --json: stdout ends with the JSON)
        print("\n".join(f"distill: {line}" for line in choices.lines()), file=sys.stderr if args.json else sys.stdout,
              flush=True)
    torch.manual_seed(args.seed)
    recipe = student_recipe(choices.student, num_classes=info.num_classes, img_size=info.img_size,
                            patch_size=info.patch_size)
    student, recipe = make_student(recipe)
    heads = getattr(student, "num_classes", info.num_classes)
    if int(heads) != info.num_classes:
        raise UserError(f"--student: {choices.student} has {heads} classes, the corpus has {info.num_classes}")
    if args.sparse:
        check_sparse_student(student, info, _first_mask_grid(info))
    teacher = None
    if choices.teacher is not None:
        try:
            teacher = load_teacher_spec(choices.teacher, device=device)
        except UserError as exc:
            if args.teacher:
                raise
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"--teacher: the corpus's teacher cannot be loaded ({why}); pass --teacher SPEC, or "
                            "--stored-labels to learn from the corpus's stored soft labels") from None
        if int(teacher.num_classes) != info.num_classes:
            raise UserError(
                f"--teacher: {choices.teacher} has {teacher.num_classes} classes, the corpus has {info.num_classes}"
            )
    mean = info.mean or (tuple(teacher.mean) if teacher is not None else None)
    std = info.std or (tuple(teacher.std) if teacher is not None else None)
    # the teacher for eval (and its normalisation when the manifest records none); eval runs on rank 0
    eval_teacher = teacher
    recorded_teacher = recorded_teacher_if_found(info)
    wants_eval = choices.eval is not None and ddp.main
    if eval_teacher is None and recorded_teacher is not None and (wants_eval or mean is None):
        try:
            eval_teacher = load_teacher_spec(recorded_teacher, device=device)
        except UserError as exc:
            log.warning("cannot load the corpus's teacher for evaluation: %s", exc)
    class_ids = eval_class_ids(info, eval_teacher)
    eval_set: EvalSet | None = eval_source(choices.eval, class_ids=class_ids, img_size=info.img_size)
    if mean is None or std is None:
        if eval_teacher is not None:
            mean, std = tuple(eval_teacher.mean), tuple(eval_teacher.std)
        else:
            log.warning("no teacher mean/std recorded; normalising with %s/%s", DEFAULT_MEAN, DEFAULT_STD)
            mean, std = DEFAULT_MEAN, DEFAULT_STD
    cfg = DistillConfig(epochs=choices.epochs or 1, steps=choices.steps, batch_size=args.batch_size, lr=args.lr,
                        temperature=args.temperature, sparse=args.sparse, device=device, seed=args.seed,
                        augment=augment, workers=args.workers, amp=args.amp, checkpoint_every=args.checkpoint_every,
                        checkpoint_dir=Path(args.checkpoint) if args.checkpoint else None,
                        fresh_views=args.fresh_views)
    corpus = str(info.root.resolve()) if isinstance(info.root, Path) else str(info.root)
    identity = {"student": choices.student, "teacher": choices.teacher, "corpus": corpus,
                "corpus_images": info.num_images}
    result = distill(student, info, cfg, mean=mean, std=std,
                     teacher=teacher.model if teacher is not None else None,
                     teacher_norm=(tuple(teacher.mean), tuple(teacher.std)) if teacher is not None else None,
                     identity=identity, ddp=ddp)
    if not ddp.main:
        return 0
    saved = None
    if args.save is not None:
        config = student_config(arch=recipe.arch, model_args=recipe.model_args, num_classes=info.num_classes,
                                img_size=info.img_size, mean=mean, std=std, class_names=_class_names(info))
        saved = str(save_student(result.model, args.save, config))
    student_top1 = teacher_top1 = None
    if eval_set is not None:
        student_top1 = top1(result.model, eval_set, mean=mean, std=std, device=device)
        if eval_teacher is not None:
            teacher_top1 = top1(eval_teacher.model, eval_set, mean=tuple(eval_teacher.mean),
                                std=tuple(eval_teacher.std), device=device)
    report = {
        "student": choices.student, "student_params": count_params(result.model), "student_top1": student_top1,
        "teacher": choices.teacher or recorded_teacher, "labels": "live teacher" if teacher is not None else "stored",
        "teacher_top1": teacher_top1, "images": result.images_seen,
        "corpus_images": info.num_images, "epochs": result.epochs, "steps": result.steps,
        "seconds": round(result.seconds, 3), "images_per_s": round(result.images_seen / max(result.seconds, 1e-9), 2),
        "sparse": bool(args.sparse), "final_loss": result.losses[-1] if result.losses else None,
        "eval": eval_set.name if eval_set is not None else None,
        "eval_images": eval_set.num_images if eval_set is not None else 0,
        "world_size": ddp.world, "workers": result.workers, "in_memory": result.in_memory, "amp": _amp(cfg, torch.device(device))[0],
        "resumed_from_epoch": result.resumed_from_epoch, "saved": saved, "chosen": choices.as_dict(),
    }
    if args.json:
        emit_json(report)
    else:
        print(f"student {choices.student} ({report['student_params']:,} params): top-1 {format_top1(student_top1)}; "
              f"teacher top-1 {format_top1(teacher_top1)}; {result.steps:,} steps, {result.images_seen} images in "
              f"{result.seconds:.1f} s" + (f"; saved to {saved}" if saved else ""))
    return 0


def _class_names(info: CorpusInfo) -> list[str] | None:
    """Class names by id for the saved student, when the corpus names every one of its classes."""
    names = {cid: name for name, cid in info.class_ids.items()}
    if len(names) != info.num_classes or set(names) != set(range(info.num_classes)):
        return None
    return [names[i] for i in range(info.num_classes)]
