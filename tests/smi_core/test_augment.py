import pytest
import torch

from smi_core.augment import (
    RollFlip,
    apply_roll_flip,
    max_roll_patches,
    remap_patch_index,
    sample_roll_flip,
)
from smi_core.config import AugmentConfig

GRID, PATCH = (4, 6), (3, 2)


def _patches(images):
    b, c, h, w = images.shape
    x = images.reshape(b, c, GRID[0], PATCH[0], GRID[1], PATCH[1]).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, GRID[0] * GRID[1], c, PATCH[0], PATCH[1])


@pytest.mark.parametrize("aug", [RollFlip(1, -2, False), RollFlip(-3, 5, True), RollFlip(0, 0, True), RollFlip(2, 1, True)])
def test_remap_selects_the_same_pixels_as_the_augmented_image(aug):
    images = torch.randn(2, 3, GRID[0] * PATCH[0], GRID[1] * PATCH[1])
    view = apply_roll_flip(images, aug, PATCH)
    index = torch.tensor([[0, 5, 7, 23], [1, 2, 12, 18]])
    moved = remap_patch_index(index, aug, GRID)
    src = torch.gather(_patches(images), 1, index.view(2, -1, 1, 1, 1).expand(-1, -1, 3, *PATCH))
    dst = torch.gather(_patches(view), 1, moved.view(2, -1, 1, 1, 1).expand(-1, -1, 3, *PATCH))
    if aug.flip:  # a flipped patch holds the same pixels, mirrored within the patch
        src = torch.flip(src, dims=(-1,))
    torch.testing.assert_close(dst, src, atol=0, rtol=0)


def test_remap_matches_augmenting_a_kept_pixel_mask():
    gen = torch.Generator().manual_seed(0)
    config = AugmentConfig(max_roll_fraction=0.5)
    for _ in range(20):
        aug = sample_roll_flip(config, GRID, gen)
        index = torch.randperm(24, generator=gen)[:9].view(1, -1)
        mask = torch.zeros(1, 24).scatter_(1, index, 1.0).view(1, 1, *GRID)
        pixel_mask = mask.repeat_interleave(PATCH[0], 2).repeat_interleave(PATCH[1], 3)
        moved = torch.zeros(1, 24).scatter_(1, remap_patch_index(index, aug, GRID), 1.0).view(1, 1, *GRID)
        expected = apply_roll_flip(pixel_mask, aug, PATCH)
        assert torch.equal(moved.repeat_interleave(PATCH[0], 2).repeat_interleave(PATCH[1], 3), expected)


def test_roll_range_and_determinism():
    config = AugmentConfig(max_roll_fraction=0.125)
    assert max_roll_patches(config, (14, 14)) == (2, 2)
    assert max_roll_patches(config, (8, 8)) == (1, 1)
    assert max_roll_patches(AugmentConfig(enabled=False), (14, 14)) == (0, 0)
    draws = [sample_roll_flip(config, (14, 14), torch.Generator().manual_seed(5)) for _ in range(2)]
    assert draws[0] == draws[1]
    gen = torch.Generator().manual_seed(1)
    seen = {sample_roll_flip(config, (14, 14), gen) for _ in range(300)}
    assert {a.rows for a in seen} == {-2, -1, 0, 1, 2} and {a.flip for a in seen} == {True, False}


def test_bad_roll_fraction():
    with pytest.raises(ValueError, match="augment.max_roll_fraction"):
        AugmentConfig(max_roll_fraction=1.5)
