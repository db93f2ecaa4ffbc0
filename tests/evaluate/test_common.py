"""A corpus finds its checkpoint teacher where its run found it (pipeline.evaluate.common), end to end through
the real CLI: ``run`` on a manifest naming ``teachers/vit.safetensors``, then ``distill`` with no ``--teacher``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.checksums import file_sha256
from pipeline.cli import main
from tests.evaluate.test_distill import write_imagefolder
from tests.run.tiny_run import ROOT, make_teacher_file


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_distill_from_the_manifests_folder_finds_a_checkpoint_teacher_in_a_subfolder(tmp_path: Path) -> None:
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
    done = _cli(argv, cwd=m)  # from the manifest's folder, no --teacher
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["teacher"] == str(teacher) and report["labels"] == "live teacher"
    assert report["teacher_top1"] is not None and report["eval_images"] == 4

    # elsewhere, or once the file is not the one the corpus was made with, the error names the file and sha256
    elsewhere = _cli(argv, cwd=tmp_path)
    assert elsewhere.returncode == 2
    (reason,) = elsewhere.stderr.strip().splitlines()
    assert f"teachers/vit.safetensors with sha256 {recorded['checkpoint_sha256']}" in reason
    assert "--teacher SPEC" in reason
    shutil.copy(m / "tiny.yaml", teacher)  # another file under the recorded path
    changed = _cli(argv, cwd=m)
    assert changed.returncode == 2 and recorded["checkpoint_sha256"] in changed.stderr
