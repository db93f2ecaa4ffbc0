"""Turning engine results into shard samples (the worker side)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.corpus.index import ShardTask
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.writer import write_shard
from pipeline.run.worker import samples_from_result
from smi_core.result import InversionResult

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
