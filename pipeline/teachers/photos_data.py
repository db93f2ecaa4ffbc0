"""Real photographs: ten colour photos that ship inside PyPI wheels, one class each, seen as random crops.

Two photos come with scikit-learn (``sklearn/datasets/images``: ``china``, ``flower``), eight with
scikit-image (``skimage/data``: ``astronaut``, ``chelsea``, ``coffee``, ``hubble_deep_field``, ``ihc``,
``motorcycle_left``, ``retina``, ``rocket``). The files are found with :func:`importlib.util.find_spec`
and read with Pillow: neither package is imported, and nothing is downloaded.

A sample of class ``c`` is a crop of photo ``c``: each photo (reduced once so its short side is
``6 * size``) is cut into 4 x 4 blocks; one block of every row and column (a shifted diagonal, row ``r``'s
block ``(r + c) % 4``) is held out, the other twelve are for training, and every crop lies inside one
block, so no held-out pixel is ever seen in training while every held-out block has training neighbours
(with 2 x 2 quadrants and one held out, a 1,000-step teacher reached only 76.5%). A crop's
side is 50-100% of its block's short side, its aspect 3/4-4/3, its place uniform; it is resized to
``size`` px (antialiased), flipped half the time and colour-jittered per crop (brightness, contrast,
saturation and per-channel gains), so a class is its photo's texture, colour and content, not a mean colour.
Everything is drawn from one ``torch.Generator``; train and held-out draws use disjoint generator seeds.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.teachers.toy_data import split_seed

# class name -> (package, folder inside the package, file)
PHOTOS: dict[str, tuple[str, str, str]] = {
    "china": ("sklearn", "datasets/images", "china.jpg"),
    "flower": ("sklearn", "datasets/images", "flower.jpg"),
    "astronaut": ("skimage", "data", "astronaut.png"),
    "chelsea": ("skimage", "data", "chelsea.png"),
    "coffee": ("skimage", "data", "coffee.png"),
    "hubble_deep_field": ("skimage", "data", "hubble_deep_field.jpg"),
    "ihc": ("skimage", "data", "ihc.png"),
    "motorcycle_left": ("skimage", "data", "motorcycle_left.png"),
    "retina": ("skimage", "data", "retina.jpg"),
    "rocket": ("skimage", "data", "rocket.jpg"),
}
CLASS_NAMES: tuple[str, ...] = tuple(PHOTOS)
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "heldout")
GRID = 4  # blocks per side
_REDUCED = 6  # a photo's short side, in crop sizes
_SIDE = (0.5, 1.0)  # crop side, as a fraction of the block's short side
_ASPECT = (0.75, 4 / 3)
_BRIGHTNESS = (0.7, 1.3)
_CONTRAST = (0.7, 1.3)
_SATURATION = (0.5, 1.5)
_GAIN = (0.85, 1.15)  # per channel


def photo_path(name: str) -> Path:
    """The file of photo ``name`` inside its package (RuntimeError naming the package when it is missing)."""
    package, folder, file = PHOTOS[name]
    spec = importlib.util.find_spec(package)  # finds a top-level package without importing it
    path = Path(spec.origin).parent / folder / file if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        pip = {"sklearn": "scikit-learn", "skimage": "scikit-image"}[package]
        raise RuntimeError(f"the photos teachers need {file} from {pip} (pip install {pip})")
    return path


def photo_digests() -> dict[str, str]:
    """Each photo file's sha256 (first 16 hex digits): what a cached teacher's data depends on."""
    return {n: hashlib.sha256(photo_path(n).read_bytes()).hexdigest()[:16] for n in CLASS_NAMES}


@functools.lru_cache(maxsize=4)
def photos(size: int) -> tuple[torch.Tensor, ...]:
    """Every photo as ``(3, H, W)`` float32 in [0, 1], reduced so its short side is ``6 * size``."""
    from PIL import Image

    out = []
    for name in CLASS_NAMES:
        with Image.open(photo_path(name)) as im:
            rgb = im.convert("RGB")
            scale = _REDUCED * size / min(rgb.size)
            rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
            out.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous())
    return tuple(out)


def block(index: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Block ``index`` (row-major, ``GRID x GRID``) of an image as ``(top, left, height, width)``."""
    h, w = height // GRID, width // GRID
    return (index // GRID) * h, (index % GRID) * w, h, w


def split_blocks(label: int, split: str) -> tuple[int, ...]:
    """The blocks of photo ``label`` a split crops from: held-out ``(r, (r + label) % GRID)`` of every row
    ``r``, train the other twelve."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    held = {r * GRID + (r + label) % GRID for r in range(GRID)}
    return tuple(b for b in range(GRID * GRID) if (b in held) == (split == "heldout"))


def _uniform(g: torch.Generator, bounds: tuple[float, float]) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * float(torch.rand((), generator=g))


def _jitter(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-crop colour jitter of one ``(3, S, S)`` image in [0, 1]."""
    grey = image.mean(0, keepdim=True)
    image = grey + (image - grey) * _uniform(g, _SATURATION)
    image = image.mean() + (image - image.mean()) * _uniform(g, _CONTRAST)
    gains = torch.tensor([_uniform(g, _GAIN) for _ in range(3)]).view(3, 1, 1)
    return (image * _uniform(g, _BRIGHTNESS) * gains).clamp(0, 1)


def crop_box(label: int, split: str, height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """A random crop ``(top, left, height, width)`` of a ``height x width`` photo ``label`` inside one
    block of ``split``."""
    blocks = split_blocks(label, split)
    top, left, qh, qw = block(blocks[int(torch.randint(len(blocks), (), generator=g))], height, width)
    side = _uniform(g, _SIDE) * min(qh, qw)
    aspect = _uniform(g, _ASPECT)
    ch, cw = max(1, min(qh, round(side / aspect**0.5))), max(1, min(qw, round(side * aspect**0.5)))
    y = top + int(torch.randint(qh - ch + 1, (), generator=g))
    x = left + int(torch.randint(qw - cw + 1, (), generator=g))
    return y, x, ch, cw


def crop(label: int, split: str, size: int, g: torch.Generator) -> torch.Tensor:
    """One random view of photo ``label`` from the blocks of ``split``: ``(3, size, size)`` in [0, 1]."""
    photo = photos(size)[label]
    y, x, ch, cw = crop_box(label, split, photo.shape[1], photo.shape[2], g)
    view = F.interpolate(photo[None, :, y:y + ch, x:x + cw], size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)[0]
    if float(torch.rand((), generator=g)) < 0.5:
        view = view.flip(-1)
    return _jitter(view.clamp(0, 1), g)


def make_photo_images(n: int, seed: int, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops ``(n, 3, size, size)`` float32 in [0, 1] of ``split`` and their labels, class-balanced
    (``n // 10`` or one more of each photo, shuffled), fully determined by ``(n, seed, split, size)``."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if size < 8:
        raise ValueError(f"size: expected at least 8 px, got {size}")
    g = torch.Generator().manual_seed(split_seed(seed, split))
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    images = torch.stack([crop(int(c), split, size, g) for c in labels]) if n else torch.zeros(0, 3, size, size)
    return images, labels.to(torch.int64)


def random_crops(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Fresh training crops of the photos ``labels`` (a teacher's training batch), drawn from ``g``."""
    return torch.stack([crop(int(c), "train", size, g) for c in labels])
