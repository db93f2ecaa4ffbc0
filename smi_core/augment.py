"""Random roll (in whole patches) and horizontal flip, with exact remapping of patch indices.

Rolls move the image by whole patches so that every patch of the augmented view is exactly one patch
of the canonical image: ``remap_patch_index`` then tells where each kept patch's content went, and the
kept set follows the content.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smi_core.config import AugmentConfig


@dataclass(frozen=True)
class RollFlip:
    """One draw of the augmentation: roll by ``(rows, cols)`` patches, then optionally flip left-right."""

    rows: int = 0
    cols: int = 0
    flip: bool = False

    @property
    def is_identity(self) -> bool:
        return self.rows == 0 and self.cols == 0 and not self.flip


def max_roll_patches(config: AugmentConfig, grid: tuple[int, int]) -> tuple[int, int]:
    """Largest roll in patches per axis: ``max_roll_fraction`` of the side, at least one patch if enabled."""
    if not config.enabled or config.max_roll_fraction == 0:
        return (0, 0)
    return tuple(max(1, round(config.max_roll_fraction * g)) for g in grid)  # type: ignore[return-value]


def sample_roll_flip(config: AugmentConfig, grid: tuple[int, int], generator: torch.Generator) -> RollFlip:
    """Draw one augmentation from ``generator`` (always consumes the same number of draws)."""
    if not config.enabled:
        return RollFlip()
    max_rows, max_cols = max_roll_patches(config, grid)
    draws = torch.rand(3, generator=generator, device=generator.device).tolist()
    rows = int(draws[0] * (2 * max_rows + 1)) - max_rows
    cols = int(draws[1] * (2 * max_cols + 1)) - max_cols
    return RollFlip(rows=rows, cols=cols, flip=config.flip and draws[2] < 0.5)


def apply_roll_flip(images: torch.Tensor, aug: RollFlip, patch_size: tuple[int, int]) -> torch.Tensor:
    """The augmented view of ``images`` ``(B, C, H, W)``."""
    if aug.is_identity:
        return images
    out = images
    if aug.rows or aug.cols:
        out = torch.roll(out, shifts=(aug.rows * patch_size[0], aug.cols * patch_size[1]), dims=(2, 3))
    if aug.flip:
        out = torch.flip(out, dims=(3,))
    return out


def remap_patch_index(index: torch.Tensor, aug: RollFlip, grid: tuple[int, int]) -> torch.Tensor:
    """Where canonical row-major patch indices ``index`` land in the augmented view."""
    if aug.is_identity:
        return index
    rows, cols = grid
    r = torch.remainder(index // cols + aug.rows, rows)
    c = torch.remainder(index % cols + aug.cols, cols)
    if aug.flip:
        c = cols - 1 - c
    return r * cols + c
