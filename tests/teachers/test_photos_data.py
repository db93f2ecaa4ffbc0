"""The photo teachers' data: crops of ten photographs from scikit-learn's and scikit-image's wheels."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest
import torch

from pipeline.teachers import photos_data

needs_photos = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                  reason="scikit-image (eight of the ten photos) is not installed")


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def test_held_out_and_training_blocks_partition_every_photo() -> None:
    for label in range(photos_data.NUM_CLASSES):
        held, train = photos_data.split_blocks(label, "heldout"), photos_data.split_blocks(label, "train")
        assert len(held) == 4 and sorted(held + train) == list(range(16))
        assert sorted(b // 4 for b in held) == [0, 1, 2, 3] and sorted(b % 4 for b in held) == [0, 1, 2, 3]
    assert photos_data.split_blocks(1, "heldout") == (1, 6, 11, 12)
    assert [photos_data.block(b, 9, 17) for b in (0, 5, 15)] == [(0, 0, 2, 4), (2, 4, 2, 4), (6, 12, 2, 4)]
    with pytest.raises(ValueError, match="split"):
        photos_data.split_blocks(0, "test")


@pytest.mark.parametrize("label", [0, 5, 7])
def test_crops_stay_inside_their_split_blocks(label: int) -> None:
    g = torch.Generator().manual_seed(label)
    height, width = 128, 190
    for split in photos_data.SPLITS:
        quads = [photos_data.block(b, height, width) for b in photos_data.split_blocks(label, split)]
        for _ in range(200):
            y, x, h, w = photos_data.crop_box(label, split, height, width, g)
            assert h >= 1 and w >= 1
            assert any(t <= y and y + h <= t + qh and lf <= x and x + w <= lf + qw for t, lf, qh, qw in quads)


@needs_photos
def test_photo_crops_are_deterministic_balanced_and_split() -> None:
    a, la = photos_data.make_photo_images(30, 3, "train", 32)
    b, lb = photos_data.make_photo_images(30, 3, "train", 32)
    c, _ = photos_data.make_photo_images(30, 4, "train", 32)
    h, _ = photos_data.make_photo_images(30, 3, "heldout", 32)
    assert _digest(a) == _digest(b) and torch.equal(la, lb)
    assert _digest(a) != _digest(c) and _digest(a) != _digest(h)
    assert a.shape == (30, 3, 32, 32) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.bincount(la, minlength=10).tolist() == [3] * 10 and la.dtype == torch.int64
    assert len({_digest(x) for x in a}) == 30 and a.std() > 0.1
    big, _ = photos_data.make_photo_images(4, 0, "heldout", 56)
    assert big.shape == (4, 3, 56, 56)
    with pytest.raises(ValueError, match="size"):
        photos_data.make_photo_images(2, 0, "train", 4)


@needs_photos
def test_every_photo_is_a_colour_photograph_with_a_fixed_digest() -> None:
    pics = photos_data.photos(16)
    assert len(pics) == photos_data.NUM_CLASSES
    for pic in pics:
        assert pic.shape[0] == 3 and min(pic.shape[1:]) == 96 and pic.std() > 0.05
        assert float((pic - pic.mean(0)).abs().mean()) > 0.005  # colour (the dark Hubble field is the least)
    digests = photos_data.photo_digests()
    assert list(digests) == list(photos_data.CLASS_NAMES) and len(set(digests.values())) == 10


@needs_photos
def test_training_batches_are_fresh_crops_of_the_given_photos() -> None:
    labels = torch.tensor([0, 0, 9])
    g = torch.Generator().manual_seed(0)
    first, second = photos_data.random_crops(labels, 32, g), photos_data.random_crops(labels, 32, g)
    assert first.shape == (3, 3, 32, 32) and not torch.equal(first, second)
    again = photos_data.random_crops(labels, 32, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
