"""Real handwriting: scikit-learn's bundled digits (1,797 8 x 8 greyscale scans of 0-9), upscaled to 32 px.

The data ships inside scikit-learn (``sklearn.datasets.load_digits``; no download). Ink is white on
black, grey in all three channels. The held-out split is a fixed, class-balanced draw of
``HELDOUT_PER_CLASS`` images of every digit (a permutation seeded by ``SPLIT_SEED``); the rest is the
training split. :func:`augment` gives training views: a small random rotation, scale and shift, contrast
and brightness jitter, and pixel noise, all drawn from a ``torch.Generator``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 32
SPLITS = ("train", "heldout")
SPLIT_SEED = 0
HELDOUT_PER_CLASS = 50  # 500 held-out images; 1,297 for training
_MAX_ROTATION = math.radians(12.0)
_SCALE = (0.9, 1.1)
_MAX_SHIFT = 0.08  # of the side


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit as ``(1797, 8, 8)`` float32 ink in [0, 1] and its label."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # a dev-extra dependency
        raise RuntimeError("the digits teacher needs scikit-learn (pip install 'smi-synth[dev]')") from exc
    data = load_digits()
    images = torch.from_numpy(data.images.astype("float32")) / 16.0
    return images, torch.from_numpy(data.target.astype("int64"))


def split_indices(split: str) -> torch.Tensor:
    """Indices into the 1,797 digits of ``split``: held-out takes the first ``HELDOUT_PER_CLASS`` of each
    class in a ``SPLIT_SEED`` permutation, train the rest (sorted)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    _, labels = _all_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    heldout = torch.cat([order[labels[order] == c][:HELDOUT_PER_CLASS] for c in range(NUM_CLASSES)])
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[heldout] = True
    return torch.nonzero(mask if split == "heldout" else ~mask).flatten()


def upscale(small: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``(N, 8, 8)`` ink to ``(N, 3, size, size)`` images in [0, 1] (bilinear)."""
    big = F.interpolate(small.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
    return big.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def digit_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``split`` as ``(N, 3, 32, 32)`` float32 in [0, 1] and its labels (in dataset order)."""
    images, labels = _all_digits()
    index = split_indices(split)
    return upscale(images[index]), labels[index]


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training views of images in [0, 1]: rotation, scale, shift, contrast/brightness jitter, noise."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * _MAX_ROTATION
    scale = _SCALE[0] + (_SCALE[1] - _SCALE[0]) * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * _MAX_SHIFT * 2  # affine_grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    noise = 0.05 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(out.shape, generator=g)
    return (out * contrast + brightness + noise).clamp(0, 1)
