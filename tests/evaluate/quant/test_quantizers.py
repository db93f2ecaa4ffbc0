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
    steps = float(q.steps)
    exps = -torch.log2(out[out > 0] / q.delta) * steps
    assert float(q.delta) == 1.0 and steps in qz.LOG2_STEPS
    assert torch.allclose(exps, exps.round(), atol=1e-4) and float(exps.max()) <= 14 + 1e-4  # codes 0..14; 15: 0
    # most softmax entries are tiny: the log2 grid (one level per octave) keeps them, a 4-bit uniform grid zeroes them
    small = attn < 0.01
    log2, uniform = qz.search_log2(attn, 4, steps=(1,)), qz.search_uniform(attn, 4)
    assert (log2(attn)[small] - attn[small]).abs().mean() < 0.5 * (uniform(attn)[small] - attn[small]).abs().mean()


def _peaked_attention(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax rows over 197 tokens where a few heads put most of their mass on one token (as a class token's
    attention does), and the values they multiply."""
    logits = torch.randn(16, 4, 197, 197, generator=g) * 2
    logits[:, :2, :, 0] += 8.0  # heads 0 and 1: p(token 0) around 0.5-0.99
    return logits.softmax(-1), torch.randn(16, 4, 197, 32, generator=g)


def test_log2_search_keeps_the_large_probabilities_at_8_bits():
    """At 8 bits the softmax's quantizer must not clip or coarsen the probabilities that carry a head's
    attention: a percentile top clips them to the percentile (0.9 became 0.375 on a suite teacher), and
    one level per octave rounds 0.7 to 0.5; either moved the attention output by far more than 8 bits should."""
    attn, v = _peaked_attention(torch.Generator().manual_seed(7))
    q = qz.search_log2(attn, 8, v)
    out = q(attn)
    large = attn > 0.3
    assert int(large.sum()) > 1000
    assert float(((out[large] - attn[large]).abs() / attn[large]).max()) < 0.03
    err = float(((out - attn) @ v).pow(2).mean() / (attn @ v).pow(2).mean())
    assert err < 1e-3


def test_log2_search_trades_resolution_for_reach_with_the_bits():
    attn, v = _peaked_attention(torch.Generator().manual_seed(8))
    fine, coarse = qz.search_log2(attn, 8, v), qz.search_log2(attn, 4, v)
    assert float(fine.steps) >= 8 and float(coarse.steps) <= 2


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
