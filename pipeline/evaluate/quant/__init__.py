"""Post-training fake quantization of timm Vision Transformers, as the ViT PTQ papers do it.

- :mod:`.quantizers`: the math (uniform/affine, log2, twin-uniform) and the range searches; no model, no files.
- :mod:`.model`: :class:`~.model.QuantViT`, a functional re-implementation of a timm ``VisionTransformer``'s
  forward with quantizers at every matmul input, and :func:`~.model.quantize_vit` (calibration).
- :mod:`.io`: save/load as ``model.safetensors`` (integer weight codes + scales) and ``config.json``.

The design follows the anchors' code (read at github.com/zkkli/RepQ-ViT ``classification/quant``,
github.com/hahnyuan/PTQ4ViT, github.com/zkkli/PSAQ-ViT): RepQ-ViT's sites and per-channel LayerNorm
outputs folded into the LayerNorm affine, its log-base quantizer after the softmax (RepQ-ViT's log-sqrt2
generalised: 1 to 16 levels per octave below 1, chosen by the error in the attention output), PTQ4ViT's
twin-uniform quantizer after the GELU (chosen per layer against a uniform one by MSE), MSE-searched ranges
for weights and activations. Block-wise reconstruction (BRECQ/AdaRound) is not done.

Why no library: the quantizers that matter at W4/A4 are the attention's (``q``, ``k``, softmax output,
``v``), and timm computes them inside ``Attention.forward`` with ``F.scaled_dot_product_attention``, where
no module boundary exists: torch.ao.quantization (module swaps, FX) and brevitas (its
``QuantMultiheadAttention`` replaces ``nn.MultiheadAttention``, not timm's ``Attention``) reach them only by
patching or rewriting timm's classes; neither has a log2 or twin-uniform quantizer. torchao targets real
low-bit kernels (int4 weight-only, int8 dynamic activations on ``nn.Linear``), optimum-quanto stops at
8-bit activations, nncf's PTQ is 8-bit oriented and brings OpenVINO tooling; none is installed here. The
functional forward needs ~100 lines and is checked against timm's forward, and the uniform quantizer is
checked bit for bit against torch's own reference kernels (``torch.fake_quantize_per_tensor_affine`` /
``torch.fake_quantize_per_channel_affine``) in the tests.
"""

from pipeline.evaluate.quant.model import QuantSettings, QuantViT, quantize_vit

__all__ = ["QuantSettings", "QuantViT", "quantize_vit"]
