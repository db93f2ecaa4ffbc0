"""A tiny run for the run tests: a checkpoint teacher, a manifest around it, digests of what it wrote, and
:class:`TinyCorpus`, the default manifest's corpus made once per test run (the ``tiny_corpus`` fixture)."""

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import yaml

from pipeline.teachers.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CPUS = 2  # the shared local Ray's CPUs (tests/run/conftest.py): the manifests below ask for 2 workers of 1 CPU
ARCH_KWARGS = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=4)


def write_manifest(tmp_path: Path, teacher: Path, **overrides) -> Path:
    spec = {
        "name": "tiny",
        "teacher": str(teacher),
        "classes": "all",
        "images_per_class": 3,
        "images_per_shard": 2,
        "inversion": {"method": "smi", "iterations": 12, "batch_size": 2,
                      "schedule": {"iterations": [2, 4, 6, 8], "ratios": [0.3, 0.3, 0.3, 0.3]}},
        "seed": 7,
        "device": "cpu",
        "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    }
    spec.update(overrides)
    path = tmp_path / f"manifest-{len(list(tmp_path.glob('manifest-*')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# a run long enough to be killed mid-way with SIGKILL once two of its 8 shards are complete
KILL_RUN = dict(images_per_class=4, images_per_shard=2,
                inversion={"method": "smi", "iterations": 40, "batch_size": 2,
                           "schedule": {"iterations": [4, 8, 16, 24], "ratios": [0.3] * 4}})


def tar_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").glob("*.tar"))}


def digests(out: Path, *folders: str) -> dict[str, str]:
    """sha256 of every file under ``folders`` of ``out``, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((out / folder).rglob("*")) if p.is_file()}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def make_teacher_file(folder: Path) -> Path:
    """A 4-class tiny ViT checkpoint with a strong random head (its inversions converge fast)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCH_KWARGS).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    path = folder / "tiny.safetensors"
    save_checkpoint(model, path, arch="vit_tiny_patch16_224", model_kwargs=ARCH_KWARGS,
                    class_names=["alpha", "beta", "gamma", "delta"], license="apache-2.0")
    return path


def released_by(ray, timeout: float = 60.0) -> None:
    """Until every CPU of ``ray`` is free again (a run releases its actors when Ray is not its own)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < LOCAL_CPUS:
        assert time.monotonic() < deadline, f"the run's workers still hold CPUs: {ray.available_resources()}"
        time.sleep(0.2)


@dataclass(frozen=True)
class TinyCorpus:
    """``smi-synth run MANIFEST --out OUT --json`` of :func:`write_manifest`'s defaults on the shared local Ray,
    made once for the test run: read it, or :meth:`copy` it before changing anything."""

    manifest: Path
    teacher: Path
    out: Path
    report: dict  # the run's --json report

    def copy(self, dest: Path) -> Path:
        """A copy of the corpus at ``dest`` (to resume into, or to change)."""
        shutil.copytree(self.out, dest)
        return dest
