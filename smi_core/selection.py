"""Patch-selection policies: which patches keep evolving after each stop step.

A policy says at which iterations it needs the saliency of the current forward, and turns the kept
set plus that saliency into the next kept set. ``keep_top_salient`` is the pure function behind SMI.
Kept sets are ``(B, K)`` int64 canonical row-major patch indices, sorted ascending in each row.
A policy may keep state over one inversion (accumulated saliency): ``make_policy`` gives each run its own.
"""

from __future__ import annotations

from typing import Protocol

import torch

from smi_core.config import SelectionConfig


def keep_top_salient(kept: torch.Tensor, saliency: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Keep the ``num_keep`` patches of ``kept`` with the highest ``saliency`` (same shape), sorted by index."""
    if not 1 <= num_keep <= kept.shape[1]:
        raise ValueError(f"num_keep: must lie in [1, {kept.shape[1]}], got {num_keep}")
    top = torch.topk(saliency, num_keep, dim=1, sorted=False).indices
    return torch.sort(torch.gather(kept, 1, top), dim=1).values


def keep_random(kept: torch.Tensor, num_keep: int, generator: torch.Generator) -> torch.Tensor:
    """Keep ``num_keep`` patches of ``kept`` chosen uniformly at random from ``generator``, sorted by index."""
    scores = torch.rand(kept.shape, generator=generator, device=generator.device).to(kept.device)
    return keep_top_salient(kept, scores, num_keep)


class SelectionPolicy(Protocol):
    """The interface every policy implements (dense, SMI, random, rebirth)."""

    name: str

    def needs_saliency(self, iteration: int) -> bool:
        """Whether the forward of ``iteration`` must also return the CLS saliency."""

    def update(
        self, iteration: int, kept: torch.Tensor, saliency: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """The kept set for ``iteration + 1`` given the set and saliency of ``iteration``."""

    def final_phase_start(self) -> int:
        """First iteration from which the kept set no longer changes."""


class DensePolicy:
    """Every patch evolves for the whole run."""

    name = "dense"

    def final_phase_start(self) -> int:
        return 0

    def needs_saliency(self, iteration: int) -> bool:
        return False

    def update(self, iteration, kept, saliency, generator):  # noqa: D102 - see SelectionPolicy
        return kept


class ScheduledStopping:
    """Stop ``ratios[i]`` of the remaining patches so that iterations ``>= iterations[i]`` run without them.

    ``scorer`` picks which patches stay: ``"saliency"`` (SMI: lowest CLS attention stops),
    ``"rebirth"`` (the highest CLS attention leaves and the rest keep evolving; the engine keeps the image
    as each stop leaves it, see :func:`images_per_target`) or ``"random"``. The saliency comes from the forward of iteration ``iterations[i] - 1``, or with
    ``config.saliency == "accumulated"`` from the sum over every forward before the stop (each
    patch's attention added while it was kept). With ``config.rejoin``, every patch is kept again from
    that iteration on.
    """

    def __init__(self, config: SelectionConfig, num_patches: int, scorer: str = "saliency") -> None:
        if scorer not in ("saliency", "random", "rebirth"):
            raise ValueError(f"scorer: expected 'saliency', 'random' or 'rebirth', got {scorer!r}")
        self.name = {"saliency": "smi", "random": "random", "rebirth": "rebirth"}[scorer]
        self.scorer = scorer
        self.accumulate = scorer != "random" and config.saliency == "accumulated"
        self.num_patches = num_patches
        counts = config.schedule.kept_counts(num_patches)
        self._keep_after = {t - 1: k for t, k in zip(config.schedule.iterations, counts)}
        self._last_stop = max(config.schedule.iterations, default=0)
        self._rejoin = config.rejoin
        self._total: torch.Tensor | None = None  # (B, num_patches) summed saliency when accumulating

    def final_phase_start(self) -> int:
        return self._last_stop if self._rejoin is None else self._rejoin

    def needs_saliency(self, iteration: int) -> bool:
        if self.scorer == "random":
            return False
        return iteration < self._last_stop if self.accumulate else iteration in self._keep_after

    def update(self, iteration, kept, saliency, generator):  # noqa: D102 - see SelectionPolicy
        if self.accumulate and saliency is not None:
            if self._total is None:
                self._total = saliency.new_zeros(kept.shape[0], self.num_patches, dtype=torch.float32)
            self._total.scatter_add_(1, kept, saliency.float())
        if self._rejoin is not None and iteration == self._rejoin - 1:
            every = torch.arange(self.num_patches, dtype=kept.dtype, device=kept.device)
            return every.expand(kept.shape[0], -1).contiguous()
        num_keep = self._keep_after.get(iteration)
        if num_keep is None or num_keep == kept.shape[1]:
            return kept
        if self.scorer == "random":
            return keep_random(kept, num_keep, generator)
        if saliency is None:
            raise RuntimeError(f"iteration {iteration}: the SMI policy needs the saliency of this forward")
        scores = torch.gather(self._total, 1, kept) if self.accumulate else saliency
        # rebirth: the most salient patches leave, the least salient keep evolving
        return keep_top_salient(kept, -scores if self.scorer == "rebirth" else scores, num_keep)


def make_policy(config: SelectionConfig, num_patches: int) -> SelectionPolicy:
    """The policy a ``SelectionConfig`` names."""
    if config.kind == "dense":
        return DensePolicy()
    scorer = {"smi": "saliency", "random": "random", "rebirth": "rebirth"}[config.kind]
    return ScheduledStopping(config, num_patches, scorer=scorer)


def images_per_target(config: SelectionConfig) -> int:
    """Images one inversion yields per target: 1, or with ``rebirth`` one per stop (the image as the stop leaves
    it) plus the final image."""
    return len(config.schedule.iterations) + 1 if config.kind == "rebirth" else 1


def targets_for(config: SelectionConfig, images: int) -> int:
    """Targets to invert for ``images`` images (rebirth: a run yields several per target; the last may yield
    more than are needed)."""
    return -(-images // images_per_target(config))


def tokens_per_iteration(config: SelectionConfig, num_patches: int, iterations: int) -> list[int]:
    """Kept patch count of every iteration under ``config`` (what the engine really runs)."""
    counts = [num_patches] * iterations
    if config.kind == "dense":
        return counts
    for t, k in zip(config.schedule.iterations, config.schedule.kept_counts(num_patches)):
        for i in range(t, iterations):
            counts[i] = k
    if config.rejoin is not None:
        counts[config.rejoin:] = [num_patches] * max(0, iterations - config.rejoin)
    return counts
