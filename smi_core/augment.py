"""Random roll (in whole patches) and horizontal flip, with exact remapping of patch indices; and an
optional Plug-In Inversion style zoom (random resized crop) and colour shift on top of it.

Rolls move the image by whole patches so that every patch of the augmented view is exactly one patch
of the canonical image: ``remap_patch_index`` then tells where each kept patch's content went, and the
kept set follows the content. A zoom breaks that one-to-one map: ``token_overlap`` gives each view
token's share of kept pixels (the engine forwards the best-covered tokens) and ``token_source_patch``
the canonical patch under each view token's centre (where its saliency goes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


# --- Plug-In Inversion style view: random resized crop (zoom), flip, colour shift ------------------


@dataclass(frozen=True)
class Warp:
    """One draw of the zoom / colour-shift view, applied after the roll/flip.

    ``theta`` ``(B or 1, 2, 3)`` maps output to input coordinates (``F.affine_grid``'s normalised
    coordinates, ``align_corners=False``); ``None``: no resampling. ``gain`` and ``offset`` ``(B or 1,
    C, 1, 1)`` make the colour shift ``x * gain + offset``; ``None``: none.
    """

    theta: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    def without_zoom(self) -> "Warp":
        return Warp(None, self.gain, self.offset)


def sample_warp(config: AugmentConfig, batch: int, generator: torch.Generator, device: torch.device) -> Warp | None:
    """Draw a zoom / colour shift for ``batch`` images (one per image, or one for all without
    ``config.per_sample``); ``None`` when the config has neither (then nothing is drawn)."""
    if not config.warps:
        return None
    n = batch if config.per_sample else 1
    theta = gain = offset = None
    if config.zoom is not None:
        lo, hi = config.zoom
        u = torch.rand(n, 4, generator=generator, device=generator.device).to(device=device, dtype=torch.float32)
        side = lo + (hi - lo) * u[:, 0]
        sign = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if config.flip else torch.ones_like(side)
        tx = (1 - side) * (2 * u[:, 1] - 1)
        ty = (1 - side) * (2 * u[:, 2] - 1)
        zero = torch.zeros_like(side)
        theta = torch.stack([torch.stack([side * sign, zero, tx], 1), torch.stack([zero, side, ty], 1)], 1)
    if config.colour_shift > 0:
        a = float(config.colour_shift)
        u = torch.rand(n, 2, 3, generator=generator, device=generator.device).to(device=device, dtype=torch.float32)
        gain = (1 + a * (2 * u[:, 0] - 1)).view(n, 3, 1, 1)
        offset = (a * (2 * u[:, 1] - 1)).view(n, 3, 1, 1)
    return Warp(theta, gain, offset)


def _grid(theta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    b, c, h, w = images.shape
    return F.affine_grid(theta.expand(b, 2, 3).to(images.dtype), [b, c, h, w], align_corners=False)


def resample(images: torch.Tensor, warp: Warp) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` through the warp's crop (bilinear, border padding); no colour shift."""
    if warp.theta is None:
        return images
    return F.grid_sample(images, _grid(warp.theta, images), mode="bilinear", padding_mode="border",
                         align_corners=False)


def apply_warp(images: torch.Tensor, warp: Warp) -> torch.Tensor:
    """The zoomed, colour-shifted view of ``images`` (normalised pixels)."""
    out = resample(images, warp)
    if warp.gain is not None:
        out = out * warp.gain + warp.offset
    return out


def token_overlap(keep_pixels: torch.Tensor, warp: Warp, patch_size: tuple[int, int]) -> torch.Tensor:
    """``(B, N)`` fraction of each view token's pixels that come from kept pixels (``keep_pixels``
    ``(B, 1, H, W)`` bool, already in the roll/flip view), row-major over the view's patch grid."""
    view = resample(keep_pixels.float(), warp)
    return F.avg_pool2d(view, patch_size, patch_size).flatten(1)


def token_source_patch(
    source_index: torch.Tensor, warp: Warp, patch_size: tuple[int, int], batch: int
) -> torch.Tensor:
    """``(B, N)`` the entry of ``source_index`` ``(1 or B, H, W)`` (int64, one value per pixel of the
    roll/flip view) under the centre of each view token: with the canonical patch index per pixel, the
    canonical patch each view token mostly shows."""
    _, h, w = source_index.shape
    ph, pw = patch_size
    gh, gw = h // ph, w // pw
    device = source_index.device
    ys = (2 * (torch.arange(gh, device=device) * ph + ph / 2) / h - 1).float()
    xs = (2 * (torch.arange(gw, device=device) * pw + pw / 2) / w - 1).float()
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten(), torch.ones_like(gx.flatten())], 0)  # (3, N)
    theta = warp.theta if warp.theta is not None else torch.eye(2, 3, device=device).unsqueeze(0)
    src = theta.to(device).expand(batch, 2, 3) @ points  # (B, 2, N): normalised input x, y
    col = torch.floor((src[:, 0] + 1) * w / 2).long().clamp_(0, w - 1)
    row = torch.floor((src[:, 1] + 1) * h / 2).long().clamp_(0, h - 1)
    flat = source_index.expand(batch, h, w).reshape(batch, h * w)
    return torch.gather(flat, 1, row * w + col)
