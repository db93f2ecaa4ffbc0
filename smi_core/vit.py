"""Run a timm Vision Transformer on a subset of its patch tokens, without monkeypatching timm.

The forward is split into named stages that reuse the model's own modules:
``embed_tokens`` (the kept patches through ``patch_embed``'s weights, then ``_pos_embed`` for prefix
tokens and position embeddings), ``forward_blocks`` (``norm_pre``, ``blocks``, ``norm``) and the
model's own ``forward_head``. With every patch kept the result is
timm's own forward. The last block's CLS-to-patch attention (the saliency SMI stops patches by) is
computed from that block's ``norm1`` input with its ``attn.qkv`` only when asked, so fused attention
stays on everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTGeometry:
    """What the engine needs to know of a ViT's token layout."""

    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    grid: tuple[int, int]
    num_prefix_tokens: int
    has_cls_token: bool

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def vit_geometry(model: nn.Module, img_size: tuple[int, int] | None = None) -> ViTGeometry:
    """Validate that ``model`` is a timm ViT and describe its tokens at ``img_size`` (default: the model's).

    Raises ``ValueError`` naming the problem for a non-ViT model or an image size the model cannot take.
    """
    for attr in ("patch_embed", "blocks", "_pos_embed", "forward_head", "num_prefix_tokens"):
        if not hasattr(model, attr):
            raise ValueError(
                f"model: {type(model).__name__} is not a timm Vision Transformer (it has no `{attr}`)"
            )
    patch_embed = model.patch_embed
    patch = tuple(int(p) for p in patch_embed.patch_size)
    native = tuple(int(s) for s in patch_embed.img_size) if patch_embed.img_size is not None else None
    size = tuple(int(s) for s in (img_size or native or ()))
    if len(size) != 2:
        raise ValueError("img_size: the model has no fixed image size; pass img_size=(H, W)")
    if size[0] % patch[0] or size[1] % patch[1]:
        raise ValueError(f"img_size: {size[0]}x{size[1]} is not divisible by the patch size {patch[0]}x{patch[1]}")
    if native is not None and size != native and not getattr(model, "dynamic_img_size", False):
        raise ValueError(
            f"img_size: the model was built for {native[0]}x{native[1]} without dynamic_img_size; "
            f"{size[0]}x{size[1]} is not supported (create it with img_size= or dynamic_img_size=True)"
        )
    if getattr(patch_embed, "dynamic_img_pad", False):
        raise ValueError("model: patch_embed.dynamic_img_pad is not supported (padded patches have no pixels)")
    grid = (size[0] // patch[0], size[1] // patch[1])
    return ViTGeometry(
        img_size=size,
        patch_size=patch,
        grid=grid,
        num_prefix_tokens=int(model.num_prefix_tokens),
        has_cls_token=getattr(model, "cls_token", None) is not None,
    )


def _linear_patch_embed(model: nn.Module) -> bool:
    """Whether ``patch_embed`` is the standard non-overlapping conv, so it can run on chosen patches only."""
    pe = model.patch_embed
    proj = getattr(pe, "proj", None)
    return (
        isinstance(proj, nn.Conv2d)
        and tuple(proj.kernel_size) == tuple(proj.stride) == tuple(pe.patch_size)
        and tuple(proj.padding) == (0, 0)
        and proj.groups == 1
        and getattr(pe, "flatten", True)
        and not getattr(pe, "dynamic_img_pad", False)
    )


def embed_tokens(model: nn.Module, images: torch.Tensor, patch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Prefix tokens plus the patch tokens at ``patch_index`` ``(B, K)`` (row-major; ``None``: all), with
    position embeddings: ``(B, prefix + K, D)``.

    For the standard conv patch embedding only the chosen patches are projected (with the conv's own
    weights), so stopped patches cost nothing, forward or backward; prefix tokens and position
    embeddings always come from the model's own ``_pos_embed`` (which only adds and prepends: a subset
    takes its rows of ``_pos_embed`` of zero tokens).
    """
    prefix = int(model.num_prefix_tokens)
    if not _linear_patch_embed(model):
        return gather_tokens(model._pos_embed(model.patch_embed(images)), patch_index, prefix)
    pe = model.patch_embed
    batch, channels, height, width = images.shape
    (ph, pw), (gh, gw) = pe.patch_size, (height // pe.patch_size[0], width // pe.patch_size[1])
    patches = images.reshape(batch, channels, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, gh * gw, channels * ph * pw)
    if patch_index is not None:
        patches = torch.gather(patches, 1, patch_index.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    tokens = pe.norm(F.linear(patches, pe.proj.weight.reshape(pe.proj.out_channels, -1), pe.proj.bias))
    if patch_index is None:
        return _pos_embed_grid(model, tokens, gh, gw)
    if _dropout_active(model):  # the dropout must see the tokens: place them on the full grid
        index = patch_index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        tokens = tokens.new_zeros(batch, gh * gw, tokens.shape[-1]).scatter(1, index, tokens)
        return gather_tokens(_pos_embed_grid(model, tokens, gh, gw), patch_index, prefix)
    # _pos_embed adds position embeddings and prepends prefix tokens: on zero tokens it gives the prefix
    # tokens and every grid position's embedding once, and the kept tokens take their rows (the same
    # additions as on the full grid, without a batch of grid-sized tensors forward and backward)
    positions = _pos_embed_grid(model, tokens.new_zeros(1, gh * gw, tokens.shape[-1]), gh, gw)
    return torch.cat([positions[:, :prefix].expand(batch, -1, -1), tokens + positions[0, prefix:][patch_index]], 1)


def _pos_embed_grid(model: nn.Module, tokens: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """``model._pos_embed`` of ``(B, gh * gw, D)`` grid tokens (as a ``(B, gh, gw, D)`` map for dynamic sizes)."""
    if getattr(model, "dynamic_img_size", False):
        tokens = tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[-1])
    return model._pos_embed(tokens)


def _dropout_active(model: nn.Module) -> bool:
    """Whether ``_pos_embed``'s dropout acts (a student in training with ``pos_drop_rate``)."""
    drop = getattr(model, "pos_drop", None)
    return model.training and isinstance(drop, nn.Dropout) and drop.p > 0


def gather_tokens(tokens: torch.Tensor, patch_index: torch.Tensor | None, num_prefix_tokens: int) -> torch.Tensor:
    """Keep the prefix tokens and the patches at ``patch_index`` ``(B, K)`` (row-major; ``None`` keeps all)."""
    if patch_index is None:
        return tokens
    prefix, patches = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
    index = patch_index.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    return torch.cat([prefix, torch.gather(patches, 1, index)], dim=1)


def cls_attention(block: nn.Module, x: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """The block's CLS-to-patch attention averaged over heads, from its input ``x``: ``(B, T - prefix)``.

    Recomputes only what the saliency needs (``norm1``, ``attn.qkv``, q/k norms) outside the fused kernel.
    """
    attn = block.attn
    qkv = getattr(attn, "qkv", None)
    if qkv is None:
        raise ValueError("model: the last block's attention has no fused `qkv` projection; SMI needs it for saliency")
    batch, tokens, _ = x.shape
    heads = attn.num_heads
    head_dim = getattr(attn, "head_dim", qkv.out_features // (3 * heads))
    q, k, _ = qkv(block.norm1(x)).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q = getattr(attn, "q_norm", nn.Identity())(q)
    k = getattr(attn, "k_norm", nn.Identity())(k)
    scale = getattr(attn, "scale", head_dim**-0.5)
    logits = (q[:, :, :1] * scale) @ k.transpose(-2, -1)  # (B, heads, 1, T): the CLS query row only
    return F.softmax(logits.float(), dim=-1)[:, :, 0, num_prefix_tokens:].mean(dim=1)


def forward_blocks(
    model: nn.Module, tokens: torch.Tensor, *, saliency: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``norm_pre`` -> ``blocks`` -> ``norm``; with ``saliency`` also the last block's CLS attention row."""
    x = model.norm_pre(tokens)
    if not saliency:
        return model.norm(model.blocks(x)), None
    blocks = model.blocks
    x = blocks[:-1](x)
    with torch.no_grad():
        sal = cls_attention(blocks[-1], x.detach(), int(model.num_prefix_tokens))
    return model.norm(blocks[-1](x)), sal


def forward_subset(
    model: nn.Module,
    images: torch.Tensor,
    patch_index: torch.Tensor | None = None,
    *,
    saliency: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of ``model`` on ``images`` seeing only the patches at ``patch_index`` (``None``: all).

    Returns ``(logits, saliency)`` where saliency is ``(B, K)`` (aligned with ``patch_index``) when asked.
    """
    tokens = embed_tokens(model, images, patch_index)
    features, sal = forward_blocks(model, tokens, saliency=saliency)
    return model.forward_head(features), sal
