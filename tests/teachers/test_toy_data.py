"""The procedurally generated toy dataset (pipeline.teachers.toy_data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.teachers.toy_data import (
    CLASS_NAMES,
    ToyShapes,
    make_toy_images,
    make_toy_images_and_masks,
    save_imagefolder,
    to_uint8,
)


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in images}


def test_ten_distinct_classes_in_imagefolder_order() -> None:
    assert len(CLASS_NAMES) == 10 and len(set(CLASS_NAMES)) == 10
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)  # torchvision ImageFolder indices == our labels


def test_shapes_dtypes_and_range() -> None:
    images, labels = make_toy_images(37, seed=3)
    assert images.shape == (37, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (37,) and labels.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert int(labels.min()) >= 0 and int(labels.max()) < 10
    big, _ = make_toy_images(4, seed=3, image_size=48)
    assert big.shape == (4, 3, 48, 48)


def test_deterministic_from_seed() -> None:
    a_images, a_labels = make_toy_images(64, seed=11)
    b_images, b_labels = make_toy_images(64, seed=11)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    c_images, _ = make_toy_images(64, seed=12)
    assert not torch.equal(a_images, c_images)


def test_splits_are_disjoint() -> None:
    train, _ = make_toy_images(300, seed=0, split="train")
    heldout, _ = make_toy_images(300, seed=0, split="heldout")
    assert not _hashes(train) & _hashes(heldout)
    # and no train seed reproduces a held-out seed's images
    train_other, _ = make_toy_images(300, seed=1, split="train")
    assert not _hashes(train_other) & _hashes(heldout)


def test_class_balance() -> None:
    _, labels = make_toy_images(100, seed=5)
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10
    _, labels = make_toy_images(27, seed=5)
    counts = torch.bincount(labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    assert labels[:10].tolist() != list(range(10))  # shuffled, not in class order


def test_masks_mark_a_foreground_object() -> None:
    images, labels, masks = make_toy_images_and_masks(50, seed=2)
    assert masks.shape == (50, 32, 32) and float(masks.min()) >= 0 and float(masks.max()) <= 1
    coverage = masks.flatten(1).mean(1)
    assert bool((coverage > 0.03).all()) and bool((coverage < 0.6).all())  # an object, and background
    plain, plain_labels = make_toy_images(50, seed=2)
    assert torch.equal(plain, images) and torch.equal(plain_labels, labels)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        make_toy_images(4, seed=0, split="test")
    with pytest.raises(ValueError, match="seed"):
        make_toy_images(4, seed=-1)


def test_dataset_wrapper() -> None:
    ds = ToyShapes(20, seed=1, split="heldout")
    image, label = ds[3]
    assert len(ds) == 20 and image.shape == (3, 32, 32) and isinstance(label, int)
    assert ds.classes == list(CLASS_NAMES)


def test_save_imagefolder(tmp_path: Path) -> None:
    root = save_imagefolder(tmp_path / "heldout", n_per_class=3, seed=4, split="heldout")
    assert sorted(p.name for p in root.iterdir()) == list(CLASS_NAMES)
    for name in CLASS_NAMES:
        assert len(list((root / name).glob("*.png"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    images, labels = make_toy_images(30, seed=4, split="heldout")
    expected = to_uint8(images[labels == 0][:1])[0]
    first = np.asarray(Image.open(root / CLASS_NAMES[0] / "00000.png"))
    assert first.shape == (32, 32, 3) and np.array_equal(first, expected)
    with pytest.raises(FileExistsError):
        save_imagefolder(root, n_per_class=1, seed=0)
