"""The functional quantized ViT: timm's forward when off, RepQ-ViT's reparameterisation exact, every matmul
input quantized when on."""

from __future__ import annotations

import pytest
import torch

from pipeline.evaluate.quant.model import QuantSettings, QuantViT, quantize_vit, token_mask


def _vit(**kwargs):
    import timm

    torch.manual_seed(0)
    config = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 4, "num_classes": 5,
              "mlp_ratio": 2.0, **kwargs}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **config).eval()
    with torch.no_grad():  # trained-looking LayerNorm outputs: channels of very different scales
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.logspace(-1, 1, p.numel())[torch.randperm(p.numel())])
            elif "norm" in name and name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kwargs", [{}, {"global_pool": "avg", "fc_norm": False}, {"init_values": 0.1},
                                    {"no_embed_class": True}, {"class_token": False, "global_pool": "avg",
                                                                 "fc_norm": False}])
def test_off_equals_timm_forward(kwargs):
    model = _vit(**kwargs)
    x = torch.randn(4, 3, 16, 16)
    qv = QuantViT.from_timm(model, QuantSettings())
    with torch.no_grad():
        assert torch.allclose(qv(x), model(x), atol=1e-5, rtol=1e-5)


def test_unsupported_models_are_refused():
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        QuantViT.from_timm(torch.nn.Linear(3, 3), QuantSettings())
    with pytest.raises(ValueError, match="register tokens"):
        QuantViT.from_timm(_vit(reg_tokens=2), QuantSettings())
    with pytest.raises(ValueError, match="must be in"):
        QuantSettings(w_bits=1)


def test_reparameterisation_is_exactly_per_channel_quantization():
    """Folding the per-channel scales into the LayerNorm leaves the activations' quantized values unchanged."""
    model, x = _vit(), torch.randn(16, 3, 16, 16)
    qv = QuantViT.from_timm(model, QuantSettings(a_bits=4, post_ln="reparam"))
    qv.calibrate(x)
    qv.quant_weights = False
    with torch.no_grad():
        per_channel = qv(x)
        changed = qv.reparameterize()
        qv.quant_weights = False
        assert sorted(changed) == sorted(["blocks.0.qkv_in", "blocks.0.fc1_in", "blocks.1.qkv_in", "blocks.1.fc1_in",
                                          "head_in"])
        assert all(qv.acts[s].axis is None for s in changed)
        assert torch.allclose(qv(x), per_channel, atol=1e-4, rtol=1e-4)
        qv.quant_acts = False
        assert torch.allclose(qv(x), model(x), atol=1e-4, rtol=1e-4)  # the float function is unchanged too


def test_every_matmul_input_is_quantized_and_bits_order_the_error():
    model = _vit()
    calib, x = torch.randn(32, 3, 16, 16), torch.randn(64, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        err = {}
        for w, a in ((8, 8), (4, 8), (4, 4)):
            qv = quantize_vit(model, calib, QuantSettings(w_bits=w, a_bits=a))
            err[(w, a)] = float((qv(x) - ref).pow(2).mean() / ref.pow(2).mean())
    sites = {s.rsplit(".", 1)[-1] for s in qv.acts}
    assert sites == {"input", "qkv_in", "q", "k", "v", "softmax", "proj_in", "fc1_in", "fc2_in", "head_in"}
    assert qv.acts["blocks.0.softmax"].kind == "log2" and qv.acts["blocks.0.fc2_in"].kind in ("uniform", "twin")
    assert set(qv.gelu_choice) == {"blocks.0.fc2_in", "blocks.1.fc2_in"}
    assert len(qv.weight_q) == 2 + 4 * 2 and all(q.bits == 4 for q in qv.weight_q.values())
    assert err[(8, 8)] < 0.01 < err[(4, 4)] and err[(8, 8)] < err[(4, 8)] < err[(4, 4)]


def test_calibration_data_sets_the_ranges():
    model = _vit()
    a = quantize_vit(model, torch.randn(16, 3, 16, 16), QuantSettings(a_bits=4))
    b = quantize_vit(model, 3 * torch.randn(16, 3, 16, 16), QuantSettings(a_bits=4))
    assert float(b.acts["input"].scale) > 2 * float(a.acts["input"].scale)
    with pytest.raises(RuntimeError, match="not calibrated"):
        fresh = QuantViT.from_timm(model, QuantSettings())
        fresh.quant_acts = True
        fresh(torch.randn(1, 3, 16, 16))


def _stopped_patches_blown_up(mask: torch.Tensor, images: torch.Tensor, factor: float) -> torch.Tensor:
    """``images`` with the pixels of the patches ``mask`` (batch, 4, 4) does not keep multiplied by ``factor``."""
    pixels = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(images)
    return torch.where(pixels, images, factor * images)


def test_a_token_mask_calibrates_on_the_kept_tokens_only():
    """An SMI image's stopped patches are not what the teacher saw: with the corpus's kept-patch masks the
    ranges come from the kept tokens (the image's pixels, block 0's token-wise qkv input) and do not move
    when the stopped patches change; without the mask they do."""
    model = _vit()
    g = torch.Generator().manual_seed(3)
    images = torch.randn(8, 3, 16, 16, generator=g)
    patches = torch.rand(8, 4, 4, generator=g) < 0.5
    wild = _stopped_patches_blown_up(patches, images, 20.0)
    qv = QuantViT.from_timm(model, QuantSettings(post_ln="per_channel"))
    keep = token_mask(qv.shape, patches)
    assert keep.shape == (8, 17) and bool(keep[:, 0].all()) and torch.equal(keep[:, 1:], patches.flatten(1))
    settings = QuantSettings(post_ln="per_channel")
    calm, blown = quantize_vit(model, images, settings, keep), quantize_vit(model, wild, settings, keep)
    for site in ("input", "blocks.0.qkv_in"):
        assert torch.equal(calm.acts[site].scale, blown.acts[site].scale), site
    unmasked = quantize_vit(model, wild, settings)
    assert float(unmasked.acts["input"].scale) > 5 * float(calm.acts["input"].scale)
    assert not torch.allclose(unmasked.acts["blocks.0.qkv_in"].scale, calm.acts["blocks.0.qkv_in"].scale, rtol=0.05)
    all_kept = token_mask(qv.shape, torch.ones(8, 4, 4, dtype=torch.bool))  # a dense corpus: as without a mask
    dense = quantize_vit(model, images, QuantSettings(), all_kept)
    plain = quantize_vit(model, images, QuantSettings())
    assert all(torch.equal(t, plain.acts[site].tensors()[k])
               for site, q in dense.acts.items() for k, t in q.tensors().items())
    with pytest.raises(ValueError, match="patch grid"):
        token_mask(qv.shape, torch.ones(8, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep"):
        qv.calibrate(images, keep[:4])
