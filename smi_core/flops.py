"""FLOPs of one inversion iteration and of a whole token schedule: the one FLOP model of the project.

An iteration is a forward of the kept tokens plus the backward to the pixels only (the teacher's
weights need no gradient). Element-wise work (augmentation, optimiser, clipping) and the saliency
row (at stop steps; with accumulated saliency at every step before the last stop) are not counted:
the count is the matrix work, the physical limit of a speedup.

:func:`iteration_flops` counts a model's iteration (``torch.utils.flop_counter``; the runs' measured
FLOPs); :func:`vit_iteration_flops` gives the same matrix work of a plain timm ViT by formula from its
dimensions alone (``smi-synth plan``). On the ``meta`` device the two agree exactly; on the CPU the
counter has no count for the fused attention kernel and reports the linear layers only. Both are
summed over a run's token schedule by :func:`total_flops`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

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


def vit_iteration_flops(
    kept: int,
    *,
    patch_size: tuple[int, int],
    num_prefix_tokens: int,
    embed_dim: int,
    depth: int,
    mlp_ratio: float,
    num_classes: int,
) -> int:
    """Matrix FLOPs of one iteration for ONE image keeping ``kept`` patches, by formula.

    The forward embeds the kept patches only and runs T = ``kept`` + prefix tokens through the blocks;
    the backward to the pixels repeats every linear layer once (input gradients only) and each of
    attention's two products twice (both operands depend on the pixels). With D = ``embed_dim``,
    L = ``depth``, H = ``mlp_ratio`` * D, P = 3 x patch pixels, C = ``num_classes``::

        2 x (2*kept*P*D + L*(2*T*4*D^2 + 2*2*T*D*H) + 2*D*C)    linear layers, forward and backward
      + 3 x L*(2*2*T^2*D)                                       QK^T and AV, forward and backward
    """
    d, tokens = embed_dim, kept + num_prefix_tokens
    linear = 2 * kept * 3 * patch_size[0] * patch_size[1] * d + 2 * d * num_classes
    linear += depth * (2 * tokens * 4 * d * d + 4 * tokens * d * int(mlp_ratio * d))
    attention = depth * 4 * tokens * tokens * d
    return 2 * linear + 3 * attention


def total_flops(
    per_iteration: Callable[[int], int], selection: SelectionConfig, num_patches: int, iterations: int, batch: int
) -> int:
    """FLOPs of inverting ``batch`` images for ``iterations`` under ``selection``'s token schedule, at
    ``per_iteration(kept)`` FLOPs per image and iteration (:func:`iteration_flops` or
    :func:`vit_iteration_flops`)."""
    per_count = Counter(tokens_per_iteration(selection, num_patches, iterations))
    return sum(per_iteration(k) * n for k, n in per_count.items()) * batch


def schedule_flops(
    model: nn.Module,
    geometry: ViTGeometry,
    selection: SelectionConfig,
    iterations: int,
    batch: int,
    *,
    device: torch.device,
) -> int:
    """Counted FLOPs of inverting ``batch`` images for ``iterations`` under ``selection``'s token schedule."""
    return total_flops(lambda k: iteration_flops(model, geometry, k, device=device), selection,
                       geometry.num_patches, iterations, batch)
