"""Terms of the inversion objective. Each returns a per-sample ``(B,)`` tensor unless noted.

Image priors act on the optimised (normalised) image, as in DeepInversion and SMI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample's logits to its target class."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def total_variation(images: torch.Tensor, p: int) -> torch.Tensor:
    """Mean absolute (``p=1``) or squared (``p=2``) difference of neighbouring pixels, both directions."""
    if p not in (1, 2):
        raise ValueError(f"p: total variation order must be 1 or 2, got {p}")
    return _TotalVariation.apply(images, p)


class _TotalVariation(torch.autograd.Function):
    """The total variation with its gradient written out: autograd through the four slices would fill a
    zero image per slice; here one gradient image takes the four shifted differences."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, p: int) -> torch.Tensor:
        dh = images[:, :, 1:, :] - images[:, :, :-1, :]
        dw = images[:, :, :, 1:] - images[:, :, :, :-1]
        ctx.save_for_backward(dh, dw)
        ctx.p, ctx.shape = p, images.shape
        if p == 1:
            return dh.abs().flatten(1).mean(1) + dw.abs().flatten(1).mean(1)
        return dh.pow(2).flatten(1).mean(1) + dw.pow(2).flatten(1).mean(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        dh, dw = ctx.saved_tensors
        scale = grad.view(-1, 1, 1, 1)
        # d/dd of mean(|d|) is sign(d) / n, of mean(d^2) is 2 d / n (n differences per image)
        if ctx.p == 1:
            gh, gw = dh.sign() * (scale / dh[0].numel()), dw.sign() * (scale / dw[0].numel())
        else:
            gh, gw = dh * (scale * (2.0 / dh[0].numel())), dw * (scale * (2.0 / dw[0].numel()))
        out = dh.new_zeros(ctx.shape)
        out[:, :, 1:, :] += gh
        out[:, :, :-1, :] -= gh
        out[:, :, :, 1:] += gw
        out[:, :, :, :-1] -= gw
        return out, None


def pixel_l2(images: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each image (the l2 prior)."""
    return images.flatten(1).norm(dim=1)


def patch_similarity_entropy(
    tokens: torch.Tensor, num_prefix_tokens: int, bandwidth: float = 0.05, max_pairs: int = 1024
) -> torch.Tensor:
    """Differential entropy of the cosine similarities between patch tokens (PSAQ-ViT's prior).

    Estimated with a Gaussian kernel density over the pairwise similarities of each sample; real
    images give diverse similarities, so inversion maximises this (the loss term is its negative).
    Pairs are subsampled with a fixed stride to at most ``max_pairs`` so the cost stays bounded.
    """
    patches = F.normalize(tokens[:, num_prefix_tokens:].float(), dim=-1)
    sim = patches @ patches.transpose(1, 2)
    n = sim.shape[1]
    iu = torch.triu_indices(n, n, offset=1, device=sim.device)
    stride = max(1, iu.shape[1] // max_pairs)
    values = sim[:, iu[0, ::stride], iu[1, ::stride]]  # (B, P)
    diff = (values.unsqueeze(2) - values.unsqueeze(1)) / bandwidth
    log_density = torch.logsumexp(-0.5 * diff.pow(2), dim=2) - torch.log(
        torch.tensor(values.shape[1] * bandwidth * (2 * torch.pi) ** 0.5, device=sim.device)
    )
    return -log_density.mean(dim=1)


class BNStatisticsPrior:
    """DeepInversion's prior: distance of a CNN's BatchNorm input statistics to its running statistics.

    Registers forward hooks on the CNN's ``BatchNorm2d`` layers only inside ``capture()``; the CNN is
    not modified. The term is a batch statistic, so it is a scalar, not per sample.
    """

    def __init__(self, cnn: nn.Module) -> None:
        self.cnn = cnn
        self.layers = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError(f"bn_prior_model: {type(cnn).__name__} has no BatchNorm2d layer")
        self._terms: list[torch.Tensor] = []

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0].float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        self._terms.append(
            torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var)
        )

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook) for m in self.layers]
        self._terms = []
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Run the CNN on ``images`` (already in its normalisation) and return the summed BN distance."""
        with self.capture():
            self.cnn(images)
        return torch.stack(self._terms).sum()
