"""The replay pool of teacher-labelled views (pipeline.evaluate.view_pool) and distillation with it."""

from __future__ import annotations

import pytest
import torch

from pipeline.evaluate import checkpoints
from pipeline.evaluate.view_pool import ViewPool, pool_capacity
from tests.evaluate.test_distill import run_cli, run_interrupted_then_resumed, teachers  # noqa: F401 - fixture


def _views(first: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` views whose pixels and logits all hold their number, counting from ``first``."""
    ids = torch.arange(first, first + n, dtype=torch.float32)
    return ids.view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(), ids.view(n, 1).expand(n, 5).clone()


def test_the_oldest_views_are_overwritten_and_draws_come_from_the_views_held() -> None:
    pool = ViewPool(4)
    pool.add(*_views(0, 3))
    assert (pool.filled, pool.cursor) == (3, 3)
    views, logits = pool.draw(64, torch.Generator().manual_seed(0))
    assert set(views[:, 0, 0, 0].tolist()) == {0.0, 1.0, 2.0}  # never an unwritten row
    assert torch.equal(views[:, 0, 0, 0], logits[:, 0])  # each view with its own logits
    pool.add(*_views(3, 3))  # 3 and 4 overwrite the oldest, 0 and 1
    assert (pool.filled, pool.cursor) == (4, 2)
    views, _ = pool.draw(256, torch.Generator().manual_seed(1))
    assert set(views[:, 0, 0, 0].tolist()) == {2.0, 3.0, 4.0, 5.0}
    again, _ = pool.draw(256, torch.Generator().manual_seed(1))
    assert torch.equal(views, again)  # the generator decides the draw


def test_a_pool_state_restores_the_same_draws() -> None:
    pool = ViewPool(5)
    pool.add(*_views(0, 4))
    pool.add(*_views(4, 3))
    copy = ViewPool(5)
    copy.load(pool.state(), torch.device("cpu"))
    assert (copy.filled, copy.cursor) == (pool.filled, pool.cursor)
    for a, b in zip(pool.draw(20, torch.Generator().manual_seed(2)), copy.draw(20, torch.Generator().manual_seed(2)),
                    strict=True):
        assert torch.equal(a, b)
    copy.add(*_views(7, 1))
    pool.add(*_views(7, 1))
    assert torch.equal(copy.views, pool.views)
    empty = ViewPool(5)
    empty.load(ViewPool(5).state(), torch.device("cpu"))
    assert empty.filled == 0


def test_bad_use_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ViewPool(0)
    pool = ViewPool(2)
    with pytest.raises(ValueError, match="empty"):
        pool.draw(1, torch.Generator())
    with pytest.raises(ValueError, match="do not fit"):
        pool.add(*_views(0, 3))
    with pytest.raises(ValueError, match="logits"):
        pool.add(_views(0, 2)[0], _views(0, 1)[1])
    with pytest.raises(ValueError, match="does not fit"):
        ViewPool(2).load(_state_of(5), torch.device("cpu"))


def _state_of(n: int) -> dict[str, torch.Tensor]:
    pool = ViewPool(n)
    pool.add(*_views(0, n))
    return pool.state()


def test_capacity_is_a_few_training_batches_within_the_byte_budget() -> None:
    assert pool_capacity(128, (3, 32, 32)) == 8 * 128
    assert pool_capacity(128, (3, 224, 224), budget_bytes=256 << 20) == (256 << 20) // (4 * 3 * 224 * 224)
    assert pool_capacity(128, (3, 224, 224), budget_bytes=1) == 128  # never less than one training batch


def test_distilling_with_a_pool_resumes_to_the_same_student(tmp_path, make_corpus, teachers, capsys, monkeypatch):
    """Half of each step's views fresh: 2 corpus images a step at batch 4, so a pass over 24 images is 12 steps;
    an interruption in the second pass resumes from the checkpoint, pool included, to the same student."""
    from pipeline.teachers.loading import load_teacher

    layout = make_corpus(tmp_path / "c", shards_per_class=2)
    base = ["distill", str(layout.root), "--student", "toy-student", "--steps", "18", "--batch-size", "4",
            "--workers", "0", "--fresh-views", "0.5", "--json"]
    rc, straight, err = run_cli([*base, "--save", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "ck-a")], capsys)
    assert rc == 0, err
    assert straight["steps"] == 18 and straight["epochs"] == 2 and straight["images"] == 18 * 2
    parts, meta = checkpoints.load_state(tmp_path / "ck-a" / checkpoints.STATE_FILE)
    assert meta["fingerprint"]["fresh_views"] == 0.5
    # 18 steps labelled 2 images and their 2 adversarial views each: 72 views, of which a pool of 8 training
    # batches (of 4 images and 4 adversarial views) holds the newest 64
    assert len(parts["pool"]["views"]) == 64 and parts["pool"]["position"].tolist() == [64, 72 % 64]
    argv = [*base, "--save", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "ck-b")]
    rc, resumed, err = run_interrupted_then_resumed(argv, capsys, monkeypatch, epoch=2)
    assert rc == 0, err
    assert resumed["resumed_from_epoch"] == 1 and resumed["steps"] == 18
    a, b = (load_teacher(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))
    assert a.weights_sha256 == b.weights_sha256
    # the same checkpoint without the pool is another run
    no_pool = [arg for arg in argv if arg not in ("--fresh-views", "0.5")]
    rc, _, err = run_cli(no_pool, capsys)
    assert rc == 2 and "fresh_views" in err


@pytest.mark.parametrize("flag", ["--stored-labels", "--sparse"])
def test_a_pool_without_live_teacher_views_is_refused(tmp_path, make_corpus, teachers, capsys, flag):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--fresh-views", "0.5", flag], capsys)
    assert rc == 2 and "--fresh-views" in err and flag in err


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_fresh_share_outside_0_to_1_exits_2(tmp_path, make_corpus, teachers, capsys, value):
    layout = make_corpus(tmp_path / "c")
    rc, _, err = run_cli(["distill", str(layout.root), "--student", "toy-student", "--fresh-views", value], capsys)
    assert rc == 2 and "--fresh-views" in err
