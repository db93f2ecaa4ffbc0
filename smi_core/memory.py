"""Estimated peak accelerator memory of one inversion call (arithmetic only, like :mod:`smi_core.flops`).

The dense phase is the peak (later phases keep fewer tokens). With B images of H x W, T = patches +
prefix tokens, D embedding width, L blocks, MLP ratio m, W parameters and a = 2 bytes (bf16 autocast)
or 4 (fp32)::

    weights                 4W                  fp32, frozen: no gradients, no optimiser state
    autocast weight copies  2W if bf16          autocast caches the bf16 casts for one iteration
    pixel state             8 * B*3*H*W*4       pixels, grad, Adam m and v, best, frozen, view, a temporary
    saved activations       B*T*L*D * (2*4 + (4 + m)*a)
                                                per block and token: the two LayerNorm inputs (fp32 under
                                                autocast), q, k, v, the attention output and the GELU
                                                input; a linear layer with a frozen weight saves no input
    backward working set    B*T*(m + 4)*D*4     one block's gradient buffers

``tests/run/test_plan_memory.py`` checks the weights and saved activations against a real teacher's
autograd graph on the CPU; ``python -m pipeline.bench.gpu`` prints the estimate beside the measured peak.
"""

from __future__ import annotations

from typing import TypedDict

PIXEL_BUFFERS = 8
SAVED_FP32_PER_TOKEN = 2  # x D x 4 bytes per block and token: the LayerNorm inputs
SAVED_ACT_PER_TOKEN = 4  # x D x a bytes per block and token: q, k, v, attention output (plus m x D, the GELU input)
WORKING_PER_TOKEN = 4  # x D x 4 bytes per token, plus m x D: one block's backward gradient buffers
FORMULA = ("4W (+2W bf16) + B*(8*3*H*W*4 + T*L*D*(2*4 + (4+m)*a) + T*(m+4)*D*4); W params, T tokens, "
           "a = 2 (bf16) or 4 (fp32) bytes")


class MemoryParts(TypedDict):
    """Estimated bytes of one inversion call, by part, and their total."""

    images_per_call: int
    weights: int
    autocast_weight_copies: int
    pixel_state: int
    saved_activations: int
    backward_working_set: int
    total: int
    formula: str


def vit_param_count(*, img_size: tuple[int, int], patch_size: tuple[int, int], num_prefix_tokens: int,
                    embed_dim: int, depth: int, mlp_ratio: float, num_classes: int) -> int:
    """Parameters of a plain timm ViT: ``3*P*D + D`` patch embedding, ``(N + prefix)*D`` position
    embedding, ``prefix*D`` prefix tokens, per block ``4D^2 + 2mD^2`` weights plus ``(9 + m)D`` biases
    and LayerNorm, ``2D`` final norm, ``D*C + C`` head (LayerScale and registers without position
    embeddings are not counted)."""
    d, hidden = embed_dim, int(mlp_ratio * embed_dim)
    patches = (img_size[0] // patch_size[0]) * (img_size[1] // patch_size[1])
    block = 4 * d * d + 2 * hidden * d + 9 * d + hidden
    return (3 * patch_size[0] * patch_size[1] * d + d) + (patches + num_prefix_tokens) * d \
        + num_prefix_tokens * d + depth * block + 2 * d + d * num_classes + num_classes


def inversion_memory(*, images: int, img_size: tuple[int, int], patch_size: tuple[int, int],
                     num_prefix_tokens: int, embed_dim: int, depth: int, mlp_ratio: float, params: int,
                     dtype: str) -> MemoryParts:
    """The module docstring's estimate for ``images`` inverted together (``dtype``: float32 or bfloat16)."""
    if images < 1:
        raise ValueError(f"images: must be >= 1, got {images}")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype: expected float32 or bfloat16, got {dtype!r}")
    a = 2 if dtype == "bfloat16" else 4
    (h, w), d, m = img_size, embed_dim, mlp_ratio
    tokens = (h // patch_size[0]) * (w // patch_size[1]) + num_prefix_tokens
    parts = {
        "weights": 4 * params,
        "autocast_weight_copies": 2 * params if a == 2 else 0,
        "pixel_state": images * PIXEL_BUFFERS * 3 * h * w * 4,
        "saved_activations": int(images * tokens * depth * d * (SAVED_FP32_PER_TOKEN * 4 + (SAVED_ACT_PER_TOKEN + m) * a)),
        "backward_working_set": int(images * tokens * (m + WORKING_PER_TOKEN) * d * 4),
    }
    return MemoryParts(images_per_call=images, **parts, total=sum(parts.values()), formula=FORMULA)  # type: ignore[typeddict-item]
