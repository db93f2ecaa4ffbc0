"""Fake quantization and ``smi-synth quantize`` end to end with a tiny in-memory teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.evaluate import quantize
from tests.evaluate.test_distill import run_cli, teachers, write_imagefolder  # noqa: F401 - fixture re-export


def _linear_error(bits: int) -> float:
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    x = torch.randn(64, 32)
    qm = quantize.quantize_model(nn.Sequential(lin), bits, bits)
    quantize.calibrate(qm, [x])
    with torch.no_grad():
        ref = lin(x)
        return float((qm.model(x) - ref).abs().max() / ref.abs().max())


def test_fake_quant_linear_16_bits_is_identity_2_bits_is_coarse():
    assert _linear_error(16) < 1e-3
    assert _linear_error(8) < 0.05
    assert _linear_error(2) > 0.2


def test_fake_quant_weight_levels_and_activation_range():
    w = torch.randn(4, 10)
    q = quantize.fake_quant_weight(w, 2)  # signed 2 bits: {-1, 0, 1} * scale per row
    for row, qrow in zip(w, q):
        scale = row.abs().max()
        assert set(torch.round(qrow / scale).tolist()) <= {-1.0, 0.0, 1.0}
    x = torch.linspace(-1, 3, 101)
    xq = quantize.fake_quant_tensor(x, -1.0, 3.0, 4)
    assert len(torch.unique(xq)) <= 16 and (xq - x).abs().max() <= 4 / 15 / 2 + 1e-6


def test_quantize_end_to_end(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"])
    rc, rep, err = run_cli(["quantize", str(layout.root), "--model", "tiny3", "--w-bits", "8", "--a-bits", "8",
                            "--eval", str(folder), "--calib-images", "8", "--json"], capsys)
    assert rc == 0, err
    for key in ("fp_top1", "quant_top1", "noise_calib_top1"):
        assert 0.0 <= rep[key] <= 1.0
    assert rep["w_bits"] == 8 and rep["a_bits"] == 8 and rep["calib_images"] == 8


@pytest.mark.parametrize("bits", [["--w-bits", "1"], ["--a-bits", "17"]])
def test_quantize_bits_out_of_range_exit_2(tmp_path, make_corpus, teachers, capsys, bits):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["quantize", str(layout.root), "--model", "tiny3", *bits], capsys)
    assert rc == 2 and "must be in [2, 16]" in err


def test_quantize_class_count_mismatch_exit_2(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["quantize", str(layout.root), "--model", "tiny5"], capsys)
    assert rc == 2 and "has 5 classes, the corpus has 3" in err


def test_quantize_with_a_real_checkpoint_teacher(tmp_path, make_corpus, capsys):
    """No monkeypatching: the model comes through pipeline.teachers.loading.load_teacher from a .safetensors file."""
    teacher_mod = pytest.importorskip("pipeline.teachers.checkpoint")
    import timm

    kwargs = {"img_size": 16, "patch_size": 4, "num_classes": 3, "embed_dim": 16, "depth": 1, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    ckpt = teacher_mod.save_checkpoint(model, tmp_path / "t.safetensors", arch="vit_tiny_patch16_224",
                                       model_kwargs=kwargs, class_names=["class0", "class1", "class2"],
                                       license="other", mean=(0.5,) * 3, std=(0.5,) * 3)
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class2"])
    rc, rep, err = run_cli(["quantize", str(layout.root), "--model", str(ckpt), "--w-bits", "4", "--a-bits", "8",
                            "--eval", str(folder), "--calib-images", "4", "--json"], capsys)
    assert rc == 0, err
    assert rep["calib_images"] == 4 and all(0.0 <= rep[k] <= 1.0 for k in ("fp_top1", "quant_top1", "noise_calib_top1"))


def test_calibration_images_span_every_class(tmp_path, make_corpus):
    """250-image-style class shards (here 4 shards of 12 per class): 20 images from 10 classes cover all 10."""
    layout = make_corpus(tmp_path / "c", num_classes=10, shards_per_class=4, per_shard=12, image_size=8)
    samples = quantize.calibration_samples(layout.root, 25, seed=0)
    labels = [lab for _, lab in samples]
    assert len(samples) == 25 and set(labels) == set(range(10))
    counts = sorted(labels.count(c) for c in range(10))
    assert counts[0] == 2 and counts[-1] == 3  # 25 = 10 x 2 + 5 extra
    assert labels != sorted(labels)  # batches mix classes
    few = [lab for _, lab in quantize.calibration_samples(layout.root, 4, seed=1)]
    assert len(set(few)) == 4  # fewer images than classes: distinct classes
    many = quantize.calibration_samples(layout.root, 300, seed=0)
    assert len(many) == 300 and {lab for _, lab in many} == set(range(10))  # quotas cross shard boundaries
    first = samples[0][0]
    assert first.shape == (3, 8, 8) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0


def test_quantize_reports_calibration_classes(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c", shards_per_class=3, per_shard=4)
    rc, rep, err = run_cli(["quantize", str(layout.root), "--model", "tiny3", "--calib-images", "6", "--json"], capsys)
    assert rc == 0, err
    assert rep["calib_images"] == 6 and rep["calib_classes"] == 3
