"""What one inversion batch returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch


def expand_patch_mask(mask: torch.Tensor, grid: tuple[int, int], patch_size: tuple[int, int]) -> torch.Tensor:
    """``(B, N)`` patch mask (row-major ``grid``) -> ``(B, 1, H, W)`` pixel mask."""
    pixels = mask.view(mask.shape[0], 1, *grid)
    return pixels.repeat_interleave(patch_size[0], 2).repeat_interleave(patch_size[1], 3)


@dataclass
class InversionResult:
    """Final (best) images of one batch and everything measured about them. All tensors on CPU.

    Shapes: B samples, N patches (``grid[0] * grid[1]``), H x W pixels. Only what a shard stores comes
    back from the device (:func:`expand_patch_mask` turns ``kept_mask`` into a pixel mask). A rebirth run
    (``selection.kind == "rebirth"``) yields S images per target, target by target: B is targets x S.
    """

    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1], unmasked final image (rebirth: or as a stop left it)
    labels: torch.Tensor  # (B,) int64 target classes
    kept_mask: torch.Tensor  # (B, N) bool, patches still evolving at the end (row-major patch grid)
    logits: torch.Tensor  # (B, num_classes) float32, teacher logits (a float32 forward) on the final image
    loss: torch.Tensor  # (B,) float32 per-sample objective of the kept iterate
    confidence: torch.Tensor  # (B,) float32 teacher softmax probability of the target class
    grid: tuple[int, int]  # patch grid (rows, cols)
    patch_size: tuple[int, int]
    iterations: int
    flops: int  # forward+backward FLOPs of the whole run, counted from the token schedule
    seconds: float  # wall time of the run

    def kept_indices(self, i: int) -> list[int]:
        """Row-major indices of the patches sample ``i`` kept."""
        return torch.nonzero(self.kept_mask[i], as_tuple=False).flatten().tolist()

    def first(self, n: int) -> InversionResult:
        """The first ``n`` images (a rebirth run's images beyond those asked for dropped), ``flops`` and
        ``seconds`` shared out as :meth:`split` does."""
        total = self.images.shape[0]
        return self if n == total else self.split([n, total - n])[0]

    def split(self, sizes: Sequence[int]) -> list[InversionResult]:
        """One result per consecutive part of ``sizes`` images (a packed call's batches); ``flops`` and
        ``seconds`` are shared out in proportion to the images."""
        total = self.images.shape[0]
        if sum(sizes) != total or any(n < 1 for n in sizes):
            raise ValueError(f"sizes: {list(sizes)} do not split a result of {total} images")
        parts, start = [], 0
        for n in sizes:
            cut = slice(start, start + n)
            parts.append(replace(
                self, images=self.images[cut], labels=self.labels[cut], kept_mask=self.kept_mask[cut],
                logits=self.logits[cut], loss=self.loss[cut], confidence=self.confidence[cut],
                flops=self.flops * n // total, seconds=self.seconds * n / total,
            ))
            start += n
        return parts
