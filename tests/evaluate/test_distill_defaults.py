"""``smi-synth distill OUT --eval DIR`` with no other flag: the corpus's own teacher live, the default student,
a step budget sized to the corpus, each choice printed and in the --json object; flags override each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.evaluate import common as evaluation
from pipeline.evaluate import defaults
from tests.cli_stderr import cli_lines
from tests.evaluate.test_distill import run_cli, run_interrupted_then_resumed, teachers, write_imagefolder  # noqa: F401

CLASSES = ["class0", "class1", "class2"]


def test_no_flags_use_the_corpus_teacher_live_the_default_student_and_a_sized_budget(
        tmp_path, make_corpus, teachers, capsys, monkeypatch):
    layout = make_corpus(tmp_path / "c")  # 12 images; manifest teacher "toy" (a tiny ViT here)
    monkeypatch.setattr(defaults, "MIN_STEPS", 3)  # keep the test short: 100 passes x 12 / 64 -> 19 steps
    monkeypatch.setattr(defaults, "VIEWS_PER_CLASS", 400)  # 3 classes -> 1,200 views, as many as the images
    folder = write_imagefolder(tmp_path / "eval", CLASSES)
    rc, rep, err = run_cli(["distill", str(layout.root), "--eval", str(folder), "--workers", "0", "--json"], capsys)
    assert rc == 0, err
    assert rep["teacher"] == "toy" and rep["labels"] == "live teacher"
    assert rep["student"] == defaults.default_student(evaluation.corpus_info(layout.root)) == "test_resnet"
    assert rep["steps"] == defaults.default_steps(12, num_classes=3, batch_size=64) == 19
    assert rep["epochs"] == 19  # one batch per epoch
    assert rep["student_top1"] is not None and rep["teacher_top1"] is not None and rep["eval_images"] == 9
    assert set(rep["chosen"]) == {"teacher", "student", "budget", "eval"}
    assert "manifest" in rep["chosen"]["teacher"] and "default" in rep["chosen"]["student"]
    assert "12 images of 3 classes at batch 64" in rep["chosen"]["budget"] and rep["chosen"]["eval"] == "--eval"
    # one line per choice (on stderr under --json: stdout ends with the JSON object)
    lines = [line for line in err.splitlines() if line.startswith("distill: ")]
    assert [line.split(":")[1].strip() for line in lines] == ["labels", "student", "budget", "eval"]
    assert "19 steps" in lines[2] and "teacher toy (live)" in lines[0]


def test_without_json_the_choices_go_to_stdout(tmp_path, make_corpus, teachers, capsys):
    from pipeline import cli

    layout = make_corpus(tmp_path / "c")
    assert cli.main(["distill", str(layout.root), "--student", "toy-student", "--steps", "2", "--workers", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].strip() for line in out[:4]] == ["labels", "student", "budget", "eval"]
    assert "student: toy-student; --student" in out[1] and "2 steps; --steps" in out[2]
    assert out[-1].startswith("student toy-student") and "2 steps" in out[-1]


def test_flags_override_every_choice(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    rc, rep, err = run_cli(["distill", str(layout.root), "--teacher", "tiny3", "--student", "toy-student",
                            "--steps", "5", "--batch-size", "4", "--workers", "0", "--json"], capsys)
    assert rc == 0, err
    assert rep["teacher"] == "tiny3" and rep["student"] == "toy-student" and rep["steps"] == 5
    assert rep["epochs"] == 2 and rep["images"] == 12 + 2 * 4  # 3 steps of 4, then 2 of the second pass
    assert rep["chosen"] == {"teacher": "--teacher", "student": "--student", "budget": "--steps",
                             "eval": rep["chosen"]["eval"]}
    rc, rep, err = run_cli(["distill", str(layout.root), "--stored-labels", "--student", "toy-student",
                            "--epochs", "1", "--workers", "0", "--json"], capsys)
    assert rc == 0, err
    assert rep["labels"] == "stored" and rep["epochs"] == 1 and rep["steps"] == 1


@pytest.mark.parametrize(("argv", "needle"), [
    (["--steps", "3", "--epochs", "1"], "--steps: give --steps or --epochs, not both"),
    (["--teacher", "tiny3", "--stored-labels"], "--stored-labels: give --teacher"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
])
def test_conflicting_or_bad_budget_flags_exit_2(tmp_path, make_corpus, teachers, capsys, argv, needle):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), *argv], capsys)
    assert rc == 2 and needle in err and len(cli_lines(err)) == 1


def test_a_corpus_teacher_that_cannot_be_loaded_says_what_to_do(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    manifest = json.loads((layout.root / "manifest.json").read_text())
    manifest["spec"]["teacher"] = "gone.safetensors"  # a checkpoint teacher that is nowhere to be found
    (layout.root / "manifest.json").write_text(json.dumps(manifest))
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--steps", "1"], capsys)
    assert rc == 2 and len(cli_lines(err)) == 1
    assert "the corpus's teacher cannot be loaded" in err and "--teacher SPEC" in err and "--stored-labels" in err
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--steps", "1", "--stored-labels"],
                         capsys)
    assert rc == 0, err


def test_recorded_teacher_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm teachers come back with the tag they were made with; a checkpoint is found beside the corpus only
    when its sha256 is the recorded one."""
    from pipeline.checksums import file_sha256

    def info(**kw) -> evaluation.CorpusInfo:
        base = dict(root=tmp_path / "corpus", teacher_spec=None, num_classes=3, img_size=16, patch_size=4,
                    mean=None, std=None, class_ids={}, num_images=0)
        return evaluation.CorpusInfo(**{**base, **kw})

    assert evaluation.resolve_recorded_teacher(info()) is None
    assert evaluation.resolve_recorded_teacher(info(teacher_spec="toy")) == "toy"
    timm_info = info(teacher_spec="timm:deit_tiny_patch16_224", teacher_resolved_id="timm:deit_tiny_patch16_224.fb_in1k")
    assert evaluation.resolve_recorded_teacher(timm_info) == "timm:deit_tiny_patch16_224.fb_in1k"
    (tmp_path / "corpus").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"the teacher")
    right = file_sha256(tmp_path / "w.safetensors")
    found = evaluation.resolve_recorded_teacher(info(teacher_spec="w.safetensors", teacher_sha256=right))
    assert found == str(tmp_path / "w.safetensors")
    wrong = info(teacher_spec="w.safetensors", teacher_sha256="0" * 64)
    with pytest.raises(evaluation.UserError, match=f"w.safetensors with sha256 {'0' * 64} is not in"):
        evaluation.resolve_recorded_teacher(wrong)  # not that file, and no other: the error names file and sha
    assert evaluation.recorded_teacher_if_found(wrong) is None
    # the path as the run's manifest gave it, relative to its folder: found below the working directory
    (tmp_path / "m" / "teachers").mkdir(parents=True)
    (tmp_path / "w.safetensors").rename(tmp_path / "m" / "teachers" / "w.safetensors")
    nested = info(teacher_spec="teachers/w.safetensors", teacher_sha256=right)
    monkeypatch.chdir(tmp_path / "m")
    assert evaluation.resolve_recorded_teacher(nested) == str(tmp_path / "m" / "teachers" / "w.safetensors")
    # a corpus is someone else's bytes: no path out of its folders, no checkpoint without a recorded sha256
    outside = [str(tmp_path / "m" / "teachers" / "w.safetensors"), "../m/teachers/w.safetensors",
               "teachers/../../m/teachers/w.safetensors", "~/w.safetensors", "C:/w.safetensors", "teachers\\w.x"]
    monkeypatch.chdir(tmp_path / "m" / "teachers")
    for spec in outside:
        with pytest.raises(evaluation.CorpusError, match="outside the corpus's folders.*--teacher SPEC"):
            evaluation.resolve_recorded_teacher(info(teacher_spec=spec, teacher_sha256=right))
    with pytest.raises(evaluation.CorpusError, match="records no sha256 for w.safetensors.*--teacher SPEC"):
        evaluation.resolve_recorded_teacher(info(teacher_spec="w.safetensors"))


def test_default_steps_fit_the_corpus_size() -> None:
    assert defaults.default_steps(80, num_classes=2, batch_size=64) == defaults.MIN_STEPS
    assert defaults.default_steps(10_000, num_classes=10, batch_size=64) == 15_625  # 100 views of each image
    assert defaults.default_steps(1_000_000, num_classes=10, batch_size=64) == defaults.MAX_STEPS
    for bad in ((0, 10, 64), (80, 0, 64), (80, 10, 0)):
        with pytest.raises(ValueError):
            defaults.default_steps(bad[0], num_classes=bad[1], batch_size=bad[2])


@pytest.mark.parametrize("per_class", [8, 32, 64])
def test_the_budget_grows_with_the_classes_at_equal_images_per_class(per_class: int) -> None:
    """Ten times the classes at equal images per class: ten times the steps (10 classes: the 3,000 steps the
    10-class figures were measured with), up to the cap (100 classes)."""
    ten = defaults.step_budget(10 * per_class, num_classes=10, batch_size=64)
    thirty = defaults.step_budget(30 * per_class, num_classes=30, batch_size=64)
    hundred = defaults.step_budget(100 * per_class, num_classes=100, batch_size=64)
    assert ten.steps == 3000 and thirty.steps == 9000 and hundred.steps == 20_000 == defaults.MAX_STEPS
    assert "of 100 classes at batch 64" in hundred.why() and "(the cap)" in hundred.why()
    assert defaults.step_budget(60 * per_class, num_classes=60, batch_size=64).steps == 18_000
    # at a larger batch the same views take fewer steps, down to the floor
    assert defaults.step_budget(30 * per_class, num_classes=30, batch_size=128).steps == 4500
    assert defaults.step_budget(10 * per_class, num_classes=10, batch_size=128).steps == defaults.MIN_STEPS


def test_the_budget_says_which_term_and_bound_chose_it() -> None:
    assert "(the floor)" in defaults.step_budget(16, num_classes=2, batch_size=64).why()
    assert "(the cap)" in defaults.step_budget(1_000_000, num_classes=1000, batch_size=64).why()
    line = defaults.step_budget(10_000, num_classes=10, batch_size=64).why()
    assert "10,000 images of 10 classes" in line
    assert "max(100 views x 10,000 images, 19,200 views x 10 classes) / 64, within [3,000, 20,000]" in line


def test_a_step_budget_resumes_from_a_checkpoint_to_the_same_student(tmp_path, make_corpus, teachers, capsys,
                                                                     monkeypatch):
    from pipeline.teachers.loading import load_teacher

    layout = make_corpus(tmp_path / "c", shards_per_class=2)  # 24 images: 6 steps of 4 per pass
    base = ["distill", str(layout.root), "--student", "toy-student", "--steps", "9", "--batch-size", "4",
            "--workers", "0", "--json"]
    rc, straight, err = run_cli([*base, "--save", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "ck-a")], capsys)
    assert rc == 0, err
    assert straight["steps"] == 9 and straight["epochs"] == 2
    argv = [*base, "--save", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "ck-b")]
    rc, resumed, err = run_interrupted_then_resumed(argv, capsys, monkeypatch, epoch=2)
    assert rc == 0, err
    assert resumed["resumed_from_epoch"] == 1 and resumed["steps"] == 9
    a, b = (load_teacher(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))  # a saved student loads as a teacher
    assert a.weights_sha256 == b.weights_sha256
