"""The GPU path's bookkeeping, checked on the CPU: what a batch brings back, FLOPs counted once per
worker, and ``gpus_per_worker`` honoured exactly in the actor options."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.corpus.index import ShardTask
from pipeline.errors import UserError
from pipeline.run import runner, worker
from pipeline.run.spec import load_spec
from pipeline.run.worker import ShardWorker, WorkerConfig
from smi_core.result import InversionResult


def test_a_batch_result_carries_only_what_a_shard_stores() -> None:
    names = {f.name for f in dataclasses.fields(InversionResult)}
    assert "masked_images" not in names and "pixel_mask" not in names
    assert {"images", "kept_mask", "logits", "loss", "confidence"} <= names


def test_flops_are_counted_once_per_worker(tmp_path, teacher_file, monkeypatch) -> None:
    calls = []
    real = worker.schedule_flops

    def counted(*args, **kwargs):
        calls.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "schedule_flops", counted)
    spec = load_spec(_manifest(tmp_path, teacher_file))
    config = WorkerConfig(teacher_spec=spec.teacher_spec, out=str(tmp_path / "out"), inversion=spec.inversion_config(),
                          method="smi", batch_size=2, image_format="png", num_classes=4, threads=1)
    w = ShardWorker(config)
    first = w.run(ShardTask(0, 0, "alpha", 0, 4, 1))  # two batches of 2
    second = w.run(ShardTask(1, 1, "beta", 0, 3, 2))  # batches of 2 and 1
    assert calls == [2, 1]
    assert first["flops"] == 2 * w.batch_flops(2) and second["flops"] == w.batch_flops(2) + w.batch_flops(1) > 0


def _manifest(tmp_path, teacher_file):
    from tests.run.tiny_run import write_manifest

    return write_manifest(tmp_path, teacher_file, inversion={"method": "smi", "iterations": 6, "batch_size": 2,
                                                             "schedule": {"iterations": [2, 4], "ratios": [0.3, 0.3]}})


class _FakeRay:
    def __init__(self, gpus: int, cpus: int = 16) -> None:
        self.node = {"Alive": True, "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}

    def cluster_resources(self) -> dict:
        return dict(self.node["Resources"])

    def nodes(self) -> list:
        return [self.node]


@pytest.mark.parametrize("per, expected", [(None, (4, 1.0)), (1, (4, 1.0)), (0.5, (8, 0.5)), (0.25, (16, 0.25))])
def test_gpus_per_worker_is_honoured_exactly(tmp_path, teacher_file, per, expected) -> None:
    spec = load_spec(_manifest(tmp_path, teacher_file))
    spec = dataclasses.replace(spec, manifest=spec.manifest.model_copy(update={
        "device": "cuda", "resources": spec.resources.model_copy(update={"gpus_per_worker": per, "cpus_per_worker": 1,
                                                                          "workers": "auto"})}))
    device, count, options, _ = runner._worker_layout(spec, _FakeRay(gpus=4), None)
    assert device == "cuda" and (count, options["num_gpus"]) == expected and options["num_cpus"] == 1


@pytest.mark.parametrize("per", [0, 2])
def test_unusable_gpus_per_worker_exits_2(tmp_path, teacher_file, per) -> None:
    spec = load_spec(_manifest(tmp_path, teacher_file))
    spec = dataclasses.replace(spec, manifest=spec.manifest.model_copy(update={
        "device": "cuda", "resources": spec.resources.model_copy(update={"gpus_per_worker": per})}))
    with pytest.raises(UserError, match="resources.gpus_per_worker"):
        runner._worker_layout(spec, _FakeRay(gpus=4), None)


