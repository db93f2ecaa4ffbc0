"""Contact sheets: files, grid sizes, stopped-patch rendering, determinism, bounded reading."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import pipeline.hub.preview as preview
from pipeline.corpus.layout import OVERVIEW_MAX_CLASSES, CorpusLayout
from pipeline.hub.preview import (
    OUTLINE,
    THUMB,
    cmd_preview,
    overview_size,
    render_tile,
    sheet_size,
    tile_size,
    write_previews,
)


def test_sheets_have_the_expected_grid(make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=2, per_shard=3, image_size=16)
    paths = [layout.root / n for n in write_previews(layout, per_class=4)]
    names = [p.name for p in paths]
    assert names == ["class-00000.png", "class-00001.png", "class-00002.png", "overview.png"]
    tile = tile_size(16)
    assert tile == 64  # small images are upscaled by a whole factor
    for p in paths[:-1]:
        with Image.open(p) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == sheet_size(4, 4, tile)  # 2 x 2 grid
    with Image.open(paths[-1]) as img:
        assert img.format == "PNG" and img.size == overview_size(3, min(tile, THUMB))
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


def test_stopped_patches_are_dimmed_grey_and_outlined() -> None:
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red everywhere
    kept = np.array([[True, False], [False, False]])
    tile = np.asarray(render_tile(pixels, kept, 8))
    assert tuple(tile[1, 1]) == (200, 0, 0)  # kept patch keeps its colour
    stopped = tile[5:8, 5:8].reshape(-1, 3)
    assert (stopped[:, 0] == stopped[:, 1]).all() and (stopped[:, 1] == stopped[:, 2]).all()  # grey
    assert stopped.max() < 200 * 0.299  # dimmed below the luminance
    assert tuple(tile[3, 1]) == OUTLINE and tuple(tile[1, 3]) == OUTLINE  # border of the kept patch
    dense = np.asarray(render_tile(pixels, np.ones((2, 2), dtype=bool), 8))
    assert (dense == pixels).all()


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
    assert cmd_preview(argparse.Namespace(out=str(corpus.root), per_class=2)) == 0
    out = capsys.readouterr().out.split()
    assert out[-1].endswith("overview.png") and all(Path(p).is_file() for p in out)
