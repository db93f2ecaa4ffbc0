"""The quantizer math: uniform (affine), log2 and twin-uniform fake quantizers and their range searches.

Every quantizer maps a float tensor to the float values of its integer grid ("fake quantization"), with
round-half-to-even on ``x * (1 / scale)`` exactly as :func:`torch.fake_quantize_per_tensor_affine` and
:func:`torch.fake_quantize_per_channel_affine` do, so a uniform quantizer and torch's give identical outputs
on the same scales and zero points.

Searches (no files, no randomness; large tensors are subsampled with a fixed stride):

- :func:`search_weight`: per output channel, asymmetric, the clipping range ``[a * min, a * max]`` whose
  quantization MSE is lowest over clip ratios ``a`` (per channel: the error separates by channel).
- :func:`search_uniform`: an activation range (per tensor, or per channel along the last dimension) with the
  lowest MSE over clip ratios of the min/max and symmetric percentile pairs (RepQ-ViT's percentiles among them).
- :func:`search_log2`: the base of a log quantizer for softmax outputs (most mass near 0, a few large values
  that carry a head's attention): levels ``2**(-q / steps)`` below the softmax's bound 1, ``steps`` (1: log2,
  2: RepQ-ViT's log-sqrt2, more at higher bits) chosen by the error it causes in the attention output
  ``softmax @ v``. The top is not clipped: a percentile top cuts exactly the large probabilities.
- :func:`search_twin`: PTQ4ViT's twin-uniform quantizer for post-GELU values: the negative part (GELU's
  minimum is about -0.17) and the positive part get one half of the codes each, with their own scales
  (searched separately: the error separates by sign). Unlike PTQ4ViT, the two scales need not differ by a
  power of two.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass

import torch

MAX_SEARCH_ELEMENTS = 1 << 18  # larger tensors are searched on a strided subsample of this many elements
CLIP_RATIOS = tuple(round(0.30 + 0.025 * i, 3) for i in range(29))  # 0.30 ... 1.00
PERCENTILES = (0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999)
LOG2_STEPS = (1, 2, 4, 8, 16)  # levels per octave of the softmax's log quantizer


def _round(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x)  # half to even, as torch's fake_quantize kernels (nearbyint)


def uniform_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: int) -> torch.Tensor:
    """Affine fake quantization onto the integers ``[0, qmax]``; ``scale``/``zero`` broadcast against ``x``."""
    inv = 1.0 / scale
    return (torch.clamp(_round(x * inv) + zero, 0, qmax) - zero) * scale


def affine_params(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point covering ``[lo, hi]`` (widened to include 0) with ``2**bits`` levels."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    qmax = 2**bits - 1
    scale = torch.clamp((hi - lo) / qmax, min=1e-8).float()
    zero = torch.clamp(_round(-lo / scale), 0, qmax).float()
    return scale, zero


def log2_fake_quant(x: torch.Tensor, delta: torch.Tensor, bits: int, steps: int | torch.Tensor = 1) -> torch.Tensor:
    """Log quantization of non-negative ``x``: ``delta * 2**(-q / steps)`` for ``q`` in ``[0, 2**bits - 2]``
    (``steps`` levels per octave; 1: log2); values above ``delta`` become ``delta``, values below the smallest
    level 0 (the last code)."""
    q = _round(-torch.log2(torch.clamp(x, min=0.0) / delta) * steps)
    q = torch.clamp(q, min=0.0)
    levels = 2**bits - 1  # codes 0 .. levels - 1 are powers of 2**(1/steps), code `levels` is 0
    return torch.where(q < levels, delta * torch.exp2(-q / steps), torch.zeros_like(x))


def twin_fake_quant(x: torch.Tensor, neg_scale: torch.Tensor, pos_scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Twin-uniform: ``x < 0`` on ``neg_scale * [-2**(bits-1), 0]``, ``x >= 0`` on ``pos_scale * [0, 2**(bits-1) - 1]``."""
    half = 2 ** (bits - 1)
    neg = torch.clamp(_round(x * (1.0 / neg_scale)), -half, 0) * neg_scale
    pos = torch.clamp(_round(x * (1.0 / pos_scale)), 0, half - 1) * pos_scale
    return torch.where(x < 0, neg, pos)


# --- quantizer objects ------------------------------------------------------------------------------------


@dataclass
class UniformQuantizer:
    """Affine quantizer; ``axis`` None: one scale, else one per index of that dimension of the input."""

    bits: int
    scale: torch.Tensor
    zero: torch.Tensor
    axis: int | None = None
    kind: str = "uniform"

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.axis is None:
            return self.scale, self.zero
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return self.scale.view(shape), self.zero.view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self._shape(x)
        return uniform_fake_quant(x, scale, zero, 2**self.bits - 1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``x`` (``[0, 2**bits - 1]``), as int64."""
        scale, zero = self._shape(x)
        return torch.clamp(_round(x * (1.0 / scale)) + zero, 0, 2**self.bits - 1).to(torch.int64)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        scale, zero = self._shape(codes)
        return (codes.float() - zero) * scale

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale, "zero": self.zero}


@dataclass
class Log2Quantizer:
    """Log quantizer for non-negative inputs (softmax outputs): top ``delta``, ``steps`` levels per octave."""

    bits: int
    delta: torch.Tensor
    steps: torch.Tensor = dataclasses.field(default_factory=lambda: torch.tensor(1.0))
    kind: str = "log2"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return log2_fake_quant(x, self.delta, self.bits, self.steps)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta, "steps": self.steps}


@dataclass
class TwinQuantizer:
    """Twin-uniform quantizer (post-GELU values)."""

    bits: int
    neg_scale: torch.Tensor
    pos_scale: torch.Tensor
    kind: str = "twin"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return twin_fake_quant(x, self.neg_scale, self.pos_scale, self.bits)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"neg_scale": self.neg_scale, "pos_scale": self.pos_scale}


Quantizer = UniformQuantizer | Log2Quantizer | TwinQuantizer


def quantizer_from_tensors(kind: str, bits: int, tensors: dict[str, torch.Tensor], axis: int | None = None) -> Quantizer:
    """Rebuild a quantizer from :meth:`tensors` (io)."""
    if kind == "uniform":
        return UniformQuantizer(bits, tensors["scale"], tensors["zero"], axis)
    if kind == "log2":
        return Log2Quantizer(bits, tensors["delta"], tensors.get("steps", torch.tensor(1.0)))
    if kind == "twin":
        return TwinQuantizer(bits, tensors["neg_scale"], tensors["pos_scale"])
    raise ValueError(f"unknown quantizer kind {kind!r}")


# --- searches --------------------------------------------------------------------------------------------


def _sample(x: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """``x`` flattened (to ``(rows, channels)`` when ``channels``), strided down to ~MAX_SEARCH_ELEMENTS."""
    flat = x.detach().float().reshape(-1, channels) if channels else x.detach().float().reshape(-1)
    rows = flat.shape[0]
    per_row = channels or 1
    stride = max(1, (rows * per_row) // MAX_SEARCH_ELEMENTS)
    return flat[::stride]


def _mse(a: torch.Tensor, b: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    err = (a - b).pow(2)
    return err.mean() if dim is None else err.mean(dim)


def search_weight(w: torch.Tensor, bits: int, ratios: Sequence[float] = CLIP_RATIOS) -> UniformQuantizer:
    """Per output channel (dim 0) affine quantizer of ``w`` with the MSE-best clip ratio per channel."""
    rows = w.detach().float().flatten(1)
    lo, hi = rows.amin(1), rows.amax(1)
    best_err = torch.full_like(lo, float("inf"))
    best_scale, best_zero = torch.ones_like(lo), torch.zeros_like(lo)
    for r in ratios:
        scale, zero = affine_params(lo * r, hi * r, bits)
        err = _mse(uniform_fake_quant(rows, scale[:, None], zero[:, None], 2**bits - 1), rows, dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return UniformQuantizer(bits, best_scale, best_zero, axis=0)


def _tails(flat: torch.Tensor, pcts: Sequence[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(1 - p, p)`` quantiles (nearest rank) of ``flat`` along dim 0, from its top/bottom ``k`` only."""
    n = flat.shape[0]
    ranks = {p: min(n - 1, int(round((1 - p) * (n - 1)))) for p in pcts}
    k = max(ranks.values()) + 1
    top = flat.topk(k, dim=0).values  # descending
    bottom = flat.topk(k, dim=0, largest=False).values  # ascending
    return [(bottom[ranks[p]], top[ranks[p]]) for p in pcts]


def _range_candidates(flat: torch.Tensor, ratios: Sequence[float], pcts: Sequence[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Candidate ``(lo, hi)`` per column of ``flat`` (rows, C) or for the 1-d ``flat``: clip ratios of the min/max
    and symmetric percentile pairs."""
    lo, hi = flat.amin(0), flat.amax(0)
    return [(lo * r, hi * r) for r in ratios] + _tails(flat, pcts)


def search_uniform(
    x: torch.Tensor, bits: int, *, per_channel: bool = False,
    ratios: Sequence[float] = CLIP_RATIOS, pcts: Sequence[float] = PERCENTILES,
) -> UniformQuantizer:
    """Affine activation quantizer for ``x`` (per tensor, or per channel of the last dimension) whose range has
    the lowest MSE on ``x`` among the candidates (clip ratios of the min/max, percentile pairs)."""
    qmax = 2**bits - 1
    if per_channel:
        flat = _sample(x, x.shape[-1])
    else:
        flat = _sample(x)
    best_err = None
    best_scale = best_zero = None
    for lo, hi in _range_candidates(flat, ratios, pcts):
        scale, zero = affine_params(lo, hi, bits)
        err = _mse(uniform_fake_quant(flat, scale, zero, qmax), flat, dim=0 if per_channel else None)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    assert best_scale is not None and best_zero is not None
    return UniformQuantizer(bits, best_scale, best_zero, axis=-1 if per_channel else None)


def search_log2(x: torch.Tensor, bits: int, values: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                steps: Sequence[int] = LOG2_STEPS) -> Log2Quantizer:
    """Log quantizer for softmax outputs ``x`` (in [0, 1]): top 1, the ``steps`` per octave whose quantization
    error moves the attention output ``x @ values`` least (``values``: the heads' ``v``, shaped like
    ``x[..., :1]`` with a last dimension of its own), or ``x`` itself without ``values``. ``rows``: a
    ``(batch, queries)`` bool mask of the query rows the error counts on (``x`` shaped ``(batch, heads,
    queries, keys)``; default all).

    Fine steps resolve the large probabilities but reach less far down (``2**bits - 2`` levels span
    ``(2**bits - 2) / steps`` octaves): at 8 bits 16 steps still reach 2**-16, at 4 bits 2 steps reach 2**-7.
    """
    if values is None and rows is None:
        x = _sample(x)
    else:  # whole images (the product needs whole attention rows), about 16 * MAX_SEARCH_ELEMENTS probabilities
        images = max(1, (16 * MAX_SEARCH_ELEMENTS) // x[:1].numel())
        x = x[:images].detach().float()
        values = None if values is None else values[:images].detach().float()
        rows = None if rows is None else rows[:images]
    delta = torch.tensor(1.0, device=x.device)
    best: tuple[float, int] | None = None
    for s in steps:
        err = log2_fake_quant(x, delta, bits, s) - x
        if values is not None:
            err = err @ values
        if rows is not None:
            err = err.transpose(1, 2)[rows]
        mse = float(err.pow(2).mean())
        if best is None or mse < best[0]:
            best = (mse, s)
    assert best is not None
    return Log2Quantizer(bits, delta, torch.tensor(float(best[1]), device=x.device))


def search_twin(x: torch.Tensor, bits: int, ratios: Sequence[float] = CLIP_RATIOS) -> TwinQuantizer:
    """Twin-uniform quantizer for ``x``: negative and positive scales, each the MSE-best clip of its side."""
    flat = _sample(x)
    half = 2 ** (bits - 1)
    neg, pos = flat[flat < 0], flat[flat >= 0]

    def best_scale(values: torch.Tensor, top: float, levels: int, sign: float) -> torch.Tensor:
        if values.numel() == 0 or top <= 0:
            return torch.tensor(1e-8)
        best: tuple[float, torch.Tensor] | None = None
        for r in ratios:
            s = torch.tensor(max(top * r / levels, 1e-8))
            q = torch.clamp(_round(values * (1.0 / s)), -levels if sign < 0 else 0, 0 if sign < 0 else levels) * s
            err = float(_mse(q, values))
            if best is None or err < best[0]:
                best = (err, s)
        assert best is not None
        return best[1]

    neg_scale = best_scale(neg, float(-neg.min()) if neg.numel() else 0.0, half, -1.0)
    pos_scale = best_scale(pos, float(pos.max()) if pos.numel() else 0.0, half - 1, 1.0)
    return TwinQuantizer(bits, neg_scale, pos_scale)


def quant_mse(q: Quantizer, x: torch.Tensor) -> float:
    """MSE of ``q`` on (a subsample of the rows of) ``x``; per-channel quantizers act on its last dimension."""
    flat = _sample(x, x.shape[-1])
    return float(_mse(q(flat), flat))
