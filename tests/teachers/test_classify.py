"""The one normalisation and top-1 count shared by teachers, students and evaluation."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.teachers.classify import accuracy, batches, normalize


def test_normalize_maps_each_channel_by_its_own_mean_and_std() -> None:
    images = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(images, (0.0, 0.5, 0.5), (1.0, 0.25, 0.5))
    assert out.dtype == images.dtype and out.shape == images.shape
    assert torch.equal(out[:, :, 0, 0], torch.tensor([[0.0, 0.0, 1.0]] * 2))


class _FirstPixelArgmax(nn.Module):
    """Predicts the class named by an image's top-left pixel: logits one-hot at round(x[0, 0, 0] * 10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].mul(10).round().long(), 10).float()


def test_accuracy_counts_argmax_hits_over_all_batches_and_restores_the_mode() -> None:
    labels = torch.arange(10)
    images = torch.zeros(10, 3, 2, 2)
    images[:, 0, 0, 0] = labels / 10
    images[7:, 0, 0, 0] = 0.0  # three images now read as class 0; only image 0 of them is
    model = _FirstPixelArgmax().train()
    top1 = accuracy(model, batches(images, labels, 4), mean=(0.0,) * 3, std=(1.0,) * 3)
    assert top1 == 0.7 and model.training
    assert accuracy(model, [], mean=(0.0,) * 3, std=(1.0,) * 3) == 0.0


def test_batches_cover_every_image_once_in_order() -> None:
    images, labels = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    parts = list(batches(images, labels, 4))
    assert [len(lab) for _, lab in parts] == [4, 4, 2]
    assert torch.equal(torch.cat([lab for _, lab in parts]), labels)
