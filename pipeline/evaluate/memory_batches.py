"""A small corpus decoded once and held in memory, dealt in full batches.

Distilling from a few hundred images, re-reading and re-decoding the same PNGs every pass took about a
third of each step (measured on the demo corpus; BENCHMARKS.md). When the decoded corpus fits in a byte budget,
:func:`load_in_memory` reads it once through :func:`pipeline.corpus.loader.load_corpus` and
:class:`MemoryBatches` deals every pass as ``ceil(N / batch)`` full batches cut from fresh seeded
permutations: every image at least once per pass, and no short tail batch (80 images at batch 64 were
one step of 64 and one of 16).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.corpus.loader import load_corpus

MEMORY_BUDGET_BYTES = 1 << 30  # decoded float32 pixels held at most; larger corpora are streamed
_PERMUTATION_SALT = 7_919  # keeps the batch draws apart from the views' generator of the same epoch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, soft labels, masks


def decoded_bytes(num_images: int, img_size: int, channels: int = 3) -> int:
    """Bytes of ``num_images`` decoded float32 images of ``img_size`` x ``img_size``."""
    return num_images * channels * img_size * img_size * 4


def fits_in_memory(num_images: int, img_size: int, budget_bytes: int = MEMORY_BUDGET_BYTES) -> bool:
    """Whether ``num_images`` decoded images of ``img_size`` fit in ``budget_bytes``."""
    return decoded_bytes(num_images, img_size) <= budget_bytes


@dataclass(frozen=True)
class MemoryBatches:
    """A decoded corpus: ``images`` (N, 3, H, W) in [0, 1], ``labels`` (N,), ``soft`` (N, classes),
    ``masks`` (N, Gh, Gw); :meth:`epoch` deals it in batches of ``batch_size``."""

    images: torch.Tensor
    labels: torch.Tensor
    soft: torch.Tensor
    masks: torch.Tensor
    batch_size: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if len(self.images) == 0:
            raise ValueError("no images")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample indices of ``epoch``'s batches, concatenated: whole seeded permutations, cut to
        ``steps_per_epoch * batch_size`` (a batch larger than the corpus repeats images)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + _PERMUTATION_SALT)
        n, need = len(self.images), self.steps_per_epoch * self.batch_size
        return torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))])[:need]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        order = self.order(epoch)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            yield self.images[rows], self.labels[rows], self.soft[rows], self.masks[rows]


def load_in_memory(root: str | Path, *, num_images: int, img_size: int, batch_size: int, seed: int = 0,
                   budget_bytes: int = MEMORY_BUDGET_BYTES) -> MemoryBatches | None:
    """The corpus at ``root`` decoded into memory, or None when its ``num_images`` images of ``img_size``
    would take more than ``budget_bytes`` (0 never loads)."""
    if not fits_in_memory(num_images, img_size, budget_bytes):
        return None
    samples = list(load_corpus(root, soft_labels=True, kept_mask=True))
    if not samples:
        return None
    images, labels, soft, masks = zip(*samples)
    return MemoryBatches(torch.stack(images), torch.tensor(labels, dtype=torch.long), torch.stack(soft),
                         torch.stack(masks), batch_size, seed)
