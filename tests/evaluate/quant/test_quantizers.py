"""The quantizer math against torch's reference fake-quantize kernels, and what each search buys."""

from __future__ import annotations

import torch

from pipeline.evaluate.quant import quantizers as qz


def test_uniform_per_tensor_matches_torch_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=g) * 3
    for bits in (2, 4, 6, 8):
        q = qz.search_uniform(x, bits)
        ref = torch.fake_quantize_per_tensor_affine(x, float(q.scale), int(q.zero), 0, 2**bits - 1)
        assert torch.equal(q(x), ref)


def test_uniform_per_channel_matches_torch_reference_for_weights_and_activations():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(24, 40, generator=g) * torch.rand(24, 1, generator=g)
    x = torch.randn(8, 10, 40, generator=g) * torch.logspace(-2, 1, 40)
    for bits in (3, 4, 8):
        wq = qz.search_weight(w, bits)
        ref = torch.fake_quantize_per_channel_affine(w, wq.scale, wq.zero.to(torch.int32), 0, 0, 2**bits - 1)
        assert torch.equal(wq(w), ref)
        aq = qz.search_uniform(x, bits, per_channel=True)
        ref = torch.fake_quantize_per_channel_affine(x, aq.scale, aq.zero.to(torch.int32), 2, 0, 2**bits - 1)
        assert torch.equal(aq(x), ref)
        assert torch.equal(aq.dequantize(aq.codes(x)), aq(x))


def test_searched_weight_clip_beats_min_max_at_4_bits():
    torch.manual_seed(2)
    w = torch.distributions.StudentT(3.0).sample((64, 128))  # heavy tails, as trained weights
    minmax = qz.search_weight(w, 4, ratios=(1.0,))
    searched = qz.search_weight(w, 4)
    err = lambda q: float((q(w) - w).pow(2).mean())  # noqa: E731
    assert err(searched) < 0.95 * err(minmax)
    assert bool((searched.scale <= minmax.scale + 1e-7).all())  # the search only ever clips


def test_per_channel_activation_ranges_follow_each_channel():
    """Post-LayerNorm-like activations (channels 100x apart): per-channel scales are per-channel, and much better."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 50, 32, generator=g) * torch.logspace(-1, 1, 32)
    per_tensor, per_channel = qz.search_uniform(x, 4), qz.search_uniform(x, 4, per_channel=True)
    assert per_channel.scale.shape == (32,) and per_tensor.scale.shape == ()
    assert float(per_channel.scale[-1] / per_channel.scale[0]) > 20
    assert qz.quant_mse(per_channel, x) < qz.quant_mse(per_tensor, x)
    small = lambda q: float((q(x) - x)[..., :8].pow(2).mean() / x[..., :8].pow(2).mean())  # noqa: E731
    assert small(per_tensor) > 0.9 and small(per_channel) < 0.05  # per tensor, the small channels round to 0


def test_log2_quantizer_levels_and_softmax_error():
    g = torch.Generator().manual_seed(4)
    attn = (torch.randn(8, 4, 65, 65, generator=g) * 3).softmax(-1)
    q = qz.search_log2(attn, 4)
    out = q(attn)
    nonzero = out[out > 0] / q.delta
    exps = -torch.log2(nonzero)
    assert torch.allclose(exps, exps.round(), atol=1e-5) and float(exps.max()) <= 14  # codes 0..14, 15 is zero
    # most softmax entries are tiny: the log2 grid keeps them, a 4-bit uniform grid zeroes them
    small = attn < 0.01
    uniform = qz.search_uniform(attn, 4)
    assert (out[small] - attn[small]).abs().mean() < 0.5 * (uniform(attn)[small] - attn[small]).abs().mean()


def test_twin_uniform_covers_both_sides_of_gelu():
    g = torch.Generator().manual_seed(5)
    h = torch.nn.functional.gelu(torch.randn(64, 65, 128, generator=g) * 2)
    q = qz.search_twin(h, 4)
    out = q(h)
    neg, pos = out[h < 0], out[h >= 0]
    assert bool((neg <= 0).all()) and bool((pos >= 0).all())
    assert len(torch.unique(neg)) <= 9 and len(torch.unique(pos)) <= 8  # 2**3 codes per side (0 on both)
    assert float(q.neg_scale) < float(q.pos_scale)  # the negative side (>= -0.17) gets the finer step
    assert torch.allclose(torch.unique(neg) / q.neg_scale, (torch.unique(neg) / q.neg_scale).round(), atol=1e-4)
