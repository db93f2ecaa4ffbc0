"""Normal supervised training of a small timm ViT teacher, shared by the project's own teachers.

``train_classifier`` is plain training (no adversarial step, no token dropping): AdamW with decoupled
weight decay off the biases, norms and embeddings, linear warmup then cosine decay, gradient clipping,
cross-entropy on batches drawn by a caller's ``batch_fn(step)``. It runs under :func:`deterministic`
(deterministic kernels, a fixed thread count), so a (seed, recipe, data) triple gives the same weights
on every machine. The building blocks (:func:`deterministic`, :func:`init_pos_embed`,
:func:`param_groups`, :func:`warmup_cosine`) are also the toy teacher's; distillation uses
:func:`warmup_cosine` too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.teachers.classify import normalize

log = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]
BatchFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # step -> (images (B,3,H,W) in [0,1], labels (B,))


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of :func:`train_classifier` (recorded in a teacher's meta.json)."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    pos_embed_scale: float = 0.1  # initial 2-D sin-cos position embedding, scaled
    # One thread: bit-identical on every machine, and robust on a busy one.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not self.lr > 0 or self.threads < 1:
            raise ValueError(f"lr must be > 0 and threads >= 1, got {self.lr} and {self.threads}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must lie in [0, 1), got {self.label_smoothing}")


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the duration; restores the previous state."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def init_pos_embed(model: nn.Module, scale: float) -> None:
    """Set the ViT's patch position embedding to a 2-D sin-cos table times ``scale`` (prefix tokens: 0)."""
    from timm.layers import build_sincos2d_pos_embed

    grid = model.patch_embed.grid_size
    with torch.no_grad():
        model.pos_embed.zero_()
        model.pos_embed[0, model.num_prefix_tokens:] = build_sincos2d_pos_embed(grid, model.embed_dim) * scale


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases, norms, ``pos_embed`` and ``cls_token``."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or name in ("pos_embed", "cls_token")
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(steps: int, warmup_fraction: float) -> int:
    """The warm-up length of a run of ``steps``: ``warmup_fraction`` of it, at least one step."""
    return max(1, round(warmup_fraction * steps))


def warmup_cosine(steps: int, warmup: int, *, cosine_after_warmup: bool = False) -> Callable[[int], float]:
    """The learning-rate factor of step ``s``: a linear warm-up over ``warmup`` steps and a cosine decay
    to 0 at ``steps``, in one of two shapes, each kept because results depend on it:

    - default (teachers; their cached weights were trained with it): the ramp ``(s + 1) / warmup``,
      capped at 1, times a cosine over all ``steps``;
    - ``cosine_after_warmup`` (distilled students): the ramp ``(s + 1) / (warmup + 1)`` for the first
      ``warmup`` steps, then a cosine over the remaining ``steps - warmup``.
    """
    if cosine_after_warmup:

        def after(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * (min(step, steps) - warmup) / max(1, steps - warmup)))

        return after

    def overlapped(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))

    return overlapped


def train_classifier(
    make_model: Callable[[], nn.Module],
    batch_fn: BatchFn,
    recipe: TrainRecipe,
    *,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    progress: Progress | None = None,
    name: str = "teacher",
) -> tuple[nn.Module, float]:
    """Train a fresh ``make_model()`` (created after seeding) on ``batch_fn(step)`` for ``recipe.steps`` steps.

    Returns the frozen model (eval mode, no gradients) and the training wall time in seconds.
    """
    start = time.perf_counter()
    with deterministic(recipe.threads):
        torch.manual_seed(seed)
        model = make_model()
        init_pos_embed(model, recipe.pos_embed_scale)
        opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=recipe.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(recipe.steps, warmup_steps(recipe.steps, recipe.warmup_fraction)))
        model.train()
        for step in range(recipe.steps):
            images, labels = batch_fn(step)
            logits = model(normalize(images, mean, std))
            loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            sched.step()
            if progress is not None:
                progress(step + 1, recipe.steps, loss.item())
            if (step + 1) % max(1, recipe.steps // 10) == 0:
                log.info("%s: step %d/%d loss %.4f", name, step + 1, recipe.steps, loss.item())
        model.eval().requires_grad_(False)
    return model, time.perf_counter() - start
