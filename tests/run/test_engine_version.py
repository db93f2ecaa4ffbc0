"""The engine version guard: a tiny inversion's output is pinned per ENGINE_VERSION.

If this fails after a change to smi_core, the inversion arithmetic changed: bump
``smi_core.version.ENGINE_VERSION`` (every corpus's spec hash includes it, so no corpus started under
the old arithmetic is resumed under the new one) and pin the new digest under the new version here.
If it fails without any change to smi_core (another torch, another CPU), the bytes of corpora made on
this machine differ from the pinned reference too; that is what the provenance check on resume
refuses to mix.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import timm
import torch

from smi_core import (
    ENGINE_VERSION,
    InversionConfig,
    SelectionConfig,
    StopSchedule,
    invert,
)
from tests.conftest import cpu_kind

# sha256 of the uint8 pixels, kept-patch masks and float16 logits of the two inversions below (pixels only, and
# with a pyramid), on the CPU, per engine version and CPU kind: torch's CPU kernels (and the BLAS paths they
# take) differ between vendors and instruction sets, so each kind the project's machines come in is pinned
PINNED = {
    (2, "GenuineIntel"): "707aa60ba953276736d22983922f16c757acc5460534956ca5a80f3f0b2baadd",  # Xeon VM, 2026-11-30
    (2, "AuthenticAMD/AVX512"): "1bf3fc4284aa807365596869822608d3cca9ebf676e710eb5c74d1da2599308e",  # EPYC VM, 2026-12-07
}


def tiny_inversion_digest() -> str:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                              depth=2, num_heads=2, num_classes=4).eval().requires_grad_(False)
    pixels = InversionConfig(iterations=12, selection=SelectionConfig(
        kind="smi", schedule=StopSchedule(iterations=(3, 6), ratios=(0.3, 0.3))))
    pyramid = replace(pixels, pyramid=(2, 4), selection=replace(pixels.selection, stopped="prior"))
    h = hashlib.sha256()
    for config in (pixels, pyramid):
        result = invert(model, torch.tensor([1, 3]), config, torch.Generator().manual_seed(7),
                        img_size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)
        h.update((result.images * 255).round().clamp(0, 255).to(torch.uint8).numpy().tobytes())
        h.update(result.kept_mask.numpy().tobytes())
        h.update(result.logits.to(torch.float16).numpy().tobytes())
    return h.hexdigest()


def test_inversion_output_is_pinned_for_this_engine_version() -> None:
    key = (ENGINE_VERSION, cpu_kind())
    assert key in PINNED, f"pin the digest of ENGINE_VERSION {ENGINE_VERSION} on this CPU kind: {key}"
    assert tiny_inversion_digest() == PINNED[key], (
        "the inversion arithmetic changed: bump smi_core.version.ENGINE_VERSION and pin the new digest")
