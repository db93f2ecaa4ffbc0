"""A corpus finds its checkpoint teacher where its run found it (pipeline.evaluate.common), end to end through
the real CLI: ``run`` on a manifest naming ``teachers/vit.safetensors``, then ``distill`` with no ``--teacher``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.checksums import file_sha256
from pipeline.cli import main
from tests.cli_stderr import cli_lines
from tests.evaluate.test_distill import write_imagefolder
from tests.run.tiny_run import make_teacher_file


def test_distill_from_the_manifests_folder_finds_a_checkpoint_teacher_in_a_subfolder(
        tmp_path: Path, local_ray, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    m = tmp_path / "M"
    teacher = make_teacher_file(m / "teachers").rename(m / "teachers" / "vit.safetensors")
    manifest = m / "tiny.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "tiny", "teacher": "teachers/vit.safetensors", "classes": [0, 1], "images_per_class": 2,
        "images_per_shard": 2, "seed": 7, "device": "cpu",
        "inversion": {"method": "smi", "iterations": 4, "batch_size": 2,
                      "schedule": {"iterations": [1, 2], "ratios": [0.3, 0.3]}},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
    }))
    out = tmp_path / "elsewhere" / "corpus"
    assert main(["run", str(manifest), "--out", str(out)]) == 0

    recorded = json.loads((out / "manifest.json").read_text())["spec"]["teacher"]
    assert recorded["spec"] == "teachers/vit.safetensors"  # relative to the manifest's folder, as it was given
    assert recorded["checkpoint_sha256"] == file_sha256(teacher)
    assert str(tmp_path) not in (out / "manifest.json").read_text()  # no absolute path is published

    evalset = write_imagefolder(tmp_path / "eval", ["alpha", "beta"], per_class=2, size=16)
    argv = ["distill", str(out), "--eval", str(evalset), "--student", "toy-student", "--steps", "2", "--json"]
    code, out_text, err = cli(argv, cwd=m)  # from the manifest's folder, no --teacher
    assert code == 0, err
    report = json.loads(out_text.strip().splitlines()[-1])
    assert report["teacher"] == str(teacher) and report["labels"] == "live teacher"
    assert report["teacher_top1"] is not None and report["eval_images"] == 4

    # elsewhere, or once the file is not the one the corpus was made with, the error names the file and sha256
    code, _, err = cli(argv, cwd=tmp_path)
    assert code == 2
    (reason,) = cli_lines(err)
    assert f"teachers/vit.safetensors with sha256 {recorded['checkpoint_sha256']}" in reason
    assert "--teacher SPEC" in reason
    shutil.copy(m / "tiny.yaml", teacher)  # another file under the recorded path
    code, _, err = cli(argv, cwd=m)
    assert code == 2 and recorded["checkpoint_sha256"] in err
