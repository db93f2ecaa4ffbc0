"""Turning engine results into shard samples (the worker side)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.corpus.index import ShardTask
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.writer import write_shard
from pipeline.corpus.tar_io import read_tar
from pipeline.run.plan import flops_per_image
from pipeline.run.spec import load_spec
from pipeline.run.worker import ShardWorker, WorkerConfig, samples_from_result
from smi_core.result import InversionResult
from tests.run.tiny_run import write_manifest

TASK = ShardTask(shard_id=1, label=2, class_name="class2", first_index=8, count=4, seed=77)


def make_result(batch: int = 2, size: int = 8) -> InversionResult:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    images[0, 0, 0, 0] = 0.5 / 255  # exactly half a step: rounds half to even -> 0
    images[0, 0, 0, 1] = 1.5 / 255  # -> 2
    kept = torch.zeros(batch, 4, dtype=torch.bool)
    kept[:, [0, 3]] = True
    return InversionResult(
        images=images, labels=torch.full((batch,), 2), kept_mask=kept,
        logits=torch.randn(batch, 3, generator=g),
        loss=torch.tensor([0.5, 0.25]), confidence=torch.tensor([0.9, 0.8]), grid=(2, 2), patch_size=(4, 4),
        iterations=10, flops=1, seconds=1.0,
    )


def test_samples_from_result(tmp_path: Path) -> None:
    result = make_result()
    samples = samples_from_result(result, TASK, offset=2, teacher="toy", method="smi", seconds_per_image=0.5)
    assert [s.key for s in samples] == [sample_key(2, 10), sample_key(2, 11)]
    s = samples[0]
    assert s.image.shape == (8, 8, 3) and s.image.dtype == np.uint8
    assert s.image[0, 0, 0] == 0 and s.image[0, 1, 0] == 2
    expected = (result.images[1] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(samples[1].image, expected)
    assert s.kept_patches == [0, 3] and s.patch_grid == (2, 2) and s.seed == 77 and s.shard_id == 1
    assert s.final_loss == 0.5 and s.soft_label.dtype == np.float32 and s.generation_seconds == 0.5
    write_shard(CorpusLayout(tmp_path), 1, samples, num_classes=3)

    result.images[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        samples_from_result(result, TASK, offset=0, teacher="t", method="m", seconds_per_image=0.1)
    with pytest.raises(ValueError, match="does not fit"):
        samples_from_result(make_result(), TASK, offset=3, teacher="t", method="m", seconds_per_image=0.1)
    other = dataclasses.replace(TASK, label=1)
    with pytest.raises(ValueError, match="labels"):
        samples_from_result(make_result(), other, offset=0, teacher="t", method="m", seconds_per_image=0.1)


def test_a_rebirth_shard_inverts_a_target_per_run_of_images(tmp_path: Path, teacher_file: Path) -> None:
    """Rebirth yields three images per target here (two stops): batches of 4 and 1 images invert 2 and 1
    targets, the surplus images of the last target are dropped, and a target's images come in stop order."""
    manifest = write_manifest(tmp_path, teacher_file, images_per_class=5, images_per_shard=5, inversion={
        "method": "rebirth", "iterations": 6, "batch_size": 4, "schedule": {"iterations": [2, 4]}})
    spec = load_spec(manifest)
    assert spec.inversion_config().selection.schedule.ratios == (1 / 3, 1 / 2)  # equal shares when left out
    config = WorkerConfig(teacher_spec=spec.teacher_spec, out=str(tmp_path / "out"), inversion=spec.inversion_config(),
                          method="rebirth", batch_size=4, image_format="png", num_classes=4, threads=1)
    w = ShardWorker(config)
    stats = w.run(ShardTask(0, 1, "beta", 0, 5, 7))
    assert stats["samples"] == 5 and stats["flops"] == w.batch_flops(2) + w.batch_flops(1) > 0
    records = dict(read_tar(w.layout.storage, w.layout.tar(0)))
    kept = [json.loads(records[sample_key(1, i)]["json"])["kept_patches"] for i in range(5)]
    assert [len(k) for k in kept] == [16, 11, 6, 16, 16]  # the tiny teacher's 4 x 4 patches, 5 leave per stop
    assert set(kept[2]) < set(kept[1])
    # the plan shares a run's FLOPs out over its three images: SMI's run on the same token schedule, divided by 3
    smi = load_spec(write_manifest(tmp_path, teacher_file, images_per_class=5, images_per_shard=5, inversion={
        "method": "smi", "iterations": 6, "batch_size": 4, "rejoin": None,
        "schedule": {"iterations": [2, 4], "ratios": [1 / 3, 1 / 2]}}))
    assert flops_per_image(spec) == flops_per_image(smi) // 3 > 0
