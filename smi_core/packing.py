"""Packed batches: several independent batches inverted by one engine call, each with its own randomness.

A packed call concatenates its batches along the batch dimension, so the teacher runs one forward of
``sum(sizes)`` images per iteration (the point: a larger GPU batch through the sparse phases). Every
batch keeps what defines its images alone: its own generator, drawn in the same order as alone
(initial noise, each iteration's roll/flip, random stopping), its own batch mean in the objective (so
each sample's gradient is the one it gets alone), its own BN-prior statistic and its own
selection-policy state (accumulated saliency). Adam and clipping act element-wise. The arithmetic is
therefore that of the batches inverted one by one; only the rounding of kernels chosen for the larger
shape may differ. One batch (``sizes == (B,)``) runs exactly the unpacked engine's operations.

The zoom / colour-shift view (``AugmentConfig.warps``) is not packed: its crop is drawn per batch and
the zoomed forward maps tokens through one roll/flip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from smi_core.augment import (
    RollFlip,
    Warp,
    apply_roll_flip,
    remap_patch_index,
    sample_roll_flip,
    sample_warp,
)
from smi_core.config import AugmentConfig, SelectionConfig
from smi_core.selection import SelectionPolicy, make_policy


class BatchStreams:
    """The random streams of one engine call: ``generators[i]`` drives the next ``sizes[i]`` samples."""

    def __init__(self, sizes: Sequence[int], generators: Sequence[torch.Generator]) -> None:
        if len(sizes) != len(generators) or not sizes:
            raise ValueError(f"batches: expected one generator per batch, got {len(sizes)} batches and "
                             f"{len(generators)} generators")
        if any(int(n) < 1 for n in sizes):
            raise ValueError(f"batches: every packed batch needs at least one target, got sizes {list(sizes)}")
        self.sizes = tuple(int(n) for n in sizes)
        self.generators = tuple(generators)
        self._policies: list[SelectionPolicy] = []

    @property
    def packed(self) -> bool:
        return len(self.sizes) > 1

    def check(self, augment: AugmentConfig) -> None:
        """Raise ``ValueError`` for what cannot be packed (the zoom / colour-shift view)."""
        if self.packed and augment.warps:
            raise ValueError("augment: zoom and colour_shift views cannot be packed; invert the batches one by one")

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` cut along dim 0 into the batches."""
        return list(torch.split(x, self.sizes)) if self.packed else [x]

    def noise(self, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal initial pixels ``(sum(sizes), *shape)``, each batch's from its generator."""
        parts = [torch.randn(n, *shape, generator=g, device=g.device) for n, g in zip(self.sizes, self.generators)]
        return parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].device) for p in parts])

    def roll_flips(self, augment: AugmentConfig, grid: tuple[int, int]) -> tuple[RollFlip, ...]:
        """This iteration's roll/flip of every batch."""
        return tuple(sample_roll_flip(augment, grid, g) for g in self.generators)

    def warp(self, augment: AugmentConfig, device: torch.device) -> Warp | None:
        """This iteration's zoom / colour shift (one batch only: see :meth:`check`)."""
        return sample_warp(augment, self.sizes[0], self.generators[0], device) if not self.packed else None

    def apply_roll_flip(self, images: torch.Tensor, augs: tuple[RollFlip, ...],
                        patch_size: tuple[int, int]) -> torch.Tensor:
        """Every batch's view under its own roll/flip."""
        if not self.packed:
            return apply_roll_flip(images, augs[0], patch_size)
        return torch.cat([apply_roll_flip(x, a, patch_size) for x, a in zip(self.split(images), augs)])

    def remap_patch_index(self, index: torch.Tensor, augs: tuple[RollFlip, ...],
                          grid: tuple[int, int]) -> torch.Tensor:
        """Where every batch's canonical patch indices land in its view."""
        if not self.packed:
            return remap_patch_index(index, augs[0], grid)
        return torch.cat([remap_patch_index(x, a, grid) for x, a in zip(self.split(index), augs)])

    def mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        """The sum over batches of each batch's mean (one batch: its mean)."""
        if not self.packed:
            return per_sample.mean()
        return torch.stack([x.mean() for x in self.split(per_sample)]).sum()

    def batch_term(self, term: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The sum over batches of a batch statistic ``term`` of each batch's part of ``x``."""
        if not self.packed:
            return term(x)
        return torch.stack([term(part) for part in self.split(x)]).sum()

    def policy(self, selection: SelectionConfig, num_patches: int) -> SelectionPolicy:
        """A fresh selection policy per batch; the first answers ``needs_saliency``/``final_phase_start``
        (the same for all)."""
        self._policies = [make_policy(selection, num_patches) for _ in self.sizes]
        return self._policies[0]

    def update(self, iteration: int, kept: torch.Tensor, saliency: torch.Tensor | None) -> torch.Tensor:
        """Every batch's next kept set from its own policy, saliency and generator (see :meth:`policy`)."""
        if not self.packed:
            return self._policies[0].update(iteration, kept, saliency, self.generators[0])
        sal = self.split(saliency) if saliency is not None else [None] * len(self.sizes)
        parts = [p.update(iteration, k, s, g)
                 for p, k, s, g in zip(self._policies, self.split(kept), sal, self.generators)]
        return torch.cat(parts)
