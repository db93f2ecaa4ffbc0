"""The suite's teachers: the shared trainer, tiny builds, the cache, and load_teacher round trips."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.teachers import suite
from pipeline.teachers.loading import load_teacher
from pipeline.teachers.trainer import TrainRecipe, train_classifier, warmup_cosine, warmup_steps
from smi_core.vit import vit_geometry

TINY = TrainRecipe(steps=3, batch_size=8)


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(100, warmup_steps(100, 0.05))
    assert f(0) == pytest.approx(0.2 * 0.5 * (1 + math.cos(0)))
    assert f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.04)))
    assert f(100) == pytest.approx(0.0) and max(f(s) for s in range(100)) <= 1.0


def test_warmup_cosine_after_warmup_starts_the_cosine_when_the_ramp_ends() -> None:
    f = warmup_cosine(100, 10, cosine_after_warmup=True)
    assert [f(s) for s in (0, 9)] == pytest.approx([1 / 11, 10 / 11])
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert warmup_cosine(5, 0, cosine_after_warmup=True)(0) == pytest.approx(1.0)  # no warm-up at all


def test_train_classifier_is_deterministic_and_learns_a_separable_task() -> None:
    teacher = suite.suite_teacher("digits64")

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:  # class 0: dark images, class 1: bright ones
        g = torch.Generator().manual_seed(step)
        labels = torch.randint(0, 2, (16,), generator=g)
        return (0.2 + 0.6 * labels.view(-1, 1, 1, 1) + 0.1 * torch.rand(16, 3, 32, 32, generator=g)).clamp(0, 1), labels

    recipe = TrainRecipe(steps=30, batch_size=16, lr=3e-3)
    a, seconds = train_classifier(lambda: suite.create_model(teacher), batch, recipe, seed=0, mean=suite.MEAN,
                                  std=suite.STD)
    b, _ = train_classifier(lambda: suite.create_model(teacher), batch, recipe, seed=0, mean=suite.MEAN, std=suite.STD)
    assert _state_equal(a, b) and seconds > 0 and not a.training
    images, labels = batch(1000)
    with torch.no_grad():
        assert (a((images - 0.5) / 0.5).argmax(1) == labels).float().mean() == 1.0


@pytest.mark.parametrize(("name", "grid"), [("digits64", (8, 8)), ("glyphs196", (14, 14)), ("glyphs30x196", (14, 14))])
def test_tiny_teacher_builds_caches_and_loads(tmp_path: Path, name: str, grid: tuple[int, int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real = suite.build_suite_teacher
    monkeypatch.setattr(suite, "build_suite_teacher", lambda n, **kw: builds.append(n) or real(n, **kw))
    path, meta = suite.load_or_build_suite_teacher(name, tmp_path, recipe=TINY)
    assert path == tmp_path / f"suite-{name}-{suite.SUITE_VERSION}" / "model.safetensors" and path.is_file()
    on_disk = json.loads((path.parent / "meta.json").read_text())
    assert on_disk == meta and 0.0 <= meta["heldout_top1"] <= 1.0 and meta["train_seconds"] > 0
    assert meta["config"]["train"]["steps"] == 3 and meta["config"]["model"]["patch_size"] == 4
    teacher = load_teacher(str(path))
    assert vit_geometry(teacher.model).grid == grid and tuple(teacher.class_names) == suite.suite_teacher(name).class_names
    assert teacher.mean == suite.MEAN and teacher.img_size == (grid[0] * 4, grid[1] * 4)
    again, meta2 = suite.load_or_build_suite_teacher(name, tmp_path, recipe=TINY)
    assert builds == [name] and meta2 == meta and _state_equal(teacher.model, load_teacher(str(path)).model)
    if name == "digits64":  # a cache built by another recipe is rebuilt
        suite.load_or_build_suite_teacher(name, tmp_path, recipe=TrainRecipe(steps=2, batch_size=8))
        assert builds == [name, name]


def test_shapes64_is_the_toy_teacher(tmp_path: Path) -> None:
    from pipeline.teachers.toy import TOY_TEACHER_ID

    path, meta = suite.load_or_build_suite_teacher("shapes64", tmp_path, recipe=TINY)
    assert meta["teacher_id"] == TOY_TEACHER_ID and path.parent.name.startswith("toy-teacher-")
    assert vit_geometry(load_teacher(str(path)).model).grid == (8, 8)


def test_suite_registry() -> None:
    assert suite.TEACHERS == ("shapes64", "glyphs196", "digits64")
    assert suite.MANY_CLASS_TEACHERS == ("glyphs30x196", "glyphs100x196", "glyphs100x196b")
    assert suite.HELDOUT_TEACHERS == ("digits64", "glyphs100x196b")
    assert [suite.suite_teacher(n).num_patches for n in suite.ALL_TEACHERS] == [64, 196, 64, 196, 196, 196, 64, 196]
    assert [len(suite.suite_teacher(n).class_names) for n in suite.MANY_CLASS_TEACHERS] == [30, 100, 100]
    assert [suite.suite_teacher(n).heldout_teacher for n in suite.ALL_TEACHERS] == [False, False, True, False, False, True,
                                                                                 False, False]
    with pytest.raises(ValueError, match="teacher: expected one of"):
        suite.suite_teacher("imagenet")
    images, labels = suite.real_images("digits64", 3, seed=0)
    assert images.shape == (30, 3, 32, 32) and labels.tolist() == sorted(labels.tolist())
    assert torch.bincount(labels).tolist() == [3] * 10
    images, labels = suite.real_images("glyphs196", 2, seed=0)
    assert images.shape == (20, 3, 56, 56) and torch.bincount(labels).tolist() == [2] * 10
    images, labels = suite.real_images("glyphs30x196", 1, seed=0)
    assert images.shape == (30, 3, 56, 56) and labels.tolist() == list(range(30))


def test_the_many_class_teachers_share_glyphs196s_model_but_not_its_classes() -> None:
    tuned, held, small = (suite.suite_teacher(n) for n in ("glyphs100x196", "glyphs100x196b", "glyphs30x196"))
    assert not set(tuned.class_names) & set(held.class_names) and small.class_names == tuned.class_names[:30]
    glyphs196 = suite.suite_teacher("glyphs196")
    assert {**tuned.model_config, "num_classes": 10} == glyphs196.model_config
    assert glyphs196.recipe == TrainRecipe(steps=1200, lr=2e-3)  # the 10-class teachers' caches stay valid


def test_the_many_class_recipe_is_glyphs196s_with_steps_per_class() -> None:
    glyphs196 = suite.suite_teacher("glyphs196").recipe
    recipes = [suite.suite_teacher(n).recipe for n in suite.MANY_CLASS_TEACHERS]
    assert [r.steps for r in recipes] == [1200, 1500, 1500]
    assert all(dataclasses.replace(r, steps=glyphs196.steps) == glyphs196 for r in recipes)
    assert suite.many_class_recipe(1000).steps == 15_000 and suite.many_class_recipe(10) == glyphs196
    pools = [suite._data_record(n, r)["pool_images"] for n, r in zip(suite.MANY_CLASS_TEACHERS, recipes)]
    assert pools == [3000, 10000, 10000]  # 100 rendered glyphs per class


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (the photos) is not installed")
def test_the_photo_teachers_classify_ten_photographs_at_two_sizes() -> None:
    assert suite.PHOTO_TEACHERS == ("photos10x64", "photos10x196")
    small, big = (suite.suite_teacher(n) for n in suite.PHOTO_TEACHERS)
    assert small.class_names == big.class_names and len(small.class_names) == 10
    assert (small.img_size, small.num_patches, big.img_size, big.num_patches) == (32, 64, 56, 196)
    images, labels = suite.real_images("photos10x196", 2, seed=0)
    assert images.shape == (20, 3, 56, 56) and torch.bincount(labels).tolist() == [2] * 10
    held, held_labels = suite.heldout_images("photos10x64")
    assert held.shape == (400, 3, 32, 32) and torch.bincount(held_labels).tolist() == [40] * 10
    batch = suite._batch_fn("photos10x64", TrainRecipe(steps=2, batch_size=5), seed=0)
    first, labels = batch(0)
    assert first.shape == (5, 3, 32, 32) and labels.shape == (5,) and not torch.equal(first, batch(1)[0])
