import pytest
import torch

from smi_core.losses import (
    cross_entropy,
    patch_similarity_entropy,
    pixel_l2,
    total_variation,
)


def test_total_variation_known_values():
    img = torch.zeros(1, 1, 2, 2)
    img[0, 0, 0, 1] = 1.0
    # vertical diffs: [0-0, 0-1] -> mean |.| = 0.5 ; horizontal diffs: [1-0, 0-0] -> 0.5
    assert total_variation(img, 1).item() == pytest.approx(1.0)
    assert total_variation(img, 2).item() == pytest.approx(1.0)
    assert total_variation(torch.ones(2, 3, 4, 4), 2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="p:"):
        total_variation(img, 3)


def test_pixel_l2_and_cross_entropy_are_per_sample():
    assert pixel_l2(torch.ones(2, 1, 2, 2)).tolist() == [2.0, 2.0]
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    ce = cross_entropy(logits, torch.tensor([0, 0]))
    assert ce.shape == (2,) and ce[0] < 1e-3 < ce[1]


def test_patch_entropy_is_higher_for_diverse_tokens_and_differentiable():
    g = torch.Generator().manual_seed(0)
    diverse = torch.randn(1, 1 + 40, 16, generator=g, requires_grad=True)
    uniform = torch.ones(1, 1 + 40, 16) + 1e-3 * torch.randn(1, 41, 16, generator=g)
    h_div, h_uni = patch_similarity_entropy(diverse, 1), patch_similarity_entropy(uniform, 1)
    assert h_div.item() > h_uni.item()
    h_div.sum().backward()
    assert torch.isfinite(diverse.grad).all()
