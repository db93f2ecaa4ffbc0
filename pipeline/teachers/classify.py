"""A classifier's input normalisation and top-1 accuracy: the one definition of each.

Teachers (training, held-out checks), students (distillation, quantization) and the evaluation of a
corpus all feed images in [0, 1] ``(B, 3, H, W)`` through :func:`normalize` and count top-1 with
:func:`accuracy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images in [0, 1] ``(B, 3, H, W)`` to a model's input normalisation (per-channel ``mean``/``std``)."""
    m = torch.tensor(tuple(mean), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` in consecutive slices of ``batch_size``."""
    for lo in range(0, len(labels), batch_size):
        yield images[lo : lo + batch_size], labels[lo : lo + batch_size]


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 of ``model`` on ``(images in [0, 1], labels)`` batches, images normalised with ``mean``/``std``
    on ``device``; the model's train/eval mode is restored afterwards. 0.0 for no images."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for images, labels in data:
            logits = model(normalize(images.to(device), mean, std))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    return correct / max(total, 1)
