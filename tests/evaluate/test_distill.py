"""``smi-synth distill`` end to end on tiny corpora, with a tiny in-memory ViT teacher (no toy teacher build)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import cli
from pipeline.evaluate import common as evaluation
from pipeline.evaluate import distill
from tests.cli_stderr import cli_lines

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_teacher(num_classes: int = 3, img_size: int = 16) -> SimpleNamespace:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(123)
    model = VisionTransformer(img_size=img_size, patch_size=4, num_classes=num_classes, embed_dim=16, depth=1,
                              num_heads=2, mlp_ratio=2.0).eval()
    return SimpleNamespace(model=model, teacher_id="tiny", num_classes=num_classes,
                           class_names=[f"class{i}" for i in range(num_classes)], img_size=(img_size, img_size),
                           mean=MEAN, std=STD, license="other")


@pytest.fixture
def teachers(monkeypatch: pytest.MonkeyPatch) -> dict[str, SimpleNamespace]:
    """Specs 'tiny3' / 'tiny5' (and the corpus's 'toy') resolve to tiny ViTs; others are unknown."""
    table = {"toy": tiny_teacher(3), "tiny3": tiny_teacher(3), "tiny5": tiny_teacher(5)}

    def load(spec: str, *, device: str = "cpu") -> SimpleNamespace:
        if spec not in table:
            raise evaluation.UserError(f"teacher {spec!r}: unknown")
        return table[spec]

    for mod in ("pipeline.evaluate.common", "pipeline.evaluate.distill", "pipeline.evaluate.quantize"):
        monkeypatch.setattr(f"{mod}.load_teacher_spec", load, raising=False)
    return table


def write_imagefolder(root: Path, classes: list[str], per_class: int = 3, size: int = 16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, dict | None, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    report = json.loads(lines[-1]) if rc == 0 and "--json" in argv and lines else None
    return rc, report, err


def run_interrupted_then_resumed(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                 epoch: int) -> tuple[int, dict | None, str]:
    """Run ``argv`` with a Ctrl-C as epoch ``epoch`` starts (it must exit 1), then run it again: the second run."""
    from pipeline.evaluate import distill

    real_progress, calls = distill.progress, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_progress(*args, **kwargs)

    monkeypatch.setattr(distill, "progress", interrupt)
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and "interrupted" in err
    monkeypatch.setattr(distill, "progress", real_progress)
    return run_cli(argv, capsys)


def test_distill_end_to_end_stored_soft_labels(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"])
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--eval", str(folder),
                            "--epochs", "2", "--batch-size", "5", "--stored-labels", "--json"], capsys)
    assert rc == 0, err
    for key in ("student_top1", "teacher_top1", "images", "seconds", "epochs", "student_params"):
        assert key in rep
    assert 0.0 <= rep["student_top1"] <= 1.0 and 0.0 <= rep["teacher_top1"] <= 1.0
    # 12 images held in memory: each epoch is 3 full batches of 5
    assert rep["images"] == 2 * 3 * 5 and rep["epochs"] == 2 and rep["eval_images"] == 9
    assert rep["labels"] == "stored" and rep["steps"] == 2 * 3 and rep["chosen"]["teacher"] == "--stored-labels"


def test_distill_is_deterministic_and_sparse_path_runs(tmp_path, make_corpus, teachers):
    layout = make_corpus(tmp_path / "c")
    info = evaluation.corpus_info(layout.root)
    cfg = distill.DistillConfig(epochs=1, batch_size=4, sparse=True, show_progress=False)

    def train() -> torch.Tensor:
        torch.manual_seed(0)
        student = distill.build_student("toy-student", num_classes=3, img_size=16)
        distill.check_sparse_student(student, info, (4, 4))
        res = distill.distill(student, info, cfg, mean=MEAN, std=STD)
        assert res.images_seen == 12 and np.isfinite(res.losses[0])
        return torch.cat([p.detach().flatten() for p in res.model.parameters()])

    assert torch.equal(train(), train())


def test_distill_live_teacher_and_sparse_cli(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class1"])
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3",
                            "--sparse", "--eval", str(folder), "--epochs", "1", "--json"], capsys)
    assert rc == 0, err
    assert rep["sparse"] is True and 0.0 <= rep["student_top1"] <= 1.0


def test_distill_live_teacher_labels_augmented_and_adversarial_views(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3",
                            "--epochs", "2", "--batch-size", "4", "--adversarial-eps", "0.5", "--json"], capsys)
    assert rc == 0, err
    assert rep["images"] == 2 * 12  # corpus images, not the doubled batch of views


def test_live_teacher_views_change_what_the_student_learns(tmp_path, make_corpus, teachers):
    layout = make_corpus(tmp_path / "c")
    info = evaluation.corpus_info(layout.root)

    def train(augment) -> torch.Tensor:
        torch.manual_seed(0)
        student = distill.build_student("toy-student", num_classes=3, img_size=16)
        cfg = distill.DistillConfig(epochs=1, batch_size=4, show_progress=False, augment=augment)
        res = distill.distill(student, info, cfg, mean=MEAN, std=STD, teacher=teachers["tiny3"].model)
        return torch.cat([p.detach().flatten() for p in res.model.parameters()])

    plain = train(distill.NO_AUGMENT)
    assert torch.equal(plain, train(distill.NO_AUGMENT))
    assert not torch.equal(plain, train(distill.KDAugmentConfig()))
    # the adversarial views' gradient goes through the teacher to the pixels, never into its parameters
    assert all(p.grad is None for p in teachers["tiny3"].model.parameters())
    assert not torch.equal(train(distill.KDAugmentConfig()), train(distill.KDAugmentConfig(adversarial_eps=0.0)))


@pytest.mark.parametrize("flag, value", [("--colour-jitter", "1.5"), ("--max-shift", "-1"), ("--adversarial-eps", "-1"),
                                         ("--mix", "1.5")])
def test_bad_view_settings_exit_2_naming_the_flag(tmp_path, make_corpus, teachers, capsys, flag, value):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3",
                          "--epochs", "1", flag, value], capsys)
    assert rc == 2 and flag in err and len(cli_lines(err)) == 1


def test_sparse_distill_refuses_a_non_vit_student(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "resnet10t", "--sparse", "--epochs", "1"], capsys)
    assert rc == 2 and "--sparse" in err and "ViT" in err


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "no such corpus"),
        ("not_corpus", "corpus"),
        ("teacher_classes", "has 5 classes, the corpus has 3"),
        ("eval_unknown", "class folders not in the corpus: zebra"),
        ("student", "unknown timm model"),
    ],
)
def test_distill_bad_inputs_exit_2(tmp_path, make_corpus, teachers, capsys, case, needle):
    layout = make_corpus(tmp_path / "c")
    root, extra = str(layout.root), []
    if case == "missing":
        root = str(tmp_path / "nope")
    elif case == "not_corpus":
        (tmp_path / "empty").mkdir()
        root = str(tmp_path / "empty")
    elif case == "teacher_classes":
        extra = ["--teacher", "tiny5"]
    elif case == "eval_unknown":
        extra = ["--eval", str(write_imagefolder(tmp_path / "ev", ["class0", "zebra"], per_class=1))]
    student = "no-such-model-xyz" if case == "student" else "toy-student"
    rc, _, err = run_cli(["distill", root, "--student", student, "--epochs", "1", *extra], capsys)
    assert rc == 2, err
    assert needle in err and len(cli_lines(err)) == 1


def test_toy_eval_maps_names_to_corpus_ids_and_keeps_only_corpus_classes():
    ev = evaluation.eval_source("toy", class_ids={"bar": 7, "circle": 2}, img_size=16, toy_images=40)
    labels = torch.cat([lab for _, lab in ev.batches(16)])
    assert ev.num_images == len(labels) > 0 and set(labels.tolist()) <= {7, 2}
    images = torch.cat([img for img, _ in ev.batches(16)])
    assert images.shape[1:] == (3, 16, 16) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    with pytest.raises(evaluation.UserError, match="none of the toy classes"):
        evaluation.eval_source("toy", class_ids={"class0": 0}, img_size=16)
