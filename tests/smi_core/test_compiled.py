"""The compiled step: one static graph per (batch, kept tokens, saliency) shape, and the eager results."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from smi_core import InversionConfig, LossWeights, SelectionConfig, StopSchedule, invert
from smi_core.compiled import CompiledStep
from smi_core.inversion import forward_objective
from smi_core.vit import vit_geometry
from tests.smi_core.vit_models import tiny_vit

SCHEDULE = StopSchedule((4, 8, 12), (0.3, 0.3, 0.3))
WEIGHTS = LossWeights(tv_l1=1e-3, tv_l2=1e-4, l2=1e-4, patch_entropy=0.1)


def _step_inputs(model, batch: int, kept: int, seed: int):
    geo = vit_geometry(model)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, *geo.img_size, generator=g).requires_grad_(True)
    subset = None
    if kept < geo.num_patches:
        subset = torch.sort(torch.rand(batch, geo.num_patches, generator=g).argsort(1)[:, :kept], 1).values
    targets = torch.randint(0, 7, (batch,), generator=g)
    return pixels, subset, targets, geo.num_prefix_tokens


def _run_step(step, model, batch, kept, saliency, seed, identity_view=False):
    pixels, subset, targets, prefix = _step_inputs(model, batch, kept, seed)
    # the view is made from the pixels outside the compiled step, as the loop does; an identity roll/flip
    # draw hands the pixels themselves
    view = pixels if identity_view else torch.flip(pixels, dims=(3,))
    per_sample, sal = step(model, view, subset, pixels, targets, WEIGHTS, prefix, saliency, None)
    (grad,) = torch.autograd.grad(per_sample.mean(), [pixels])
    return per_sample.detach(), sal, grad


def test_the_step_compiles_to_one_graph_per_shape_and_matches_eager() -> None:
    torch._dynamo.reset()
    model = tiny_vit("deit")
    counter = CompileCounterWithBackend("aot_eager")
    compiled = CompiledStep(forward_objective, "default", backend=counter)
    # a one-stop schedule 16 -> 8 patches: the dense and sparse phases, the stop's saliency forward, and
    # the smaller last batch of a shard (more stops only add more of the same keys)
    keys = [(3, 16, False), (3, 8, False), (3, 16, True), (2, 16, False)]
    for seed, (batch, kept, saliency) in enumerate(keys):
        eager = _run_step(forward_objective, model, batch, kept, saliency, seed)
        fast = _run_step(compiled, model, batch, kept, saliency, seed)
        torch.testing.assert_close(fast[0], eager[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast[2], eager[2], rtol=1e-4, atol=1e-7)
        assert (fast[1] is None) == (eager[1] is None) == (not saliency)
        if saliency:
            torch.testing.assert_close(fast[1], eager[1], rtol=1e-5, atol=1e-6)
    assert counter.frame_count == len(keys)  # one graph per shape key, none broken
    for seed, (batch, kept, saliency) in enumerate(keys):  # the same shapes again, also with the identity
        _run_step(compiled, model, batch, kept, saliency, seed + 100)  # view (aliased inputs): no recompile
        eager = _run_step(forward_objective, model, batch, kept, saliency, seed, identity_view=True)
        fast = _run_step(compiled, model, batch, kept, saliency, seed, identity_view=True)
        torch.testing.assert_close(fast[2], eager[2], rtol=1e-4, atol=1e-7)
    assert counter.frame_count == len(keys)


def test_compile_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="compile"):
        InversionConfig(compile="max-autotune")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compile"):
        CompiledStep(forward_objective, "off")


@pytest.mark.slow
def test_compiled_inversion_gives_the_eager_images_within_tolerance() -> None:
    """Inductor (C++ kernels on the CPU; about 2 min cold, seconds with a warm Inductor cache)."""
    model = tiny_vit("vit")
    results = {}
    for mode in ("off", "default", "default"):
        config = InversionConfig(iterations=16, selection=SelectionConfig("smi", SCHEDULE), compile=mode)
        r = invert(model, torch.tensor([1, 2, 3]), config, torch.Generator().manual_seed(0))
        results.setdefault(mode, []).append(r)
    eager, (first, again) = results["off"][0], results["default"]
    assert torch.equal(first.kept_mask, eager.kept_mask)
    torch.testing.assert_close(first.images, eager.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(first.logits, eager.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(first.images, again.images)  # the compiled path repeats itself bit for bit
