"""Tiny random-weight timm ViTs of every family the engine supports (a few hundred thousand params)."""

from __future__ import annotations

import timm
import torch

SMALL = dict(embed_dim=48, depth=2, num_heads=3, num_classes=7)

# name -> (timm architecture, overrides)
FAMILIES: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8)),
    "deit": ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8)),
    "registers": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, reg_tokens=4)),
    "deit3_no_embed_class": ("deit3_small_patch16_224", dict(img_size=32, patch_size=8)),  # LayerScale too
    "layerscale_qknorm": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, init_values=0.1, qk_norm=True)),
    "non_square": ("vit_tiny_patch16_224", dict(img_size=(24, 40), patch_size=(8, 4))),
    "dynamic_size": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, dynamic_img_size=True)),
}


def tiny_vit(family: str = "vit", seed: int = 0, **overrides) -> torch.nn.Module:
    """A frozen tiny timm ViT with random weights (deterministic from ``seed``)."""
    arch, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**SMALL, **kwargs, **overrides})
    # random (not zero) position/prefix embeddings and LayerScale so every path is exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("pos_embed", "cls_token", "reg_token", "dist_token", "gamma")):
                p.normal_(0, 0.5)
    return model.eval().requires_grad_(False)
