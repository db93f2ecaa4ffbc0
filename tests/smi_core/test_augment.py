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


# --- zoom / colour shift (Plug-In Inversion style) ---------------------------------------------------

from smi_core.augment import Warp, apply_warp, resample, sample_warp, token_overlap, token_source_patch  # noqa: E402


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(zoom=(0.0, 1.0)), "augment.zoom"),
        (dict(zoom=(0.8, 0.5)), "augment.zoom"),
        (dict(zoom=(0.5, 1.5)), "augment.zoom"),
        (dict(zoom=(0.5,)), "augment.zoom"),
        (dict(zoom="big"), "augment.zoom"),
        (dict(colour_shift=-0.1), "augment.colour_shift"),
        (dict(colour_shift=1.0), "augment.colour_shift"),
        (dict(colour_shift=True), "augment.colour_shift"),
    ],
)
def test_bad_zoom_and_colour_shift(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_defaults_draw_no_warp_and_zoom_is_normalised():
    gen = torch.Generator().manual_seed(0)
    assert sample_warp(AugmentConfig(), 4, gen, torch.device("cpu")) is None
    assert sample_warp(AugmentConfig(enabled=False, zoom=(0.5, 1), colour_shift=0.1), 4, gen, torch.device("cpu")) is None
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=torch.Generator().manual_seed(0)))
    assert AugmentConfig(zoom=[0.5, 1]).zoom == (0.5, 1.0)


def test_warp_draws_ranges_and_determinism():
    config = AugmentConfig(zoom=(0.4, 0.9), colour_shift=0.3)
    a = sample_warp(config, 200, torch.Generator().manual_seed(7), torch.device("cpu"))
    b = sample_warp(config, 200, torch.Generator().manual_seed(7), torch.device("cpu"))
    for name in ("theta", "gain", "offset"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    side = a.theta[:, 1, 1]
    assert side.min() >= 0.4 and side.max() <= 0.9 and side.max() - side.min() > 0.3
    assert set(a.theta[:, 0, 0].sign().tolist()) == {-1.0, 1.0} and torch.equal(a.theta[:, 0, 0].abs(), side)
    assert (a.theta[:, :, 2].abs() <= (1 - side).unsqueeze(1) + 1e-6).all()  # crops stay inside the image
    assert a.gain.shape == a.offset.shape == (200, 3, 1, 1)
    assert (a.gain - 1).abs().max() <= 0.3 and a.offset.abs().max() <= 0.3
    once = sample_warp(AugmentConfig(zoom=(0.5, 1), colour_shift=0.1, per_sample=False, flip=False), 5,
                       torch.Generator().manual_seed(0), torch.device("cpu"))
    assert once.theta.shape == (1, 2, 3) and once.gain.shape == (1, 3, 1, 1) and (once.theta[:, 0, 0] > 0).all()


def test_identity_warp_keeps_the_image_and_colour_shift_is_affine():
    images = torch.randn(2, 3, 12, 12)
    identity = Warp(theta=torch.eye(2, 3).unsqueeze(0))
    torch.testing.assert_close(resample(images, identity), images)
    gain, offset = torch.full((1, 3, 1, 1), 1.2), torch.full((1, 3, 1, 1), -0.1)
    torch.testing.assert_close(apply_warp(images, Warp(None, gain, offset)), images * 1.2 - 0.1)


def test_token_maps_under_identity_and_a_corner_crop():
    grid, patch = (4, 6), (3, 2)
    h, w = grid[0] * patch[0], grid[1] * patch[1]
    index = torch.arange(24).view(1, 24).view(1, *grid)
    source = index.repeat_interleave(patch[0], 1).repeat_interleave(patch[1], 2)  # (1, H, W) patch per pixel
    identity = Warp(theta=torch.eye(2, 3).unsqueeze(0))
    assert torch.equal(token_source_patch(source, identity, patch, 2), torch.arange(24).expand(2, -1))
    keep = torch.zeros(1, 24).scatter_(1, torch.tensor([[0, 5, 7, 23]]), 1.0).view(1, 1, *grid)
    keep = keep.repeat_interleave(patch[0], 2).repeat_interleave(patch[1], 3).bool()
    torch.testing.assert_close(token_overlap(keep, identity, patch), keep.float()[:, 0, ::3, ::2].reshape(1, 24))
    # the top-left quarter (half the side), zoomed to the full view: token (r, c) shows patch (r // 2, c // 2)
    quarter = Warp(theta=torch.tensor([[[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]]]))
    expected = torch.tensor([(r // 2) * grid[1] + c // 2 for r in range(grid[0]) for c in range(grid[1])])
    assert torch.equal(token_source_patch(source, quarter, patch, 1)[0], expected)
    overlap = token_overlap(keep, quarter, patch)
    assert overlap.shape == (1, 24) and 0 <= overlap.min() and overlap.max() <= 1
    assert overlap[0, 0] == 1.0 and overlap[0, 23] < 1.0  # patch 0 fills the view's corner; patch 23 is outside
