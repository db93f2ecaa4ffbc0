"""The pyramid parametrisation's composition and adjoint against ``F.interpolate`` and its autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smi_core.pyramid import ImagePyramid, level_size, upsample_matrix


@pytest.mark.parametrize(("size_in", "size_out"), [(16, 32), (7, 56), (3, 8), (5, 5)])
def test_upsample_matrix_is_bilinear_interpolation(size_in: int, size_out: int) -> None:
    x = torch.randn(2, 3, size_in, 4, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=(size_out, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample_matrix(size_in, size_out) @ x, expected)


def test_level_size_rounds_up() -> None:
    assert level_size((32, 30), 4) == (8, 8)
    assert level_size((56, 56), 8) == (7, 7)


def _interpolated(pixels: torch.Tensor, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    image = pixels
    for level in levels:
        image = image + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
    return image


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_compose_and_adjoint_match_interpolate_and_its_gradient(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    pyramid = ImagePyramid(size, (2, 4, 8), torch.device("cpu"))
    pixels = torch.randn(2, 3, *size, generator=g)
    levels = [torch.randn(2, 3, h, w, generator=g, requires_grad=True) for h, w in pyramid.level_sizes]
    image = _interpolated(pixels, levels, size)
    torch.testing.assert_close(pyramid.compose(pixels, levels), image.detach())

    grad = torch.randn(2, 3, *size, generator=g)
    expected = torch.autograd.grad(image, levels, grad_outputs=grad)
    for got, want in zip(pyramid.adjoint(grad), expected):
        torch.testing.assert_close(got, want)


def test_levels_start_at_zero_and_compose_keeps_no_graph() -> None:
    pyramid = ImagePyramid((16, 16), (2, 4), torch.device("cpu"))
    levels = pyramid.zeros(3, 3)
    assert [tuple(x.shape) for x in levels] == [(3, 3, 8, 8), (3, 3, 4, 4)]
    assert all(x.requires_grad and x.is_leaf and not x.any() for x in levels)
    pixels = torch.rand(3, 3, 16, 16, requires_grad=True)
    image = pyramid.compose(pixels, levels)
    assert not image.requires_grad
    torch.testing.assert_close(image, pixels.detach())
    image.add_(1)  # a fresh tensor: the pixels are not touched
    assert pixels.max() <= 1
