"""The suite teachers' data: glyphs (Pillow, DejaVu fonts) and scikit-learn's digits."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pipeline.teachers import digits_data, glyphs_data


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def test_glyphs_are_deterministic_and_splits_differ() -> None:
    a, la = glyphs_data.make_glyph_images(20, 3)
    b, lb = glyphs_data.make_glyph_images(20, 3)
    c, _ = glyphs_data.make_glyph_images(20, 4)
    h, _ = glyphs_data.make_glyph_images(20, 3, split="heldout")
    assert _digest(a) == _digest(b) and torch.equal(la, lb)
    assert _digest(a) != _digest(c) and _digest(a) != _digest(h)
    assert a.shape == (20, 3, 56, 56) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert a.std() > 0.1  # not blank
    images = {_digest(x) for x in a}
    assert len(images) == 20


@pytest.mark.parametrize("n", [30, 25, 7])
def test_glyph_labels_are_class_balanced(n: int) -> None:
    _, labels = glyphs_data.make_glyph_images(n, 0)
    counts = torch.bincount(labels, minlength=glyphs_data.NUM_CLASSES)
    assert int(counts.sum()) == n and int(counts.max() - counts.min()) <= 1
    assert labels.dtype == torch.int64


def test_glyphs_of_other_characters_use_the_same_renderer() -> None:
    default, labels = glyphs_data.make_glyph_images(12, 5)
    explicit, same = glyphs_data.make_glyph_images(12, 5, class_names=glyphs_data.CLASS_NAMES)
    assert _digest(default) == _digest(explicit) and torch.equal(labels, same)
    three = ("Ж", "ω", "ჯ")
    images, labels = glyphs_data.make_glyph_images(12, 5, class_names=three)
    assert torch.bincount(labels).tolist() == [4, 4, 4] and images.shape == default.shape
    assert len({_digest(x) for x in images}) == 12  # twelve different drawings
    with pytest.raises(ValueError, match="classes"):
        glyphs_data.make_glyph_images(2, 0, class_names=())


def test_glyph_split_and_seed_are_checked() -> None:
    with pytest.raises(ValueError, match="split"):
        glyphs_data.make_glyph_images(2, 0, split="test")
    with pytest.raises(ValueError, match="seed"):
        glyphs_data.make_glyph_images(2, -1)


def test_glyph_fonts_are_dejavu() -> None:
    fonts = glyphs_data.glyph_fonts()
    assert len(fonts) >= 2 and all(p.name.startswith("DejaVu") and p.suffix == ".ttf" for p in fonts)
    assert [p.name for p in fonts] == sorted(p.name for p in fonts)


def test_glyph_augment_is_seeded_and_keeps_the_range() -> None:
    images, _ = glyphs_data.make_glyph_images(6, 0)
    a = glyphs_data.augment(images, torch.Generator().manual_seed(1))
    b = glyphs_data.augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == images.shape and not torch.equal(a, images)
    assert 0 <= a.min() and a.max() <= 1


def test_digit_splits_are_disjoint_balanced_and_fixed() -> None:
    train, heldout = digits_data.split_indices("train"), digits_data.split_indices("heldout")
    assert len(set(train.tolist()) & set(heldout.tolist())) == 0 and len(train) + len(heldout) == 1797
    assert torch.equal(heldout, digits_data.split_indices("heldout"))
    images, labels = digits_data.digit_images("heldout")
    assert images.shape == (500, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert torch.bincount(labels).tolist() == [digits_data.HELDOUT_PER_CLASS] * 10
    _, train_labels = digits_data.digit_images("train")
    assert int(torch.bincount(train_labels).min()) >= 120  # every class well represented in training


def test_digit_augment_is_seeded_and_moves_pixels() -> None:
    images, _ = digits_data.digit_images("train")
    a = digits_data.augment(images[:8], torch.Generator().manual_seed(0))
    b = digits_data.augment(images[:8], torch.Generator().manual_seed(0))
    c = digits_data.augment(images[:8], torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (8, 3, 32, 32)
    assert 0 <= a.min() and a.max() <= 1
