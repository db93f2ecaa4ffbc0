"""Procedurally generated toy classification images: coloured shapes on cluttered textured backgrounds.

Ten shape classes (``CLASS_NAMES``, in alphabetical order so an ImageFolder's sorted class folders get
the same indices as our labels) with random colour, size and a small rotation, centred (see
``POSITION_JITTER``), over a low-contrast background of smooth noise, stripes, blobs and grain.
Everything is vectorised torch code (about 15,000 images/s on one core) and
fully determined by ``(n, seed, split, image_size)``; the train and held-out splits draw from
disjoint generator seeds (even and odd), so they never share a random stream.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "bar", "circle", "crescent", "cross", "diamond", "heart", "ring", "square", "star", "triangle",
)
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "heldout")
MAX_SEED = 2**62

_MAX_ROTATION = math.radians(12.0)  # small: a square turned 45 degrees would be a diamond
_FG_MIN_DISTANCE = 0.5  # minimum RGB distance between the object and the background base colour
# Objects are centred, as in most photo datasets: a tiny ViT trained for about a minute cannot also
# learn translation invariance (random positions cap it near 50% top-1 in the same budget; +-1 px of
# jitter already costs ~10 points). 1.0 would place objects anywhere inside the image.
POSITION_JITTER = 0.0


def split_seed(seed: int, split: str) -> int:
    """Train uses even generator seeds, held-out odd ones: the two splits never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed: must be in [0, 2**62), got {seed}")
    return 2 * int(seed) + SPLITS.index(split)


# --- shape signed distances (unit-sized shapes in local coordinates u, v; v points down) ----------


def _box(u: torch.Tensor, v: torch.Tensor, hu: float, hv: float) -> torch.Tensor:
    return torch.maximum(u.abs() - hu, v.abs() - hv)


def _sdf(kind: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (negative inside) of shape ``kind`` at local coordinates."""
    name = CLASS_NAMES[kind]
    r = torch.sqrt(u * u + v * v)
    if name == "bar":
        return _box(u, v, 1.1, 0.32)
    if name == "circle":
        return r - 0.9
    if name == "crescent":
        return torch.maximum(r - 0.95, 0.78 - torch.sqrt((u - 0.45) ** 2 + (v + 0.15) ** 2))
    if name == "cross":
        return torch.minimum(_box(u, v, 1.0, 0.28), _box(u, v, 0.28, 1.0))
    if name == "diamond":
        return (u.abs() + v.abs() - 1.05) * (1 / math.sqrt(2))
    if name == "heart":
        # Inigo Quilez's heart: tip at y=0, lobes up to y~1.1; map v (down) to y (up), scale ~1.
        x, y = u.abs() * 0.62, 0.62 - v * 0.55
        lobe = torch.sqrt((x - 0.25) ** 2 + (y - 0.75) ** 2) - math.sqrt(2) / 4
        t = 0.5 * torch.clamp(x + y, min=0.0)
        body = torch.sqrt(torch.minimum(x * x + (y - 1) ** 2, (x - t) ** 2 + (y - t) ** 2)) * torch.sign(x - y)
        return torch.where(x + y > 1.0, lobe, body) / 0.6
    if name == "ring":
        return (r - 0.68).abs() - 0.26
    if name == "square":
        return _box(u, v, 0.78, 0.78)
    if name == "star":
        theta = torch.atan2(v, u) + math.pi / 2  # a point straight up
        sector = 2 * math.pi / 5
        frac = torch.remainder(theta, sector) / sector  # 0 at a tip, 0.5 between two
        radius = 1.05 - 0.62 * (1 - (2 * frac - 1).abs())
        return (r - radius) * 0.7
    if name == "triangle":
        # Equilateral, pointing up, centred on its centroid.
        k = math.sqrt(3.0)
        y = -v + 0.1
        e1 = (k * u + y) * 0.5 - 0.5
        e2 = (-k * u + y) * 0.5 - 0.5
        return torch.maximum(torch.maximum(e1, e2), -y - 0.5)
    raise AssertionError(name)


# --- rendering -------------------------------------------------------------------------------

_CHUNK = 512  # images rendered together: keeps the per-pixel temporaries in cache


def _interp_matrix(cells: int, s: int) -> torch.Tensor:
    """``(s, cells)`` bilinear upsampling weights (align_corners=False, clamped at the borders)."""
    pos = ((torch.arange(s, dtype=torch.float32) + 0.5) * cells / s - 0.5).clamp(0, cells - 1)
    lo = pos.floor().long().clamp(max=cells - 2)
    w = pos - lo
    m = torch.zeros(s, cells)
    m[torch.arange(s), lo] = 1 - w
    m[torch.arange(s), lo + 1] = w
    return m


def _draw_params(n: int, s: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random number of ``n`` images, drawn in a fixed order."""
    p: dict[str, torch.Tensor] = {}
    p["labels"] = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    p["base"] = 0.15 + 0.7 * torch.rand(n, 3, generator=g)
    p["noise"] = (torch.rand(n, 3, 4, 4, generator=g) - 0.5) * 0.25
    p["stripe"] = torch.rand(n, 4, generator=g)  # frequency, angle, phase, amplitude
    p["blob_xy"] = torch.rand(n, 3, 2, generator=g)
    p["blob_r"] = 0.05 + 0.15 * torch.rand(n, 3, generator=g)
    p["blob_c"] = (torch.rand(n, 3, 3, generator=g) - 0.5) * 0.35
    p["scale"] = 0.2 + 0.14 * torch.rand(n, generator=g)  # object half-size as a fraction of the side
    p["centre"] = torch.rand(n, 2, generator=g)
    p["rot"] = (2 * torch.rand(n, generator=g) - 1) * _MAX_ROTATION
    p["shade"] = 0.25 * (torch.rand(n, generator=g) - 0.5)
    p["fg"] = _foreground_colour(p["base"], g)
    p["grain"] = (torch.rand(n, 1, s, s, generator=g) - 0.5) * 0.06
    return p


def _foreground_colour(base: torch.Tensor, g: torch.Generator, tries: int = 8) -> torch.Tensor:
    """A random colour at least ``_FG_MIN_DISTANCE`` from each background base colour (best of ``tries``)."""
    n = base.shape[0]
    cand = torch.rand(tries, n, 3, generator=g)
    dist = (cand - base.view(1, n, 3)).norm(dim=-1)  # (tries, n)
    ok = dist >= _FG_MIN_DISTANCE
    first_ok = torch.where(ok.any(0), ok.float().argmax(0), dist.argmax(0))
    return cand[first_ok, torch.arange(n)]


def _render(p: dict[str, torch.Tensor], s: int, interp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 3, s, s)`` and object masks ``(n, s, s)`` from the parameters of ``n`` images."""
    n = p["labels"].shape[0]
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    ys, xs = coords.view(1, s, 1), coords.view(1, 1, s)

    def col(t: torch.Tensor) -> torch.Tensor:  # a per-image scalar, broadcast against (s, s)
        return t.view(n, 1, 1)

    # Background: base colour + smooth noise + stripes + soft blobs + grain (luminance).
    smooth = torch.einsum("hi,ncij,wj->nchw", interp, p["noise"], interp)
    freq, angle, phase, amp = (p["stripe"][:, i] for i in range(4))
    freq, angle = (2 + 6 * freq) * math.pi, angle * math.pi
    stripes = col(0.1 * amp) * torch.sin(
        col(freq) * (xs * col(torch.cos(angle)) + ys * col(torch.sin(angle))) + col(phase * 2 * math.pi)
    )
    bx, by = p["blob_xy"][..., 0, None, None], p["blob_xy"][..., 1, None, None]
    d2 = (xs.unsqueeze(1) - bx) ** 2 + (ys.unsqueeze(1) - by) ** 2
    weights = torch.exp(-d2 / (2 * p["blob_r"][..., None, None] ** 2))
    blobs = torch.einsum("nbhw,nbc->nchw", weights, p["blob_c"])
    gray = stripes.unsqueeze(1) + p["grain"]
    background = smooth.add_(blobs).add_(gray).add_(p["base"].view(n, 3, 1, 1))

    # Object: signed distance of the class's shape, anti-aliased over one pixel.
    scale = col(p["scale"])
    free = (1 - 1.6 * scale) * POSITION_JITTER  # the object may move this far, as a fraction of the side
    cx = 0.5 + free * (col(p["centre"][:, 0]) - 0.5)
    cy = 0.5 + free * (col(p["centre"][:, 1]) - 0.5)
    dx, dy = (xs - cx) / scale, (ys - cy) / scale
    cos, sin = col(torch.cos(p["rot"])), col(torch.sin(p["rot"]))
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    alpha = torch.empty(n, s, s)
    for k in range(NUM_CLASSES):
        idx = (p["labels"] == k).nonzero().flatten()
        if len(idx):
            alpha[idx] = (0.5 - _sdf(k, u[idx], v[idx]) * (scale[idx] * s)).clamp_(0.0, 1.0)
    shade = 1 + col(p["shade"]) * dx
    obj = p["fg"].view(n, 3, 1, 1) * shade.unsqueeze(1)
    return torch.lerp(background, obj, alpha.unsqueeze(1)).clamp_(0.0, 1.0), alpha


def make_toy_images(
    n: int, seed: int, *, image_size: int = 32, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 3, S, S)`` float32 in [0, 1] and labels ``(n,)`` int64, balanced and shuffled.

    Deterministic in ``(n, seed, image_size, split)``; ``split`` is ``"train"`` or ``"heldout"``.
    """
    images, labels, _ = make_toy_images_and_masks(n, seed, image_size=image_size, split=split)
    return images, labels


def make_toy_images_and_masks(
    n: int, seed: int, *, image_size: int = 32, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`make_toy_images` plus each object's coverage mask ``(n, S, S)`` in [0, 1]."""
    g = torch.Generator().manual_seed(split_seed(seed, split))
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8, got n={n}, image_size={image_size}")
    s = image_size
    params = _draw_params(n, s, g)
    interp = _interp_matrix(4, s)
    images, masks = torch.empty(n, 3, s, s), torch.empty(n, s, s)
    for lo in range(0, n, _CHUNK):
        chunk = {k: t[lo : lo + _CHUNK] for k, t in params.items()}
        images[lo : lo + _CHUNK], masks[lo : lo + _CHUNK] = _render(chunk, s, interp)
    return images, params["labels"].to(torch.int64), masks


class ToyShapes(Dataset):
    """``make_toy_images`` as a map-style dataset (generated once, up front); items ``(image, label)``."""

    def __init__(self, n: int, seed: int, *, image_size: int = 32, split: str = "train") -> None:
        self.images, self.labels = make_toy_images(n, seed, image_size=image_size, split=split)
        self.classes = list(CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(n, 3, H, W)`` floats in [0, 1] to ``(n, H, W, 3)`` uint8 (round to nearest)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_imagefolder(
    root: str | os.PathLike[str], n_per_class: int, seed: int, split: str = "heldout", *, image_size: int = 32
) -> Path:
    """Write ``root/<class_name>/<i>.png`` (``n_per_class`` per class); returns ``root``.

    The folder is built beside ``root`` and renamed into place, so a reader never sees half of it;
    an existing non-empty ``root`` is refused with ``FileExistsError``.
    """
    from PIL import Image

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    images, labels = make_toy_images(n_per_class * NUM_CLASSES, seed, image_size=image_size, split=split)
    pixels = to_uint8(images)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        counts = [0] * NUM_CLASSES
        for name in CLASS_NAMES:
            (tmp / name).mkdir()
        for img, label in zip(pixels, labels.tolist()):
            Image.fromarray(img).save(tmp / CLASS_NAMES[label] / f"{counts[label]:05d}.png")
            counts[label] += 1
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d %s images to %s", len(labels), split, root)
    return root
