"""Contact sheets of a corpus: ``preview/class-00042.png`` per class and ``preview/overview.png``.

Images are scaled up by a whole factor with nearest-neighbour sampling to at least :data:`MIN_TILE`
pixels a side, so a 32-pixel inversion shows its pixels instead of a smudge; class names label every
sheet and every overview cell. The overview is a grid of classes (a few images each) at most
:data:`OVERVIEW_WIDTH` pixels wide, small enough to show in a README or a dataset card.

How stopped patches are shown (``overlay``): SMI stops inverting low-saliency patches early. With
``"faint"`` (the default) those patches keep their colours a little darker than the kept ones, so
the image reads as a whole and the kept region is still visible; ``"off"`` shows every image as
stored. Dense images (every patch kept) show unchanged either way.

Memory stays bounded for 1000-class corpora: classes are processed one at a time, each reading only
the first shard(s) of that class until ``per_class`` images are found, and the overview keeps a few
small thumbnails for at most :data:`OVERVIEW_MAX_CLASSES` classes. Output bytes are deterministic
(fixed layout, Pillow's built-in font, PNG without metadata) and written atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.corpus.index import complete_shard_ids, read_manifest
from pipeline.corpus.layout import OVERVIEW_MAX_CLASSES, OVERVIEW_NAME, CorpusLayout, as_layout
from pipeline.corpus.sample import decode_image, image_member, kept_mask_from_meta
from pipeline.corpus.tar_io import read_tar
from pipeline.errors import UserError

log = logging.getLogger(__name__)

PAD = 2  # pixels between tiles and around the grid
HEADER = 20  # height of a title strip (class sheet, overview cell)
FONT_SIZE = 13
MIN_TILE, MAX_TILE = 96, 160  # tiles: the image size, clamped (small images upscaled by a whole factor)
THUMB = 128  # overview thumbnails: the tile size, at most this
OVERVIEW_PER_CLASS = 4  # a 2 x 2 block per class
OVERVIEW_WIDTH = 1024  # at most (a single class cell wider than this still shows)
CELL_GAP = 8  # pixels between overview cells
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
OVERLAYS = ("faint", "off")
DIM = 0.78  # brightness kept by stopped patches under the faint overlay (colours kept)


def class_sheet_name(label: int) -> str:
    return f"class-{label:05d}.png"


def tile_size(image_side: int) -> int:
    """Class-sheet tile side for images of ``image_side`` pixels: native, or a whole multiple of
    it when small, at most :data:`MAX_TILE`."""
    if image_side >= MIN_TILE:
        return min(image_side, MAX_TILE)
    return image_side * math.ceil(MIN_TILE / image_side)


def thumb_size(image_side: int) -> int:
    """Overview thumbnail side: the class-sheet tile, at most :data:`THUMB`."""
    return min(tile_size(image_side), THUMB)


def sheet_size(n_images: int, per_class: int, tile: int) -> tuple[int, int]:
    """(width, height) of a class sheet with ``n_images`` tiles in a ``ceil(sqrt(per_class))``-wide grid."""
    cols = max(1, math.ceil(math.sqrt(per_class)))
    rows = max(1, math.ceil(n_images / cols))
    return cols * tile + (cols + 1) * PAD, HEADER + rows * tile + (rows + 1) * PAD


def _cell_grid(thumb: int) -> tuple[int, int, int]:
    """(cell width, cell height, cells per row) of the overview for thumbnails of ``thumb`` pixels."""
    side = math.ceil(math.sqrt(OVERVIEW_PER_CLASS))
    cell_w = side * thumb + (side - 1) * PAD
    cell_h = HEADER + math.ceil(OVERVIEW_PER_CLASS / side) * (thumb + PAD) - PAD
    per_row = max(1, (OVERVIEW_WIDTH - CELL_GAP) // (cell_w + CELL_GAP))
    return cell_w, cell_h, per_row


def overview_size(n_classes: int, thumb: int) -> tuple[int, int]:
    """(width, height) of the overview: a grid of class cells, as many per row as fit :data:`OVERVIEW_WIDTH`."""
    cell_w, cell_h, per_row = _cell_grid(thumb)
    cols, rows = min(per_row, max(1, n_classes)), max(1, math.ceil(n_classes / per_row))
    return cols * (cell_w + CELL_GAP) + CELL_GAP, rows * (cell_h + CELL_GAP) + CELL_GAP


def render_tile(pixels: np.ndarray, kept: np.ndarray | None, size: int, overlay: str = "faint") -> Image.Image:
    """One image as a ``size`` x ``size`` tile; under the faint overlay its stopped patches are dimmed."""
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay must be one of {', '.join(OVERLAYS)}, got {overlay!r}")
    img = pixels.astype(np.float32)
    if overlay == "faint" and kept is not None and not kept.all():
        h, w = img.shape[:2]
        gh, gw = kept.shape
        rows = np.minimum(np.arange(h) * gh // h, gh - 1)
        cols = np.minimum(np.arange(w) * gw // w, gw - 1)
        img[~kept[np.ix_(rows, cols)]] *= DIM
    tile = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
    if tile.size != (size, size):
        upscale = size >= max(tile.size)
        tile = tile.resize((size, size), Image.Resampling.NEAREST if upscale else Image.Resampling.BOX)
    return tile


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at :data:`FONT_SIZE` (its bitmap font where Pillow lacks FreeType)."""
    return ImageFont.load_default(size=FONT_SIZE)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` cut to ``width`` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def _label(label: int, name: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``"42 goldfish"``, reduced to Latin-1 when the font is Pillow's bitmap fallback."""
    text = f"{label} {name}"
    if not isinstance(font, ImageFont.FreeTypeFont):
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


def iter_images(layout: CorpusLayout, shard_id: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(RGB pixels, kept-patch mask or None) per sample of one shard, streaming in tar order."""
    for _, members in read_tar(layout.storage, layout.tar(shard_id)):
        meta = json.loads(members.get("json", b"{}"))
        kept = kept_mask_from_meta(meta) if "kept_patches" in meta and "patch_grid" in meta else None
        yield decode_image(members[image_member(members)]), kept


def _class_samples(
    layout: CorpusLayout, shard_ids: list[int], limit: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(pixels, kept mask) of the first ``limit`` samples of one class's shards (in shard order)."""
    n = 0
    for sid in shard_ids:
        for item in iter_images(layout, sid):
            yield item
            n += 1
            if n >= limit:
                return


def _overview_labels(labels: list[int]) -> set[int]:
    if len(labels) <= OVERVIEW_MAX_CLASSES:
        return set(labels)
    step = (len(labels) - 1) / (OVERVIEW_MAX_CLASSES - 1)
    return {labels[round(i * step)] for i in range(OVERVIEW_MAX_CLASSES)}


def _class_sheet(label: int, name: str, tiles: list[Image.Image], per_class: int, tile: int) -> Image.Image:
    sheet = Image.new("RGB", sheet_size(len(tiles), per_class, tile), BACKGROUND)
    cols = max(1, math.ceil(math.sqrt(per_class)))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((PAD, HEADER // 2), _fit(draw, _label(label, name, font), sheet.width - 2 * PAD, font), fill=TEXT,
              font=font, anchor="lm")
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(t, (PAD + c * (tile + PAD), HEADER + PAD + r * (tile + PAD)))
    return sheet


def _overview(rows: list[tuple[int, str, list[Image.Image]]], thumb: int) -> Image.Image:
    sheet = Image.new("RGB", overview_size(len(rows), thumb), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    cell_w, cell_h, per_row = _cell_grid(thumb)
    side = math.ceil(math.sqrt(OVERVIEW_PER_CLASS))
    for n, (label, name, thumbs) in enumerate(rows):
        x = CELL_GAP + (n % per_row) * (cell_w + CELL_GAP)
        y = CELL_GAP + (n // per_row) * (cell_h + CELL_GAP)
        draw.text((x, y + HEADER // 2 - 1), _fit(draw, _label(label, name, font), cell_w, font), fill=TEXT, font=font,
                  anchor="lm")
        for k, t in enumerate(thumbs):
            r, c = divmod(k, side)
            sheet.paste(t, (x + c * (thumb + PAD), y + HEADER + r * (thumb + PAD)))
    return sheet


def expected_previews(layout: CorpusLayout, manifest: dict) -> list[str]:
    """Names under preview/ that a complete corpus has: a sheet per class, then the overview."""
    labels = sorted({int(e["label"]) for e in manifest["shards"]})
    return [class_sheet_name(label) for label in labels] + [OVERVIEW_NAME]


def write_previews(root: CorpusLayout | str | Path, *, per_class: int = 16, overlay: str = "faint") -> list[str]:
    """Write one contact sheet per class with complete shards, then ``overview.png``; return their names.

    ``overlay``: ``"faint"`` dims SMI's stopped patches a little, ``"off"`` shows the images as stored.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay must be one of {', '.join(OVERLAYS)}, got {overlay!r}")
    layout = as_layout(root)
    manifest = read_manifest(layout)
    done = set(complete_shard_ids(layout, manifest))
    by_class: dict[int, list[dict]] = defaultdict(list)
    for entry in manifest["shards"]:
        if int(entry["shard_id"]) in done:
            by_class[int(entry["label"])].append(entry)
    labels = sorted(by_class)
    shown = _overview_labels(labels)
    written: list[str] = []
    overview_rows: list[tuple[int, str, list[Image.Image]]] = []
    for label in labels:
        entries = sorted(by_class[label], key=lambda e: (int(e.get("first_index", 0)), int(e["shard_id"])))
        name = str(entries[0].get("class_name", ""))
        tiles: list[Image.Image] = []
        thumbs: list[Image.Image] = []
        limit = max(per_class, OVERVIEW_PER_CLASS if label in shown else 0)
        for pixels, kept in _class_samples(layout, [int(e["shard_id"]) for e in entries], limit):
            side = max(pixels.shape[:2])
            if len(tiles) < per_class:
                tiles.append(render_tile(pixels, kept, tile_size(side), overlay))
            if label in shown and len(thumbs) < OVERVIEW_PER_CLASS:
                thumbs.append(render_tile(pixels, kept, thumb_size(side), overlay))
        if not tiles:
            continue
        sheet = layout.preview(class_sheet_name(label))
        layout.storage.write_atomic(sheet, _png(_class_sheet(label, name, tiles, per_class, tiles[0].size[0])))
        written.append(sheet)
        if thumbs:
            overview_rows.append((label, name, thumbs))
        log.debug("preview: %s (%d images)", sheet, len(tiles))
    if overview_rows:
        overview = layout.preview(OVERVIEW_NAME)
        layout.storage.write_atomic(overview, _png(_overview(overview_rows, overview_rows[0][2][0].size[0])))
        written.append(overview)
    return written


def cmd_preview(args: argparse.Namespace) -> int:
    """``smi-synth preview OUT [--per-class N] [--overlay faint|off]``: write the sheets and print their paths."""
    if args.per_class < 1:
        raise UserError(f"--per-class must be >= 1, got {args.per_class}")
    layout = as_layout(args.out)
    names = write_previews(layout, per_class=args.per_class, overlay=args.overlay)
    for name in names:
        print(layout.storage.url(name))
    if not names:
        print(f"{args.out}: no complete shard yet; nothing to preview")
    return 0
