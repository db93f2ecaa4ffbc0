"""Provenance records (pipeline.run.provenance) and what a worker puts in every shard's stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from pipeline.corpus.index import ShardTask, read_stats
from pipeline.corpus.layout import CorpusLayout
from pipeline.run.provenance import PACKAGES, collect, mismatches
from pipeline.run.worker import ShardWorker, WorkerConfig
from pipeline.teachers.checkpoint import save_checkpoint
from pipeline.teachers.loading import load_teacher
from smi_core import InversionConfig, SelectionConfig, StopSchedule
from smi_core.version import ENGINE_VERSION

ROOT = Path(__file__).resolve().parents[2]
KWARGS = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=4)


def record(**changes) -> dict:
    base = collect(teacher_id="toy:v1", weights_sha256="ab" * 32, engine_version=1, device="cpu",
                   dtype="float32", threads=1, determinism={"deterministic_algorithms": False})
    for key, value in changes.items():
        target = base
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return base


def test_record_names_versions_and_device_but_no_machine() -> None:
    r = record()
    assert set(r["packages"]) == set(PACKAGES) and r["packages"]["torch"] == torch.__version__  # with its build (+cpu, +cu130)
    assert r["packages"]["timm"] == timm.__version__
    assert r["device"] == "cpu" and r["threads"] == 1 and r["python"]
    assert r["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # what picks the kernels, not the model
    assert r["teacher"] == {"id": "toy:v1", "weights_sha256": "ab" * 32} and r["engine_version"] == 1
    assert not {"host", "cpu", "user"} & set(r)  # published: nothing that names the machine
    json.dumps(r)  # JSON-able: it goes into stats and manifest.json


def test_mismatches_name_each_differing_field_and_ignore_the_host() -> None:
    assert mismatches(record(), record(host="another-node", python="3.99.0")) == []
    older = {**record(), "host": "node-a", "cpu": "Intel(R) Xeon(R)"}  # a record made before they were dropped
    del older["cpu_capability"]
    assert mismatches(older, record()) == [] and mismatches(record(), record(cpu_capability="NO AVX")) == [
        f"cpu_capability: {record()['cpu_capability']} -> NO AVX"]
    diffs = mismatches(record(), record(**{"packages.torch": "9.9.9", "teacher.weights_sha256": "cd" * 32}))
    assert diffs == [f"packages.torch: {record()['packages']['torch']} -> 9.9.9",
                     f"teacher.weights_sha256: {'ab' * 32} -> {'cd' * 32}"]
    gpu = {**record(), "device": "cuda", "gpu": "NVIDIA H200"}
    assert "gpu: not recorded -> NVIDIA H200" in mismatches(record(), gpu)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KWARGS).eval()
    path = tmp_path_factory.mktemp("teacher") / "tiny.safetensors"
    save_checkpoint(model, path, arch="vit_tiny_patch16_224", model_kwargs=KWARGS, class_names=None, license=None)
    return path


def test_every_shard_carries_its_workers_provenance(tmp_path: Path, teacher_file: Path) -> None:
    inversion = InversionConfig(iterations=4, selection=SelectionConfig(
        kind="smi", schedule=StopSchedule(iterations=(2,), ratios=(0.5,))))
    config = WorkerConfig(teacher_spec=str(teacher_file), out=str(tmp_path), inversion=inversion, method="smi",
                          batch_size=2, image_format="png", num_classes=4, threads=1)
    worker = ShardWorker(config)
    stats = worker.run(ShardTask(0, 1, "class_1", 0, 2, 123))
    on_disk = read_stats(CorpusLayout(tmp_path), 0)["provenance"]
    assert on_disk == stats["provenance"] == worker.provenance()
    assert on_disk["teacher"]["weights_sha256"] == load_teacher(str(teacher_file)).weights_sha256
    assert on_disk["teacher"]["id"].startswith("file:tiny.safetensors@")
    assert on_disk["engine_version"] == ENGINE_VERSION and on_disk["device"] == "cpu" and on_disk["threads"] == 1
    assert on_disk["determinism"] == {"deterministic_algorithms": False}  # CPU workers are left as they are


def test_gpu_workers_ask_for_deterministic_kernels() -> None:
    """What a CUDA worker sets, in a fresh process (the settings are process-wide; no GPU needed to set them)."""
    code = ("import json, os, torch\nfrom pipeline.run.worker import deterministic_settings\n"
            "first = deterministic_settings(torch.device('cuda'))\n"
            "os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':16:8'  # a value the user set is kept\n"
            "print(json.dumps([first, deterministic_settings(torch.device('cuda'))]))")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    first, second = json.loads(out.strip().splitlines()[-1])
    assert first == {"deterministic_algorithms": True, "warn_only": True, "cublas_workspace_config": ":4096:8",
                     "cudnn_deterministic": True, "cudnn_benchmark": False}
    assert second["cublas_workspace_config"] == ":16:8"
