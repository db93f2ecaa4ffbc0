"""A replay pool of teacher-labelled views: a frozen teacher's logits of a view never change.

Distilling against a live teacher, most of a step's seconds go to labelling its views: the teacher's
forward on the clean views, the backward through teacher and student to the pixels for the adversarial
views, and the teacher's forward on those (BENCHMARKS.md, "Distillation cost"). With a pool, each step
labels views of only a fraction of a batch of corpus images, adds them to the pool, and trains the student
on those fresh views plus views drawn from the pool, so every labelled view trains the student several
times. :class:`ViewPool` is the ring buffer; :func:`pool_capacity` sizes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POOL_BUDGET_BYTES = 512 << 20  # views held at most, in float32 pixel bytes
POOL_BATCHES = 8  # the pool holds this many training batches of views (within the byte budget)


def pool_capacity(train_batch: int, view_shape: tuple[int, ...], budget_bytes: int = POOL_BUDGET_BYTES,
                  batches: int = POOL_BATCHES) -> int:
    """Views a pool holds: ``batches`` training batches of ``train_batch`` views, fewer when they would take
    more than ``budget_bytes``, never fewer than one training batch."""
    view_bytes = 4 * int(torch.Size(view_shape).numel())
    return max(train_batch, min(batches * train_batch, budget_bytes // max(1, view_bytes)))


@dataclass
class ViewPool:
    """Up to ``capacity`` views ``(N, C, H, W)`` with the teacher's logits ``(N, K)``; the oldest are
    overwritten first."""

    capacity: int
    views: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    filled: int = 0
    cursor: int = 0  # where the next view is written

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {self.capacity}")

    def add(self, views: torch.Tensor, logits: torch.Tensor) -> None:
        """Store ``views`` and their ``logits`` (detached), overwriting the oldest when full."""
        if len(views) != len(logits):
            raise ValueError(f"{len(views)} views but {len(logits)} logits")
        if len(views) > self.capacity:
            raise ValueError(f"{len(views)} views do not fit a pool of {self.capacity}")
        if self.views is None or self.logits is None:
            self.views = views.new_empty((self.capacity, *views.shape[1:]))
            self.logits = logits.new_empty((self.capacity, *logits.shape[1:]))
        rows = (self.cursor + torch.arange(len(views))) % self.capacity
        self.views[rows.to(self.views.device)] = views.detach().to(self.views.dtype)
        self.logits[rows.to(self.logits.device)] = logits.detach().to(self.logits.dtype)
        self.cursor = int((self.cursor + len(views)) % self.capacity)
        self.filled = min(self.capacity, self.filled + len(views))

    def draw(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` views and their logits drawn uniformly, with replacement, from the views held."""
        if self.views is None or self.logits is None or self.filled == 0:
            raise ValueError("the pool is empty")
        rows = torch.randint(0, self.filled, (n,), generator=g).to(self.views.device)
        return self.views[rows], self.logits[rows]

    def state(self) -> dict[str, torch.Tensor]:
        """The pool as tensors (for a training checkpoint); :meth:`load` restores it."""
        if self.views is None or self.logits is None:
            return {}
        return {"views": self.views[:self.filled], "logits": self.logits[:self.filled],
                "position": torch.tensor([self.filled, self.cursor])}

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        """Restore what :meth:`state` gave (an empty dict: an empty pool)."""
        if not state:
            self.views = self.logits = None
            self.filled = self.cursor = 0
            return
        filled, cursor = (int(v) for v in state["position"].tolist())
        views, logits = state["views"].to(device), state["logits"].to(device)
        if filled != len(views) or filled > self.capacity or not 0 <= cursor < self.capacity:
            raise ValueError(f"a pool state of {len(views)} views (filled {filled}, cursor {cursor}) does not fit "
                             f"a pool of {self.capacity}")
        self.views = views.new_empty((self.capacity, *views.shape[1:]))
        self.logits = logits.new_empty((self.capacity, *logits.shape[1:]))
        self.views[:filled], self.logits[:filled] = views, logits
        self.filled, self.cursor = filled, cursor
