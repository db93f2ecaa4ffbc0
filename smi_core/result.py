"""What one inversion batch returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InversionResult:
    """Final (best) images of one batch and everything measured about them. All tensors on CPU.

    Shapes: B samples, N patches (``grid[0] * grid[1]``), H x W pixels.
    """

    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1], unmasked final image
    masked_images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1], stopped patches zeroed (as SMI publishes)
    labels: torch.Tensor  # (B,) int64 target classes
    kept_mask: torch.Tensor  # (B, N) bool, patches still evolving at the end (row-major patch grid)
    pixel_mask: torch.Tensor  # (B, 1, H, W) bool, kept_mask expanded to pixels
    logits: torch.Tensor  # (B, num_classes) float32, teacher logits on the final unmasked image
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
