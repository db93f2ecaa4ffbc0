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




def _shard_records(out) -> dict:
    from pipeline.corpus.layout import CorpusLayout
    from pipeline.corpus.tar_io import read_tar

    layout = CorpusLayout(out)
    return dict(read_tar(layout.storage, layout.tar(0)))


def test_packed_batches_write_the_shard_the_batch_by_batch_worker_writes(tmp_path, teacher_file, monkeypatch) -> None:
    """pack_batches=3 inverts a shard's batches of 2, 2 and 1 in one engine call; each batch keeps its own
    generator, so the shard holds the same samples (pixels within one uint8 step: kernel rounding)."""
    import io
    import json

    import numpy as np
    from PIL import Image

    calls = []
    real = worker.invert_packed
    monkeypatch.setattr(worker, "invert_packed", lambda model, batches, *a, **k: calls.append(len(batches))
                        or real(model, batches, *a, **k))
    spec = load_spec(_manifest(tmp_path, teacher_file))
    records, stats = {}, {}
    for pack in (1, 3):
        config = WorkerConfig(teacher_spec=spec.teacher_spec, out=str(tmp_path / f"out{pack}"),
                              inversion=spec.inversion_config(), method="smi", batch_size=2, pack_batches=pack,
                              image_format="png", num_classes=4, threads=1)
        stats[pack] = ShardWorker(config).run(ShardTask(0, 2, "gamma", 0, 5, 11))
        records[pack] = _shard_records(tmp_path / f"out{pack}")
    assert calls == [1, 1, 1, 3]
    assert stats[1]["flops"] == stats[3]["flops"] > 0 and stats[1]["samples"] == stats[3]["samples"] == 5
    assert sorted(records[1]) == sorted(records[3])
    for key, one in records[1].items():
        three = records[3][key]
        a, b = (np.asarray(Image.open(io.BytesIO(r["png"])), dtype=np.int16) for r in (one, three))
        assert np.abs(a - b).max() <= 1, key
        assert one["cls"] == three["cls"]
        meta1, meta3 = (json.loads(r["json"]) for r in (one, three))
        assert meta1["kept_patches"] == meta3["kept_patches"] and meta1["seed"] == meta3["seed"]


def test_compile_and_pack_batches_enter_the_spec_hash_only_when_set(tmp_path, teacher_file) -> None:
    base = load_spec(_manifest(tmp_path, teacher_file))
    inversion = {"method": "smi", "iterations": 6, "batch_size": 2, "schedule": {"iterations": [2, 4],
                                                                                 "ratios": [0.3, 0.3]}}
    from tests.run.tiny_run import write_manifest

    def spec_with(**fields):
        return load_spec(write_manifest(tmp_path, teacher_file, inversion={**inversion, **fields}))

    assert spec_with(compile="off", pack_batches=1).spec_hash() == base.spec_hash()  # corpora made before keep theirs
    packed, compiled = spec_with(pack_batches=2), spec_with(compile="default")
    assert packed.spec_hash() != base.spec_hash() != compiled.spec_hash() != packed.spec_hash()
    # a resume across modes is refused naming the field (runner.check_resumable reports these differences)
    assert base.hash_differences(packed.hashed_fields()) == ["inversion.pack_batches: 2 -> None"]
    assert base.hash_differences(compiled.hashed_fields()) == ["inversion.compile: 'default' -> None"]
    assert packed.pack_batches == 2 and compiled.inversion_config().compile == "default"
    with pytest.raises(UserError, match="inversion.pack_batches"):
        spec_with(pack_batches=0)
    with pytest.raises(UserError, match="inversion.compile"):
        spec_with(compile="max-autotune")
