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


@pytest.mark.parametrize("p", [1, 2])
def test_total_variation_gradient_is_that_of_the_slices(p: int) -> None:
    """The written-out backward equals autograd through the four slices (weighted per sample)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 6, 5, generator=g, requires_grad=True)
    weights = torch.rand(3, generator=g)

    def by_slices(x: torch.Tensor) -> torch.Tensor:
        dh, dw = x[:, :, 1:, :] - x[:, :, :-1, :], x[:, :, :, 1:] - x[:, :, :, :-1]
        return (dh.abs() if p == 1 else dh.pow(2)).flatten(1).mean(1) + (
            dw.abs() if p == 1 else dw.pow(2)).flatten(1).mean(1)

    ours, ref = total_variation(images, p), by_slices(images)
    torch.testing.assert_close(ours, ref)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), [images])
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), [images])
    torch.testing.assert_close(grad_ours, grad_ref)
    assert torch.autograd.gradcheck(lambda x: total_variation(x, p), (images.detach().double().requires_grad_(),))


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
