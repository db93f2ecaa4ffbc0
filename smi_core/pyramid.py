"""The image pyramid parametrisation: the image is a pixel level plus coarse levels upsampled bilinearly.

Bilinear upsampling (``align_corners=False``, what ``F.interpolate`` does) is separable and linear, so a
level ``L`` ``(B, C, h, w)`` upsampled to ``(H, W)`` is ``U_h @ L @ U_w^T`` with two small fixed matrices,
and the gradient it gets from the image's gradient ``G`` is the adjoint ``U_h^T @ G @ U_w``. The engine
composes the image once per step without an autograd graph and hands each level its gradient through
the adjoint: two small matmuls per level instead of an interpolation kernel forward, its backward and a
second forward to clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def upsample_matrix(size_in: int, size_out: int, *, device: torch.device | None = None) -> torch.Tensor:
    """``(size_out, size_in)`` matrix of 1-D bilinear upsampling as ``F.interpolate(..., align_corners=False)``
    computes it for these sizes."""
    basis = torch.eye(size_in, device=device).view(1, 1, size_in, size_in)
    return F.interpolate(basis, size=(size_out, size_in), mode="bilinear", align_corners=False)[0, 0]


def level_size(img_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """Side lengths of the level at ``1/scale`` of the image (rounded up)."""
    return (-(-img_size[0] // scale), -(-img_size[1] // scale))


class ImagePyramid:
    """The composition ``image = pixels + sum_s up_s(level_s)`` for coarse scales ``scales``, and its adjoint."""

    def __init__(self, img_size: tuple[int, int], scales: Sequence[int], device: torch.device) -> None:
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.scales = tuple(int(s) for s in scales)
        self.level_sizes = [level_size(self.img_size, s) for s in self.scales]
        self.device = device
        self._ops = [
            (upsample_matrix(h, self.img_size[0], device=device), upsample_matrix(w, self.img_size[1], device=device))
            for h, w in self.level_sizes
        ]

    def zeros(self, batch: int, channels: int) -> list[torch.Tensor]:
        """Fresh all-zero coarse levels on the pyramid's device (leaf tensors that require grad)."""
        return [torch.zeros(batch, channels, h, w, device=self.device, requires_grad=True)
                for h, w in self.level_sizes]

    @torch.no_grad()
    def compose(self, pixels: torch.Tensor, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """The image ``(B, C, H, W)`` the levels make (no autograd graph)."""
        image = pixels.detach().clone()
        for (up_h, up_w), level in zip(self._ops, levels):
            image.add_(up_h @ level.detach() @ up_w.T)
        return image

    @torch.no_grad()
    def adjoint(self, grad: torch.Tensor) -> list[torch.Tensor]:
        """Each level's gradient given the image's gradient ``grad`` ``(B, C, H, W)``."""
        return [up_h.T @ grad @ up_w for up_h, up_w in self._ops]
