import pytest
import torch
from torch import nn

from smi_core.vit import (
    cls_attention,
    embed_tokens,
    forward_blocks,
    forward_subset,
    gather_tokens,
    vit_geometry,
)
from tests.smi_core.vit_models import FAMILIES, tiny_vit


def _images(model, batch=3, size=None, seed=1):
    geo = vit_geometry(model, size)
    return torch.randn(batch, 3, *geo.img_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_all_patches_equal_timm_forward(family):
    model = tiny_vit(family)
    x = _images(model)
    with torch.no_grad():
        ours, _ = forward_subset(model, x)
        theirs = model(x)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_subset_equals_timm_embedding_then_gather(family):
    """Projecting only the kept patches gives what timm's full embedding would, gathered."""
    model = tiny_vit(family)
    x = _images(model)
    geo = vit_geometry(model)
    g = torch.Generator().manual_seed(3)
    index = torch.sort(torch.stack([torch.randperm(geo.num_patches, generator=g)[:5] for _ in range(3)]), 1).values
    with torch.no_grad():
        ref_tokens = gather_tokens(model._pos_embed(model.patch_embed(x)), index, model.num_prefix_tokens)
        ref = model.forward_head(forward_blocks(model, ref_tokens)[0])
        ours, _ = forward_subset(model, x, index)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def _reference_subset_tokens(model, x, index):
    """The kept tokens through timm's own embedding of the whole grid, then gathered."""
    return gather_tokens(model._pos_embed(model.patch_embed(x)), index, model.num_prefix_tokens)


@pytest.mark.parametrize("family", ["vit", "deit_distilled", "registers", "deit3_no_embed_class", "non_square",
                                    "dynamic_size"])
def test_subset_tokens_and_their_gradients_equal_the_full_grid_path(family):
    """A subset takes its rows of the position embeddings: the same sums, and the same pixel gradients."""
    model = tiny_vit(family)
    size = (48, 40) if family == "dynamic_size" else None
    x = _images(model, size=size).requires_grad_(True)
    geo = vit_geometry(model, size)
    g = torch.Generator().manual_seed(5)
    index = torch.sort(torch.stack([torch.randperm(geo.num_patches, generator=g)[:4] for _ in range(3)]), 1).values
    ours, ref = embed_tokens(model, x, index), _reference_subset_tokens(model, x, index)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    weights = torch.randn(ours.shape, generator=g)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), [x])
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), [x])
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-6, rtol=0)


def test_subset_in_training_with_position_dropout_drops_as_the_full_grid_does():
    model = tiny_vit("vit", pos_drop_rate=0.5).train()
    x = _images(model)
    index = torch.tensor([[0, 3, 5]] * 3)
    torch.manual_seed(0)
    ours = embed_tokens(model, x, index)
    torch.manual_seed(0)
    scattered = torch.zeros(3, vit_geometry(model).num_patches, ours.shape[-1])
    tokens = model.patch_embed(x)
    ref = gather_tokens(model._pos_embed(scattered.scatter(1, index.unsqueeze(-1).expand(-1, -1, ours.shape[-1]),
                                                           torch.gather(tokens, 1, index.unsqueeze(-1).expand(
                                                               -1, -1, ours.shape[-1])))), index, 1)
    torch.testing.assert_close(ours, ref)
    assert (ours[:, 1:] == 0).any()  # dropped


def test_dynamic_size_model_at_other_resolution():
    model = tiny_vit("dynamic_size")
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(forward_subset(model, x)[0], model(x), atol=1e-5, rtol=0)
    assert vit_geometry(model, (48, 40)).grid == (6, 5)


def test_saliency_is_last_block_cls_attention_averaged_over_heads():
    model = tiny_vit("layerscale_qknorm")
    x = _images(model, batch=2)
    captured = {}
    last = model.blocks[-1].attn
    last.fused_attn = False  # instance flag: the unfused path exposes the attention matrix to a hook
    handle = last.attn_drop.register_forward_hook(lambda m, i, o: captured.setdefault("attn", o))
    with torch.no_grad():
        _, sal = forward_subset(model, x, saliency=True)
    handle.remove()
    expected = captured["attn"][:, :, 0, model.num_prefix_tokens:].mean(1)
    torch.testing.assert_close(sal, expected, atol=1e-6, rtol=0)
    assert sal.shape == (2, vit_geometry(model).num_patches)


def test_saliency_does_not_change_the_logits():
    model = tiny_vit("deit_distilled")
    x = _images(model)
    with torch.no_grad():
        a, _ = forward_subset(model, x)
        b, sal = forward_subset(model, x, saliency=True)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.allclose(sal.sum(1), sal.sum(1))  # finite


def test_cls_attention_requires_fused_qkv():
    model = tiny_vit("vit")
    block = model.blocks[-1]
    saved = block.attn.qkv
    block.attn.qkv = None
    with pytest.raises(ValueError, match="qkv"):
        cls_attention(block, torch.zeros(1, 5, 48), 1)
    block.attn.qkv = saved


def test_geometry_errors_name_the_field():
    model = tiny_vit("vit")
    with pytest.raises(ValueError, match="img_size.*not divisible"):
        vit_geometry(tiny_vit("dynamic_size"), (30, 32))
    with pytest.raises(ValueError, match="img_size.*without dynamic_img_size"):
        vit_geometry(model, (48, 48))
    with pytest.raises(ValueError, match="model: .*not a timm Vision Transformer"):
        vit_geometry(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))


def test_embed_tokens_shape():
    model = tiny_vit("registers")
    x = _images(model)
    index = torch.tensor([[0, 3], [1, 2], [5, 15]])
    assert embed_tokens(model, x, index).shape == (3, model.num_prefix_tokens + 2, 48)
