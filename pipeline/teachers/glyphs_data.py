"""Glyph images: ten capital letters (or any set of characters) rendered with Pillow from the machine's DejaVu fonts, distorted.

Each image is one letter (``CLASS_NAMES``) in a random DejaVu face (Sans, Serif, Mono, condensed,
bold, oblique, light: whatever ``fc-list`` reports), size, stroke weight, rotation, shear and offset,
in a dark ink colour of any hue, over a light background of a smooth colour field, a few thin
clutter strokes and pixel noise. Letters are drawn at twice the resolution and reduced (anti-aliased).
Everything is drawn from one ``torch.Generator``, so a call is fully determined by ``(n, seed, split)``
and the font files; train and held-out splits use disjoint generator seeds (even and odd). Labels are
class-balanced: ``n`` images hold ``n // 10`` or ``n // 10 + 1`` of each letter, in a shuffled order.
The many-class teachers draw other characters (``class_names``) with the same renderer.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.teachers.toy_data import split_seed

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("A", "B", "D", "E", "G", "H", "K", "M", "R", "S")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 56
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts")
_SUPERSAMPLE = 2
_MAX_ROTATION = 15.0  # degrees
_MAX_SHEAR = 0.2
_MAX_SHIFT = 0.0  # of the side: letters are centred, like the toy's shapes (a tiny ViT trained for minutes
# learns no translation invariance: with +-4 px offsets it stayed at chance for 800 steps)
# Dark ink on light paper of any tint, as print is: with letter and background colours both uniform in the
# RGB cube, the tiny ViT stayed at chance for 800 steps (a small CNN learned); polarity is fixed instead.
_DARK = (0.0, 0.4)  # per-channel range of the ink colour
_LIGHT = (0.55, 1.0)  # per-channel range of the background's base colour


def _is_glyph_font(path: Path) -> bool:
    return path.suffix.lower() == ".ttf" and path.name.startswith("DejaVu") and "Math" not in path.name


@functools.lru_cache(maxsize=1)
def glyph_fonts() -> tuple[Path, ...]:
    """The DejaVu font files on this machine (``fc-list``, else the usual font folders), sorted by name."""
    found: set[Path] = set()
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
            found = {Path(line.strip()) for line in out.splitlines() if line.strip()}
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("fc-list failed (%s); searching the font folders", exc)
    if not any(_is_glyph_font(p) for p in found):
        for d in FONT_DIRS:
            root = Path(d).expanduser()
            if root.is_dir():
                found |= set(root.rglob("DejaVu*.ttf"))
    fonts = sorted((p for p in found if _is_glyph_font(p) and p.is_file()), key=lambda p: p.name)
    if not fonts:
        raise RuntimeError("no DejaVu .ttf fonts found (fc-list and " + ", ".join(FONT_DIRS) + "); install fonts-dejavu")
    return tuple(fonts)


@functools.lru_cache(maxsize=256)
def _font(index: int, size: int):  # noqa: ANN202 - a PIL FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(glyph_fonts()[index]), size)


def balanced_labels(n: int, g: torch.Generator, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """``n`` labels holding every class ``n // C`` or ``n // C + 1`` times, shuffled by ``g``."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _glyph_mask(text: str, g: torch.Generator, side: int) -> np.ndarray:
    """The letter's coverage ``(side, side)`` in [0, 1]: drawn big, transformed, reduced."""
    from PIL import Image, ImageDraw

    big = side * _SUPERSAMPLE
    font_index = int(torch.randint(len(glyph_fonts()), (), generator=g))
    size = round(big * _uniform(g, 0.55, 0.85))
    stroke = int(torch.randint(0, 3, (), generator=g))
    angle = math.radians(_uniform(g, -_MAX_ROTATION, _MAX_ROTATION))
    shear = _uniform(g, -_MAX_SHEAR, _MAX_SHEAR)
    dx, dy = (_uniform(g, -_MAX_SHIFT, _MAX_SHIFT) * big for _ in range(2))
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).text((big / 2, big / 2), text, fill=255, font=_font(font_index, size),
                                anchor="mm", stroke_width=stroke, stroke_fill=255)
    # output pixel p samples input A p + c: the inverse of "rotate and shear about the centre, then shift"
    cos, sin = math.cos(angle), math.sin(angle)
    a, b, d, e = cos, -sin + shear * cos, sin, cos + shear * sin  # forward linear map M = R @ [[1, s], [0, 1]]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    cx = cy = big / 2
    ox, oy = cx + dx, cy + dy
    coeffs = (ia, ib, cx - ia * ox - ib * oy, id_, ie, cy - id_ * ox - ie * oy)
    canvas = canvas.transform((big, big), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    canvas = canvas.resize((side, side), Image.BOX)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _background(g: torch.Generator, side: int) -> torch.Tensor:
    """A light background ``(3, side, side)``: a smooth colour field plus thin clutter strokes."""
    from PIL import Image, ImageDraw

    base = _LIGHT[0] + (_LIGHT[1] - _LIGHT[0]) * torch.rand(3, generator=g)
    field = (torch.rand(1, 3, 4, 4, generator=g) - 0.5) * 0.3
    img = (base.view(3, 1, 1) + F.interpolate(field, size=(side, side), mode="bilinear", align_corners=False)[0])
    img = img.clamp(0, 1)
    pil = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(torch.randint(2, 7, (), generator=g))):
        colour = (0.5 * base + 0.5 * torch.rand(3, generator=g)).mul(255).round().to(torch.uint8).tolist()
        x0, y0, x1, y1 = (torch.rand(4, generator=g) * side).tolist()
        width = int(torch.randint(1, 3, (), generator=g))
        if float(torch.rand((), generator=g)) < 0.5:
            draw.line((x0, y0, x1, y1), fill=tuple(colour), width=width)
        else:
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=tuple(colour), width=width)
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _foreground_colour(g: torch.Generator) -> torch.Tensor:
    """A dark ink colour of any hue (each channel in ``_DARK``)."""
    return _DARK[0] + (_DARK[1] - _DARK[0]) * torch.rand(3, generator=g)


def make_glyph_images(
    n: int, seed: int, *, split: str = "train", image_size: int = IMAGE_SIZE,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` glyph images ``(n, 3, S, S)`` float32 in [0, 1] and their labels ``(n,)`` int64 (class-balanced).

    Label ``k`` draws the character ``class_names[k]`` (default: the ten capitals of :data:`CLASS_NAMES`;
    the many-class teachers pass a :func:`pipeline.teachers.glyph_sets.glyph_set`). Deterministic in
    ``(n, seed, split, image_size, class_names)`` and the installed DejaVu fonts.
    """
    if n < 0 or image_size < 16 or not class_names:
        raise ValueError(f"need n >= 0, image_size >= 16 and classes, got n={n}, image_size={image_size}, "
                         f"{len(class_names)} classes")
    g = torch.Generator().manual_seed(split_seed(seed, split))
    labels = balanced_labels(n, g, len(class_names))
    images = torch.empty(n, 3, image_size, image_size)
    for i in range(n):
        background = _background(g, image_size)
        mask = torch.from_numpy(_glyph_mask(class_names[int(labels[i])], g, image_size))
        colour = _foreground_colour(g).view(3, 1, 1)
        img = background * (1 - mask) + colour * mask
        noise = _uniform(g, 0.0, 0.06) * torch.randn(3, image_size, image_size, generator=g)
        images[i] = (img + noise).clamp(0, 1)
    return images, labels.to(torch.int64)


def augment(images: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Training views of glyph images: a random shift of up to ``max_shift`` pixels (edges replicated)
    and a random permutation of the colour channels (letter and background colours are arbitrary)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=g).tolist()
    perms = torch.argsort(torch.rand(n, 3, generator=g), dim=1)
    out = torch.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, perms[i], dy : dy + h, dx : dx + w]
    return out
