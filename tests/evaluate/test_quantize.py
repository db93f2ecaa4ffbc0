"""``smi-synth quantize`` end to end with a tiny in-memory teacher: the table of bit settings by calibration
set, the corpus's own teacher by default, real calibration images, ``--save``/``--load``."""

from __future__ import annotations

import pytest

from pipeline.evaluate import quantize
from tests.evaluate.test_distill import run_cli, teachers, write_imagefolder  # noqa: F401 - fixture re-export


def test_quantize_table_with_the_corpus_teacher_and_real_calibration(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"])
    real = write_imagefolder(tmp_path / "real", ["class0", "class1", "class2"], per_class=4)
    rc, rep, err = run_cli(["quantize", str(layout.root), "--eval", str(folder), "--real-calib", str(real),
                            "--calib-images", "6", "--json"], capsys)
    assert rc == 0, err
    assert rep["model"] == "toy" and "manifest" in rep["teacher_why"]  # the corpus's own teacher
    assert rep["bits"] == ["W8A8", "W6A6", "W4A8", "W4A4"] and set(rep["rows"]) == set(rep["bits"])
    assert rep["calibration"] == {"corpus": 6, "noise": 6, "real": 6} and rep["calib_classes"] == 3
    for row in rep["rows"].values():
        assert set(row) == {"corpus", "noise", "real"} and all(0.0 <= v <= 1.0 for v in row.values())
    assert 0.0 <= rep["fp_top1"] <= 1.0 and rep["eval_images"] == 9
    rc, _, _ = run_cli(["quantize", str(layout.root), "--eval", str(folder), "--calib-images", "6",
                        "--bits", "W4A4"], capsys)
    assert rc == 0


def test_save_then_load_gives_the_same_top1(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"], per_class=6)
    rc, rep, err = run_cli(["quantize", str(layout.root), "--model", "tiny3", "--eval", str(folder), "--bits",
                            "W4A4,W8A8", "--calib-images", "6", "--save", str(tmp_path / "q"), "--json"], capsys)
    assert rc == 0, err
    assert set(rep["saved"]) == {"W4A4", "W8A8"} and (tmp_path / "q" / "W4A4" / "model.safetensors").is_file()
    for label in ("W4A4", "W8A8"):
        rc, loaded, err = run_cli(["quantize", str(layout.root), "--load", str(tmp_path / "q" / label),
                                   "--eval", str(folder), "--json"], capsys)
        assert rc == 0, err
        assert loaded["bits"] == label and loaded["top1"] == rep["rows"][label]["corpus"] == loaded["saved_top1"]


@pytest.mark.parametrize("argv, message", [
    (["--bits", "W1A8"], "bits must be in [2, 8]"),
    (["--bits", "8x8"], "expected settings like W4A8"),
    (["--calib-images", "0"], "must be >= 1"),
    (["--model", "tiny5"], "has 5 classes, the corpus has 3"),
])
def test_bad_input_exits_2(tmp_path, make_corpus, teachers, capsys, argv, message):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["quantize", str(layout.root), *argv], capsys)
    assert rc == 2 and message in err


def test_real_calibration_must_not_be_the_eval_folder(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"])
    rc, _, err = run_cli(["quantize", str(layout.root), "--eval", str(folder), "--real-calib", str(folder)], capsys)
    assert rc == 2 and "overlaps the evaluation folder" in err


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
    rc, rep, err = run_cli(["quantize", str(layout.root), "--model", str(ckpt), "--bits", "W4A8",
                            "--eval", str(folder), "--calib-images", "4", "--json"], capsys)
    assert rc == 0, err
    assert rep["calib_images"] == 4 and all(0.0 <= v <= 1.0 for v in rep["rows"]["W4A8"].values())


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


def test_older_single_setting_api_still_quantizes(teachers):
    """benchmarks/quality.py's quantize_model + calibrate: the same quantizer, one setting."""
    import torch

    qm = quantize.quantize_model(teachers["tiny3"].model, 4, 8)
    assert quantize.calibrate(qm, [torch.randn(4, 3, 16, 16), torch.randn(2, 3, 16, 16)]) == 6
    assert qm.model is not None and qm.model.settings.label == "W4A8"
    assert qm.model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_corpus_calibration_set_carries_the_recorded_kept_patches(tmp_path, make_corpus):
    """The SMI corpus's samples record their kept patches (half of a 4x4 grid here): the calibration set
    carries them beside the same images calibration_samples draws, normalised."""
    import json

    import torch

    from pipeline.corpus.loader import iter_samples

    layout = make_corpus(tmp_path / "c")
    cs, labels = quantize.corpus_calibration_set(layout.root, 6, (0.5,) * 3, (0.5,) * 3, seed=2)
    samples = quantize.calibration_samples(layout.root, 6, seed=2)
    assert labels == [lab for _, lab in samples] and len(cs) == 6
    assert torch.allclose(cs.images, torch.stack([img for img, _ in samples]) * 2 - 1)
    assert cs.patches is not None and cs.patches.shape == (6, 4, 4) and int(cs.patches.sum()) == 6 * 8
    recorded = {json.dumps(r["kept_mask"].tolist()) for r in iter_samples(layout.root)}
    assert all(json.dumps(m.tolist()) in recorded for m in cs.patches)
