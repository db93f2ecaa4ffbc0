"""Contact sheets: files, grid sizes, readable tiles, the faint or absent overlay, class names, determinism,
bounded reading."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.hub.preview as preview
from pipeline.corpus.layout import OVERVIEW_MAX_CLASSES, CorpusLayout
from pipeline.hub.preview import (
    BACKGROUND,
    DIM,
    HEADER,
    MIN_TILE,
    OVERVIEW_WIDTH,
    cmd_preview,
    overview_size,
    render_tile,
    sheet_size,
    thumb_size,
    tile_size,
    write_previews,
)


def test_sheets_have_the_expected_grid(make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=2, per_shard=3, image_size=16)
    paths = [layout.root / n for n in write_previews(layout, per_class=4)]
    names = [p.name for p in paths]
    assert names == ["class-00000.png", "class-00001.png", "class-00002.png", "overview.png"]
    tile = tile_size(16)
    assert tile == 96  # small images are upscaled by a whole factor to at least MIN_TILE
    for p in paths[:-1]:
        with Image.open(p) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == sheet_size(4, 4, tile)  # 2 x 2 grid
    with Image.open(paths[-1]) as img:
        assert img.format == "PNG" and img.size == overview_size(3, thumb_size(16))
    # A class with fewer images than per_class gets fewer rows, same width.
    wide = write_previews(layout, per_class=9)
    with Image.open(layout.root / wide[0]) as img:
        assert img.size == sheet_size(6, 9, tile)


def test_previews_are_deterministic(make_corpus, tmp_path: Path) -> None:
    a = make_corpus(tmp_path / "a", num_classes=2, per_shard=3)
    b = make_corpus(tmp_path / "b", num_classes=2, per_shard=3)
    first = [(a.root / n).read_bytes() for n in write_previews(a, per_class=4)]
    assert [(a.root / n).read_bytes() for n in write_previews(a, per_class=4)] == first
    assert [(b.root / n).read_bytes() for n in write_previews(b, per_class=4)] == first
    assert not [p for p in (a.root / a.preview_dir).iterdir() if p.name.startswith(".")]  # no temporaries left


def test_tiles_are_readable_whole_multiples_of_the_image() -> None:
    assert [tile_size(s) for s in (8, 16, 32, 56, 64, 96, 224)] == [96, 96, 96, 112, 128, 96, 160]
    assert all(thumb_size(s) >= MIN_TILE for s in (8, 32, 56, 224))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    tile = np.asarray(render_tile(pixels, None, tile_size(32)))
    assert tile.shape == (96, 96, 3)
    assert (tile == np.repeat(np.repeat(pixels, 3, axis=0), 3, axis=1)).all()  # nearest neighbour: 3 x 3 blocks


def test_the_overlay_is_faint_or_off() -> None:
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 2] = 200, 100  # purple everywhere
    kept = np.array([[True, False], [False, False]])
    faint = np.asarray(render_tile(pixels, kept, 8))
    assert (faint[:4, :4] == pixels[:4, :4]).all()  # the kept patch as stored, no outline on it
    stopped = faint[4:, 4:].reshape(-1, 3)
    assert (stopped == np.round(np.array([200, 0, 100]) * DIM)).all()  # darker, same hue, not grey
    assert (np.asarray(render_tile(pixels, kept, 8, overlay="off")) == pixels).all()
    assert (np.asarray(render_tile(pixels, np.ones((2, 2), dtype=bool), 8)) == pixels).all()  # dense: unchanged
    with pytest.raises(ValueError, match="overlay must be one of faint, off"):
        render_tile(pixels, kept, 8, overlay="bright")


def test_overview_fits_a_readme_and_names_its_classes(make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(tmp_path / "c", num_classes=10, per_shard=4, image_size=32)
    write_previews(layout, per_class=4)
    with Image.open(layout.root / "preview" / "overview.png") as img:
        overview = np.asarray(img)
    thumb = thumb_size(32)
    assert overview.shape[1] <= OVERVIEW_WIDTH and overview.shape[0] < overview.shape[1]  # wider than tall
    assert (overview.shape[1], overview.shape[0]) == overview_size(10, thumb)
    assert overview_size(OVERVIEW_MAX_CLASSES, thumb)[0] <= OVERVIEW_WIDTH
    # each class cell starts with its name: text pixels in the title strip above the first thumbnail
    title = overview[8 : 8 + HEADER, 8 : 8 + 2 * thumb]
    assert (np.abs(title.astype(int) - BACKGROUND).sum(axis=2) > 100).sum() > 20
    with Image.open(layout.root / "preview" / "class-00003.png") as img:
        strip = np.asarray(img)[:HEADER]
    assert (np.abs(strip.astype(int) - BACKGROUND).sum(axis=2) > 100).sum() > 20


def test_reads_only_what_the_sheets_need(make_corpus, tmp_path: Path, monkeypatch) -> None:
    layout: CorpusLayout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=3, per_shard=6)
    opened: list[str] = []
    real = preview.iter_images

    def spy(layout: CorpusLayout, shard_id: int):
        opened.append(shard_id)
        return real(layout, shard_id)

    monkeypatch.setattr(preview, "iter_images", spy)
    write_previews(layout, per_class=4)
    assert opened == [0, 3, 6]  # the first shard of each class only


def test_overview_subsamples_many_classes() -> None:
    shown = preview._overview_labels(list(range(1000)))
    assert len(shown) == OVERVIEW_MAX_CLASSES and {0, 999} <= shown
    assert preview._overview_labels([3, 5]) == {3, 5}


def test_cmd_preview_prints_paths(corpus: CorpusLayout, capsys) -> None:
    assert cmd_preview(argparse.Namespace(out=str(corpus.root), per_class=2, overlay="off")) == 0
    out = capsys.readouterr().out.split()
    assert out[-1].endswith("overview.png") and all(Path(p).is_file() for p in out)
