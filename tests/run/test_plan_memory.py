"""The per-GPU memory estimate of ``smi-synth plan``: its parts checked against a real model on the CPU."""

from __future__ import annotations

import timm
import torch

from pipeline.run.plan import memory_estimate, summarize, vit_param_count
from pipeline.run.spec import load_spec
from pipeline.teachers.loading import load_teacher
from smi_core import LossWeights
from smi_core.inversion import forward_objective
from smi_core.memory import PIXEL_BUFFERS
from tests.run.fake_teacher import fake_describe
from tests.run.tiny_run import write_manifest


def _saved_activation_bytes(model: torch.nn.Module, images: int, dtype: torch.dtype | None) -> int:
    """Bytes autograd keeps for the pixel gradient of one dense step (storages, each once), excluding the
    model's own parameters and autocast's casts of them (the formula's weight terms)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    flat = [tuple(p.flatten(1).shape) if p.ndim > 1 else tuple(p.shape) for p in model.parameters()]
    shapes = set(flat) | {s[::-1] for s in flat}  # autocast's bf16 copies, as used (transposed) by the matmuls
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and not (t.dtype == dtype and tuple(t.shape) in shapes):
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    size = model.patch_embed.img_size
    pixels = torch.randn(images, 3, *size, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward_objective(model, torch.roll(pixels, 1, 2), None, pixels, torch.zeros(images, dtype=torch.long),
                          LossWeights(tv_l2=0.0), int(model.num_prefix_tokens), False, dtype)
    return sum(saved.values())


def test_weights_and_saved_activations_match_a_real_teacher(tmp_path, teacher_file) -> None:
    spec = load_spec(write_manifest(tmp_path, teacher_file))
    model = load_teacher(spec.teacher_spec, device=torch.device("cpu")).model
    params = sum(p.numel() for p in model.parameters())
    assert vit_param_count(spec) == params == spec.teacher.num_params
    for dtype, name in ((None, "float32"), (torch.bfloat16, "bfloat16")):
        typed = load_spec(write_manifest(tmp_path, teacher_file, dtype=name))
        estimate = memory_estimate(typed, images=3)
        assert estimate["weights"] == 4 * params
        assert estimate["autocast_weight_copies"] == (2 * params if dtype else 0)
        measured = _saved_activation_bytes(model, 3, dtype)
        # the formula counts the blocks' saved tensors; the final norm, LayerNorm statistics and the
        # attention's log-sum-exp add a few percent
        assert 0.85 * measured <= estimate["saved_activations"] <= 1.0 * measured, (name, estimate, measured)
        h, w = typed.teacher.img_size
        assert estimate["pixel_state"] == 3 * PIXEL_BUFFERS * 3 * h * w * 4
        assert estimate["total"] == sum(estimate[k] for k in ("weights", "autocast_weight_copies", "pixel_state",
                                                              "saved_activations", "backward_working_set"))


def test_param_formula_matches_deit_base_and_plan_reports_memory_per_engine_call(tmp_path, monkeypatch) -> None:
    import pipeline.run.spec as spec_mod

    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)  # DeiT-Base's dimensions, no weights
    manifest = tmp_path / "m.yaml"
    manifest.write_text("teacher: timm:deit_base_patch16_224\nimages_per_class: 256\nimages_per_shard: 256\n"
                        "dtype: bfloat16\ndevice: cuda\ninversion: {batch_size: 64, pack_batches: 4}\n")
    spec = load_spec(manifest)
    with torch.device("meta"):
        deit = timm.create_model("deit_base_patch16_224", pretrained=False)
    assert vit_param_count(spec) == sum(p.numel() for p in deit.parameters())
    summary = summarize(spec)
    memory = summary["gpu_memory"]
    assert memory["images_per_call"] == 256 == summary["batch_size"] * summary["pack_batches"]
    assert memory == memory_estimate(spec, images=256)
    one_batch = memory_estimate(spec, images=64)
    assert memory["total"] - one_batch["total"] == 3 * (one_batch["total"] - one_batch["weights"]
                                                        - one_batch["autocast_weight_copies"])
    assert memory["largest_batch"]["H200 141GB"] > memory["largest_batch"]["H100 80GB"] > 256
    assert "assumed" in summary["assumptions"]["gpu_utilisation_source"]


def test_a_rebirth_batch_fills_the_forward_as_dense_does(tmp_path, monkeypatch) -> None:
    import pipeline.run.spec as spec_mod

    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)
    base = "teacher: timm:deit_base_patch16_224\nimages_per_class: 1000\nimages_per_shard: 1000\n"
    (tmp_path / "d.yaml").write_text(base)
    (tmp_path / "r.yaml").write_text(base + "inversion: {method: rebirth}\n")
    (tmp_path / "r100.yaml").write_text(base + "inversion: {method: rebirth, batch_size: 100}\n")
    dense, rebirth, given = (load_spec(tmp_path / n) for n in ("d.yaml", "r.yaml", "r100.yaml"))
    assert rebirth.images_per_target == 4 and dense.images_per_target == 1
    assert (dense.batch_size, dense.targets_per_call) == (64, 64)
    assert (rebirth.batch_size, rebirth.targets_per_call) == (256, 64)  # four images out per target in
    assert given.targets_per_call == 25
    assert memory_estimate(rebirth) == memory_estimate(dense)
    assert summarize(rebirth)["gpu_memory"]["images_per_call"] == 64
