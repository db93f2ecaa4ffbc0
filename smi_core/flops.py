"""Counted FLOPs of one inversion iteration and of a whole token schedule (``torch.utils.flop_counter``).

An iteration is a forward of the kept tokens plus the backward to the pixels only (the teacher's
weights need no gradient). Element-wise work (augmentation, optimiser, clipping) and the saliency
row (at stop steps; with accumulated saliency at every step before the last stop) are not counted:
the count is the matrix work, the physical limit of a speedup.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from smi_core.config import SelectionConfig
from smi_core.selection import tokens_per_iteration
from smi_core.vit import ViTGeometry, forward_subset


def iteration_flops(model: nn.Module, geometry: ViTGeometry, num_kept: int, *, device: torch.device) -> int:
    """FLOPs of one iteration for ONE image keeping ``num_kept`` patches (forward + pixel backward)."""
    if not 1 <= num_kept <= geometry.num_patches:
        raise ValueError(f"num_kept: must lie in [1, {geometry.num_patches}], got {num_kept}")
    pixels = torch.zeros(1, 3, *geometry.img_size, device=device, requires_grad=True)
    index = None if num_kept == geometry.num_patches else torch.arange(num_kept, device=device)[None]
    with FlopCounterMode(display=False) as counter:
        logits, _ = forward_subset(model, pixels, index)
        logits.float().sum().backward(inputs=[pixels])
    return int(counter.get_total_flops())


def schedule_flops(
    model: nn.Module,
    geometry: ViTGeometry,
    selection: SelectionConfig,
    iterations: int,
    batch: int,
    *,
    device: torch.device,
) -> int:
    """Total FLOPs of inverting ``batch`` images for ``iterations`` under ``selection``'s token schedule."""
    per_count = Counter(tokens_per_iteration(selection, geometry.num_patches, iterations))
    total = sum(iteration_flops(model, geometry, k, device=device) * n for k, n in per_count.items())
    return total * batch
