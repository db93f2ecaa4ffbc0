"""The many-class glyph sets: distinct characters, disjoint sets, and every face draws every glyph."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.teachers import glyph_sets, glyphs_data


def test_the_pool_holds_distinct_characters_and_no_excluded_look_alike() -> None:
    assert len(glyph_sets.POOL) == len(set(glyph_sets.POOL)) == 214
    assert not set(glyph_sets.POOL) & set(glyph_sets.EXCLUDED)
    assert not {"A", "O"} - set(glyph_sets.POOL) and not {"Α", "А", "0", "1", "l", "c", "О"} & set(glyph_sets.POOL)


def test_sets_are_disjoint_fixed_and_nested() -> None:
    a, b = glyph_sets.glyph_set("a", 100), glyph_sets.glyph_set("b", 100)
    assert len(set(a)) == len(set(b)) == 100 and not set(a) & set(b)
    assert glyph_sets.glyph_set("a", 30) == a[:30] and set(a) | set(b) <= set(glyph_sets.POOL)
    assert len({ord(ch) >> 8 for ch in a}) >= 5  # dealt from a shuffled pool: several Unicode blocks per set
    with pytest.raises(ValueError, match="glyph set"):
        glyph_sets.glyph_set("c", 10)
    with pytest.raises(ValueError, match="classes"):
        glyph_sets.glyph_set("a", 101)


def test_every_face_draws_every_glyph_not_its_missing_glyph_box() -> None:
    from PIL import Image, ImageDraw, ImageFont

    def mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
        canvas = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(canvas).text((24, 24), text, fill=255, font=font, anchor="mm")
        return np.asarray(canvas)

    for path in glyphs_data.glyph_fonts():
        font = ImageFont.truetype(str(path), 32)
        missing = mask(font, "\ue000")  # a private-use code point: the face's missing-glyph box
        drawn = [ch for ch in glyph_sets.POOL if mask(font, ch).any() and not np.array_equal(mask(font, ch), missing)]
        assert len(drawn) == len(glyph_sets.POOL), (path.name, sorted(set(glyph_sets.POOL) - set(drawn)))
