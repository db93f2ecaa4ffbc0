"""The built-in toy teacher (pipeline.teachers.toy): architecture, deterministic training, cache."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pipeline.teachers import toy as toy_teacher
from pipeline.teachers.classify import normalize
from pipeline.teachers.toy import (
    TOY_TEACHER_VERSION,
    TrainConfig,
    build_toy_teacher,
    create_toy_model,
    load_or_build_toy_teacher,
    toy_model_config,
)
from pipeline.teachers.toy_data import CLASS_NAMES
from smi_core.vit import vit_geometry
from tests.conftest import cpu_kind

TINY = TrainConfig(steps=3, batch_size=8, keep_tokens=16, heldout_images=20)
REPO = Path(__file__).resolve().parents[2]


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_architecture_is_a_small_timm_vit() -> None:
    model = create_toy_model()
    assert isinstance(model, VisionTransformer) and model.cls_token is not None
    geometry = vit_geometry(model)
    assert geometry.img_size == (32, 32) and geometry.grid == (8, 8) and geometry.has_cls_token
    params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= params <= 1_000_000
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 10 and cfg["license"] == "apache-2.0"
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    small = create_toy_model(depth=1, embed_dim=32, num_heads=2)
    assert len(small.blocks) == 1 and toy_model_config()["num_classes"] == 10


def test_l2_adversarial_step_has_norm_eps_and_raises_the_loss() -> None:
    torch.manual_seed(0)
    model = create_toy_model(depth=1, embed_dim=32, num_heads=2).eval()
    images, labels = torch.rand(4, 3, 32, 32) * 0.8 + 0.1, torch.arange(4)
    fn = lambda x: model(normalize(x, toy_teacher.MEAN, toy_teacher.STD))  # noqa: E731
    moved = toy_teacher.l2_adversarial(fn, images, labels, eps=0.05)
    assert not moved.requires_grad and moved.shape == images.shape
    norms = (moved - images).flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((4,), 0.05), atol=1e-4)  # no pixel clipped at this size
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert ce(fn(moved), labels, reduction="none").gt(ce(fn(images), labels, reduction="none")).all()


def test_robust_recipe_changes_the_build() -> None:
    robust = dataclasses.replace(TINY, adversarial_l2_eps=0.5)
    a, _ = build_toy_teacher(seed=0, config=TINY)
    b, meta = build_toy_teacher(seed=0, config=robust)
    assert not _state_equal(a, b) and meta["config"]["train"]["adversarial_l2_eps"] == 0.5


def test_build_is_deterministic_and_reports() -> None:
    calls: list[tuple[int, int, float]] = []
    a, meta = build_toy_teacher(seed=0, config=TINY, progress=lambda s, n, loss: calls.append((s, n, loss)))
    b, _ = build_toy_teacher(seed=0, config=TINY)
    c, _ = build_toy_teacher(seed=1, config=TINY)
    assert _state_equal(a, b) and not _state_equal(a, c)
    assert [s for s, _, _ in calls] == [1, 2, 3] and all(n == 3 for _, n, _ in calls)
    assert 0.0 <= meta["heldout_top1"] <= 1.0 and meta["train_seconds"] > 0
    assert meta["config"]["model"] == toy_model_config() and meta["config"]["train"]["steps"] == 3
    assert meta["version"] == TOY_TEACHER_VERSION and meta["class_names"] == list(CLASS_NAMES)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()  # restored


@pytest.fixture
def tiny_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the builds load_or_build_toy_teacher starts."""
    builds: list[int] = []
    real = toy_teacher.build_toy_teacher

    def counted(**kwargs: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
        builds.append(1)
        return real(**kwargs)

    monkeypatch.setattr(toy_teacher, "build_toy_teacher", counted)
    return builds


def test_cache_builds_once_then_loads(tmp_path: Path, tiny_builds: list[int]) -> None:
    model, meta = load_or_build_toy_teacher(tmp_path, config=TINY)
    folder = tmp_path / f"toy-teacher-{TOY_TEACHER_VERSION}"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors"]
    on_disk = json.loads((folder / "meta.json").read_text())
    assert on_disk["sha256"] == meta["sha256"] and len(meta["sha256"]) == 64
    again, meta2 = load_or_build_toy_teacher(tmp_path, config=TINY)
    assert tiny_builds == [1] and _state_equal(model, again) and meta2 == meta
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # a damaged cache is rebuilt
    (folder / "model.safetensors").write_bytes(b"garbage")
    rebuilt, _ = load_or_build_toy_teacher(tmp_path, config=TINY)
    assert tiny_builds == [1, 1] and _state_equal(model, rebuilt)
    # and so is a cache built by another recipe
    load_or_build_toy_teacher(tmp_path, config=dataclasses.replace(TINY, steps=2))
    assert tiny_builds == [1, 1, 1]
    assert json.loads((folder / "meta.json").read_text())["config"]["train"]["steps"] == 2


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_builds: list[int]) -> None:
    monkeypatch.setenv("SMI_SYNTH_CACHE", str(tmp_path / "cache"))
    load_or_build_toy_teacher(config=TINY)
    assert (tmp_path / "cache" / f"toy-teacher-{TOY_TEACHER_VERSION}" / "model.safetensors").is_file()


def test_default_record_is_unchanged_by_the_patch_size_field() -> None:
    """Caches built before ``patch_size`` existed must still match the default recipe."""
    record = toy_teacher._config_record(TrainConfig())
    assert record["model"] == toy_model_config() and record["model"]["patch_size"] == 4
    assert "patch_size" not in record["train"]


def test_finer_grid_teacher_builds_caches_and_loads_as_a_checkpoint(tmp_path: Path) -> None:
    from pipeline.teachers.loading import load_teacher

    fine = dataclasses.replace(TINY, patch_size=2, keep_tokens=64)
    model, meta = load_or_build_toy_teacher(tmp_path, config=fine)
    assert vit_geometry(model).grid == (16, 16) and model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert meta["config"]["model"] == toy_model_config(2) and "patch_size" not in meta["config"]["train"]
    again, _ = load_or_build_toy_teacher(tmp_path, config=fine)
    assert _state_equal(model, again)
    loaded = load_teacher(str(tmp_path / f"toy-teacher-{TOY_TEACHER_VERSION}" / "model.safetensors"))
    assert vit_geometry(loaded.model).grid == (16, 16) and _state_equal(model, loaded.model)
    assert loaded.class_names == list(CLASS_NAMES) and loaded.img_size == (32, 32)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"patch_size": 3}, "patch_size: must divide"), ({"patch_size": 4, "keep_tokens": 65}, "keep_tokens: must lie")],
)
def test_train_config_rejects_a_bad_grid(changes: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from pipeline.teachers import toy as toy_teacher
        real = toy_teacher.build_toy_teacher
        def counted(**kw):
            with open(Path(sys.argv[1]) / "builds.log", "a") as f:
                f.write("build\\n")
            return real(**kw)
        toy_teacher.build_toy_teacher = counted
        tiny = toy_teacher.TrainConfig(steps=3, batch_size=8, keep_tokens=16, heldout_images=20)
        model, meta = toy_teacher.load_or_build_toy_teacher(Path(sys.argv[1]), config=tiny)
        print(meta["sha256"])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and len(outs[0]) == 64
    assert (tmp_path / "builds.log").read_text().count("build") == 1


# sha256 of the default toy teacher's model.safetensors (torch 2.14.1, the pinned version) per CPU kind, as
# recorded in its cache's meta.json: refactors of the trainer and the cache must not change a byte.
DEFAULT_TOY_SHA256 = {
    "GenuineIntel": "20fc231e136ffe7230991487a0814c1bdd0c3afb616968d1e369ba1dde360984",  # Xeon VM, 2026-11-29
    "AuthenticAMD/AVX512": "e9ab5f7329dcaeb1725c20e7123cf4ee0127d5b376bcd3e9df21b2251e2bf341",  # EPYC VM, 2026-12-07
}


@pytest.mark.slow
def test_full_build_reaches_accuracy(tmp_path: Path) -> None:
    model, meta = load_or_build_toy_teacher(tmp_path)
    assert meta["heldout_top1"] >= 0.95
    if torch.__version__.split("+")[0] == "2.14.1":
        assert meta["sha256"] == DEFAULT_TOY_SHA256[cpu_kind()]
    assert toy_teacher.evaluate(model, n=500, seed=1) >= 0.95
