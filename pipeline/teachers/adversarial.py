"""One L2 adversarial step: robust training of the toy teacher and the adversarial views of distillation."""

from __future__ import annotations

import torch


def l2_step(images: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """``images`` (in [0, 1]) moved by ``eps`` along each image's L2-normalised ``grad``, clipped to
    [0, 1], without a graph (the one step of every L2 adversarial view here)."""
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return (images + eps * grad / norm).clamp(0, 1).detach()
