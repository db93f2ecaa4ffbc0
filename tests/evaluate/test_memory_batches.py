"""A small corpus decoded once and dealt from memory in full batches; distillation takes that path when it
fits, and streams otherwise."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from pipeline.corpus.loader import load_corpus
from pipeline.evaluate import distill as distillation
from pipeline.evaluate.common import corpus_info
from pipeline.evaluate.memory_batches import MemoryBatches, decoded_bytes, fits_in_memory, load_in_memory
from tests.evaluate.test_distill import MEAN, STD, run_cli, teachers, tiny_teacher  # noqa: F401 (fixture)


def batches_of(n: int, batch_size: int, seed: int = 0) -> MemoryBatches:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return MemoryBatches(images, torch.arange(n), torch.zeros(n, 3), torch.ones(n, 1, 1, dtype=torch.bool),
                         batch_size, seed)


def ids(batch: tuple[torch.Tensor, ...]) -> list[int]:
    return batch[0][:, 0, 0, 0].long().tolist()


def test_every_epoch_is_full_batches_covering_every_image():
    memory = batches_of(10, 4)
    batches = list(memory.epoch(0))
    assert memory.steps_per_epoch == 3 and [len(b[0]) for b in batches] == [4, 4, 4]  # no tail batch of 2
    seen = Counter(i for b in batches for i in ids(b))
    assert set(seen) == set(range(10)) and sum(seen.values()) == 12
    for images, labels, soft, masks in batches:  # rows stay together
        assert labels.tolist() == images[:, 0, 0, 0].long().tolist() and soft.shape == (4, 3) and masks.all()


def test_the_order_is_seeded_per_epoch():
    assert [ids(b) for b in batches_of(10, 4).epoch(3)] == [ids(b) for b in batches_of(10, 4).epoch(3)]
    assert batches_of(10, 4).order(0).tolist() != batches_of(10, 4).order(1).tolist()
    assert batches_of(10, 4, seed=1).order(0).tolist() != batches_of(10, 4).order(0).tolist()


def test_a_batch_larger_than_the_corpus_repeats_images():
    (batch,) = list(batches_of(3, 8).epoch(0))
    assert len(batch[0]) == 8 and set(ids(batch)) == {0, 1, 2}


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        batches_of(3, 0)
    with pytest.raises(ValueError, match="no images"):
        batches_of(0, 2)


def test_budget():
    assert decoded_bytes(10, 16) == 10 * 3 * 16 * 16 * 4
    assert fits_in_memory(10, 16, decoded_bytes(10, 16)) and not fits_in_memory(10, 16, decoded_bytes(10, 16) - 1)


def test_loads_the_corpus_as_the_loader_reads_it(tmp_path, make_corpus):
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=4)
    memory = load_in_memory(layout.root, num_images=12, img_size=16, batch_size=5)
    assert memory is not None and memory.images.shape == (12, 3, 16, 16) and memory.batch_size == 5
    streamed = list(load_corpus(layout.root, soft_labels=True, kept_mask=True))
    key = sorted((int(s[1]), round(s[0].sum().item(), 3)) for s in streamed)
    assert sorted(zip(memory.labels.tolist(), [round(v, 3) for v in memory.images.sum((1, 2, 3)).tolist()])) == key
    assert torch.equal(memory.soft[0], streamed[0][2]) and memory.masks.dtype == torch.bool
    assert load_in_memory(layout.root, num_images=12, img_size=16, batch_size=5, budget_bytes=0) is None


def _distill(layout, teacher, **cfg) -> distillation.DistillResult:
    info = corpus_info(layout.root)
    torch.manual_seed(0)
    student = distillation.build_student("toy-student", num_classes=3, img_size=16, patch_size=4)
    config = distillation.DistillConfig(steps=4, batch_size=5, show_progress=False, **cfg)
    return distillation.distill(student, info, config, mean=MEAN, std=STD, teacher=teacher.model)


def test_distill_holds_a_small_corpus_in_memory_and_streams_otherwise(tmp_path, make_corpus):
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=4)
    teacher = tiny_teacher(3)
    memory = _distill(layout, teacher)
    assert memory.in_memory and memory.steps == 4 and memory.images_seen == 4 * 5  # full batches only
    again = _distill(layout, teacher)
    assert all(torch.equal(a, b) for a, b in zip(memory.model.state_dict().values(), again.model.state_dict().values()))
    streamed = _distill(layout, teacher, memory_budget=0)
    assert not streamed.in_memory and streamed.steps == 4 and streamed.images_seen == 5 + 5 + 2 + 5  # a tail of 2
    assert not _distill(layout, teacher, workers=1).in_memory  # loader workers: streamed


def test_default_workers_are_resolved_by_distill_from_the_memory_budget(tmp_path, make_corpus):
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=4)
    teacher = tiny_teacher(3)
    auto = _distill(layout, teacher, workers=None)
    assert auto.in_memory and auto.workers == 0
    info = corpus_info(layout.root)
    too_big = distillation.DistillConfig(workers=None, memory_budget=0)
    assert distillation.resolve_workers(too_big, info, world=1) == distillation.DEFAULT_STREAM_WORKERS
    assert distillation.resolve_workers(distillation.DistillConfig(workers=None), info, world=2) == 2  # DDP streams
    assert distillation.resolve_workers(distillation.DistillConfig(workers=3), info, world=1) == 3
    streamed = _distill(layout, teacher, workers=None, memory_budget=0)
    assert not streamed.in_memory and streamed.workers == distillation.DEFAULT_STREAM_WORKERS


def test_cli_workers_default_to_none_for_a_corpus_in_memory(tmp_path, make_corpus, teachers, capsys):  # noqa: F811
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=4)
    base = ["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3", "--steps", "2", "--json"]
    rc, rep, _ = run_cli(base, capsys)
    assert rc == 0 and rep["in_memory"] is True and rep["workers"] == 0
    rc, rep, _ = run_cli([*base, "--workers", "1"], capsys)
    assert rc == 0 and rep["in_memory"] is False and rep["workers"] == 1


def test_a_streamed_checkpoint_is_not_resumed_from_memory(tmp_path, make_corpus, teachers, capsys):  # noqa: F811
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=4)
    base = ["distill", str(layout.root), "--student", "toy-student", "--teacher", "tiny3", "--epochs", "1",
            "--checkpoint", str(tmp_path / "ck")]
    assert run_cli([*base, "--workers", "1"], capsys)[0] == 0
    rc, _, err = run_cli([*base, "--epochs", "1"], capsys)
    assert rc == 2 and "in_memory" in err
