"""Distillation as training: a student you keep (``--save``), resumable checkpoints, AMP, DataLoader workers,
and DDP under ``torchrun`` (CPU, gloo, 2 processes) with the equal-rank loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from pipeline.evaluate import checkpoints, distill
from pipeline.evaluate import common as evaluation
from pipeline.teachers.checkpoint import save_checkpoint
from tests.cli_stderr import cli_lines
from tests.evaluate.test_distill import MEAN, STD, run_cli, teachers, write_imagefolder  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / checkpoints.STUDENT_WEIGHTS))


def test_saved_student_loads_as_a_teacher_and_scores_the_same(tmp_path, make_corpus, teachers, capsys):
    from pipeline.teachers.loading import describe_teacher, load_teacher

    layout = make_corpus(tmp_path / "c", shards_per_class=2)
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"], per_class=8)
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--eval", str(folder),
                            "--epochs", "2", "--batch-size", "4", "--save", str(tmp_path / "student"), "--json"], capsys)
    assert rc == 0, err
    saved = Path(rep["saved"])
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16] and config["label_names"] == ["class0", "class1", "class2"]
    # the project's teacher loader (real, not the fixture): same metadata, same top-1 on the same images
    spec = str(saved / "model.safetensors")
    info = describe_teacher(spec)
    assert info.num_classes == 3 and info.class_names == ("class0", "class1", "class2") and info.img_size == (16, 16)
    teacher = load_teacher(spec)
    eval_set = evaluation.eval_source(str(folder), class_ids={f"class{i}": i for i in range(3)}, img_size=16)
    score = evaluation.top1(teacher.model, eval_set, mean=teacher.mean, std=teacher.std)
    assert score == rep["student_top1"] and teacher.mean == MEAN and teacher.std == STD
    # timm.create_model + load_state_dict, as a user would
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    model.load_state_dict(load_file(spec))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), teacher.model(x))


def test_saved_cnn_student_rebuilds_with_timm(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "resnet10t", "--epochs", "1", "--workers", "0",
                            "--save", str(tmp_path / "s"), "--json"], capsys)
    assert rc == 0, err
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and "img_size" not in config["model_args"]
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    model.load_state_dict(load_file(str(tmp_path / "s" / "model.safetensors")))
    assert model.eval()(torch.rand(1, 3, 16, 16)).shape == (1, 3)


def test_interrupted_distillation_resumes_to_the_same_student(tmp_path, make_corpus, teachers, capsys, monkeypatch):
    layout = make_corpus(tmp_path / "c", shards_per_class=2)
    base = ["distill", str(layout.root), "--student", "toy-student", "--epochs", "3", "--batch-size", "4",
            "--workers", "2", "--json"]
    rc, straight, err = run_cli([*base, "--save", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "ck-a")], capsys)
    assert rc == 0, err
    assert straight["resumed_from_epoch"] == 0
    real_progress, calls = distill.progress, []

    def interrupt_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_progress(*args, **kwargs)

    monkeypatch.setattr(distill, "progress", interrupt_in_epoch_3)
    argv = [*base, "--save", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "ck-b"), "--checkpoint-every", "2"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and "interrupted" in err and not (tmp_path / "b").exists()
    _, meta = checkpoints.load_state(tmp_path / "ck-b" / checkpoints.STATE_FILE)
    assert meta["epoch"] == 2
    monkeypatch.setattr(distill, "progress", real_progress)
    rc, resumed, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert resumed["resumed_from_epoch"] == 2 and resumed["images"] == straight["images"] == 3 * 24
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint from another run is refused, naming the flag and what differs
    rc, _, err = run_cli([*base[:-1], "--lr", "0.02", "--checkpoint", str(tmp_path / "ck-b")], capsys)
    assert rc == 2 and "--checkpoint" in err and "lr" in err and len(cli_lines(err)) == 1


def test_amp_code_path_and_workers(tmp_path, make_corpus, teachers, capsys):
    """--amp on runs the autocast path (bfloat16 on CPU); DataLoader workers see each sample once per epoch."""
    layout = make_corpus(tmp_path / "c", shards_per_class=3, per_shard=3)
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3",
                            "--epochs", "1", "--amp", "on", "--workers", "2", "--json"], capsys)
    assert rc == 0, err
    assert rep["amp"] is True and rep["images"] == 27 and rep["final_loss"] == rep["final_loss"]  # not NaN
    rc, rep, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--epochs", "1", "--json"], capsys)
    assert rc == 0 and rep["amp"] is False and rep["workers"] == 0 and rep["in_memory"] is True  # 27 images fit


@pytest.mark.parametrize("argv, needle", [(["--workers", "-1"], "--workers"), (["--checkpoint-every", "0"],
                                                                                  "--checkpoint-every")])
def test_bad_training_flags_exit_2(tmp_path, make_corpus, teachers, capsys, argv, needle):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", *argv], capsys)
    assert rc == 2 and needle in err


def test_save_onto_a_file_is_refused(tmp_path, make_corpus, teachers, capsys):
    layout = make_corpus(tmp_path / "c")
    (tmp_path / "file").write_text("x")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--save", str(tmp_path / "file")],
                         capsys)
    assert rc == 2 and "--save" in err


@pytest.mark.slow  # two torchrun processes, each importing torch and building a student
@pytest.mark.parametrize("live", [False, True], ids=["stored-labels", "live-teacher-adversarial"])
def test_ddp_under_torchrun_two_cpu_processes(tmp_path, make_corpus, live):
    """5 one-class shards over 2 ranks x 1 worker: equal batches per rank (no hang), one synchronised student;
    with the live teacher, each step's two backward passes (clean and adversarial views) synchronise once."""
    layout = make_corpus(tmp_path / "c", num_classes=5, shards_per_class=1, per_shard=4)
    manifest = json.loads((layout.root / "manifest.json").read_text())
    manifest["spec"]["teacher"] = {"spec": "timm:vit_tiny_patch16_224", "num_classes": 5, "img_size": 16,
                                   "patch_size": 4, "mean": list(MEAN), "std": list(STD)}
    (layout.root / "manifest.json").write_text(json.dumps(manifest))
    labels = ["--stored-labels"]
    if live:  # a real checkpoint teacher of the corpus's 5 classes, read by each rank
        kwargs = {"img_size": 16, "patch_size": 4, "num_classes": 5, "embed_dim": 16, "depth": 1, "num_heads": 2}
        teacher = save_checkpoint(timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs),
                                  tmp_path / "t.safetensors", arch="vit_tiny_patch16_224", model_kwargs=kwargs,
                                  class_names=[f"c{i}" for i in range(5)], license="other", mean=MEAN, std=STD)
        labels = ["--teacher", str(teacher), "--adversarial-eps", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pipeline.cli", "distill", str(layout.root), "--student", "toy-student", "--epochs", "2",
           "--batch-size", "4", "--workers", "1", "--save", str(tmp_path / "s"), "--checkpoint", str(tmp_path / "ck"),
           *labels, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 reports
    rep = reports[0]
    assert rep["world_size"] == 2 and rep["images"] == 2 * 2 * 12  # 2 epochs x 2 ranks x 3 shards' worth each
    from pipeline.teachers.loading import load_teacher

    model = load_teacher(str(tmp_path / "s" / "model.safetensors")).model  # a saved student loads as a teacher
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 5)


def test_distill_and_quantize_from_a_corpus_on_s3(s3_url, make_corpus, teachers, tmp_path, capsys):
    """The commands take an s3:// corpus (moto's S3 server) as they take a folder; workers read it too."""
    make_corpus(s3_url, shards_per_class=2, per_shard=3)
    rc, rep, err = run_cli(["distill", s3_url, "--student", "toy-student", "--epochs", "1", "--workers", "2",
                            "--checkpoint", str(tmp_path / "ck"), "--save", str(tmp_path / "s"), "--json"], capsys)
    assert rc == 0, err
    assert rep["images"] == 18 and rep["corpus_images"] == 18 and (tmp_path / "s" / "model.safetensors").is_file()
    rc, rep, err = run_cli(["quantize", s3_url, "--model", "tiny3", "--calib-images", "6", "--json"], capsys)
    assert rc == 0, err
    assert rep["calib_images"] == 6 and rep["calib_classes"] == 3
