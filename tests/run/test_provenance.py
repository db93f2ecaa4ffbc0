"""Provenance records (pipeline.run.provenance) and what a worker puts in every shard's stats."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from pipeline.corpus.index import ShardTask, read_stats
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import LEASE_NAME
from pipeline.run.provenance import LOCAL_DIR, LOCAL_HOSTS, PACKAGES, collect, mismatches
from pipeline.run.worker import ShardWorker, WorkerConfig
from pipeline.teachers.checkpoint import save_checkpoint
from pipeline.teachers.loading import load_teacher
from smi_core import InversionConfig, SelectionConfig, StopSchedule
from smi_core.version import ENGINE_VERSION
from tests.hub.fake_hub import FakeHub
from tests.run.tiny_run import write_manifest

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


# ------------------------------------------------------------------------------------------- published bytes

SITE_PATCH = '''"""Test hook: every Python process started with this folder on PYTHONPATH runs on host $SMI_TEST_HOST."""
import os, platform, socket
_name = os.environ["SMI_TEST_HOST"]
_uname = os.uname
socket.gethostname = lambda: _name
platform.node = lambda: _name
os.uname = lambda: os.uname_result((_uname().sysname, _name, *tuple(_uname())[2:]))
'''


def published_files(out: Path) -> list[Path]:
    """Everything under OUT that publish may send: all files but the run's own (lease, local notes)."""
    return [p for p in sorted(out.rglob("*")) if p.is_file() and p.relative_to(out).parts[0] != LOCAL_DIR
            and p.name != LEASE_NAME]


def leaks(out: Path, secrets: list[str]) -> list[str]:
    return [f"{p.relative_to(out)}: {s}" for p in published_files(out) for s in secrets if s.encode() in p.read_bytes()]


def test_a_shard_names_no_host_and_no_local_path(tmp_path: Path, teacher_file: Path, monkeypatch) -> None:
    """The writer path in this process, on a host with a unique name: only the local notes name it."""
    host = f"host-{secrets.token_hex(6)}"
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    out = tmp_path / "out"
    inversion = InversionConfig(iterations=4, selection=SelectionConfig(
        kind="smi", schedule=StopSchedule(iterations=(2,), ratios=(0.5,))))
    config = WorkerConfig(teacher_spec=str(teacher_file), out=str(out), inversion=inversion, method="smi",
                          batch_size=2, image_format="png", num_classes=4, threads=1)
    ShardWorker(config).run(ShardTask(3, 1, "class_1", 0, 2, 123))
    assert [p.relative_to(out).as_posix() for p in published_files(out)] == [
        "data/train-000003.tar", "metadata/train-000003.parquet", "stats/train-000003.json"]
    assert leaks(out, [host, str(tmp_path), str(teacher_file.parent), str(ROOT), sys.prefix]) == []
    noted = [json.loads(line) for line in (out / LOCAL_HOSTS).read_text().splitlines()]
    assert [(n["shard"], n["host"], n["pid"]) for n in noted] == [(3, host, os.getpid())]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_corpus_made_on_a_named_host_publishes_neither_the_name_nor_its_paths(tmp_path: Path,
                                                                                 teacher_file: Path) -> None:
    """A real ``smi-synth run`` (driver and Ray workers all on a host with a unique name), ``preview`` and
    ``publish`` to the test Hub: every file publish may send, and every byte it did send, is scanned for the
    host name and for the local paths."""
    host = f"host-{secrets.token_hex(6)}"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_PATCH)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(SMI_TEST_HOST=host, PYTHONPATH=os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]))
    out = tmp_path / "corpus"
    manifest = write_manifest(tmp_path, teacher_file)
    for args in (["run", str(manifest), "--out", str(out)], ["preview", str(out), "--per-class", "2"]):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=500)
        assert done.returncode == 0, done.stderr[-3000:]
    assert {p.relative_to(out).parts[0] for p in published_files(out)} >= {
        "data", "metadata", "stats", "preview", "manifest.json", "shardindex.json", "README.md"}
    assert leaks(out, [host, str(tmp_path), str(teacher_file.parent), str(ROOT), sys.prefix,
                       f"{Path.home()}/"]) == []
    noted = {json.loads(line)["host"] for line in (out / LOCAL_HOSTS).read_text().splitlines()}
    assert noted == {host}  # the workers did run on the named host: only the local notes say so
    token = "hf_SmiSynthFakeToken0123456789abcdef"
    with FakeHub(token) as hub:  # what publish actually sends, byte for byte
        hf = {k: v for k, v in env.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
        hf.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"),
                  HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN=token)
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "publish", str(out), "--repo-id", "ns/x"],
                              cwd=ROOT, env=hf, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        uploaded = hub.files("ns/x")
    assert {"README.md", "manifest.json", "shardindex.json"} <= set(uploaded)
    assert {path.split("/")[0] for path in uploaded} >= {"data", "metadata", "stats", "preview"}
    secret = [host, str(tmp_path), str(teacher_file.parent), str(ROOT), sys.prefix, f"{Path.home()}/"]
    assert [f"{path}: {s}" for path, data in uploaded.items() for s in secret if s.encode() in data] == []
