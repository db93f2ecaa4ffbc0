"""Shard planning (pipeline.run.plan): order, shard math, seeds, FLOP/byte estimates and speed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.run.runner  # noqa: F401 - imported now, so it binds the real plan_shards, not a test's stand-in
import pipeline.run.spec as spec_mod
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.run.plan import (
    PARQUET_FILE_BYTES,
    STATS_FILE_BYTES,
    TAR_END_BYTES,
    ShardTask,
    flops_per_image,
    plan_shards,
    sample_bytes,
    shard_seed,
    summarize,
    token_phases,
)
from pipeline.run.spec import MAX_SHARDS, RunSpec, load_spec
from pipeline.teachers.loading import TeacherInfo
from tests.cli_stderr import cli_lines
from tests.run.fake_teacher import fake_describe


@pytest.fixture(autouse=True)
def fake_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)


def make_spec(tmp_path: Path, **fields: Any) -> RunSpec:
    data = {"teacher": "toy", "images_per_class": 10, "images_per_shard": 4, "output": "out",
            "inversion": {"iterations": 200, "schedule": {"iterations": [20, 40, 80, 120], "ratios": [0.3] * 4}}}
    data.update(fields)
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_shard_math_and_order(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, classes=[2, 5])
    tasks = plan_shards(spec)
    assert [t.shard_id for t in tasks] == list(range(6))
    assert [t.label for t in tasks] == [2, 2, 2, 5, 5, 5]
    assert [t.count for t in tasks] == [4, 4, 2] * 2
    assert [t.first_index for t in tasks] == [0, 4, 8] * 2
    assert tasks[0].class_name == "toy_2" and tasks[3].class_name == "toy_5"
    assert all(isinstance(t, ShardTask) for t in tasks)


def test_shard_bigger_than_class(tmp_path: Path) -> None:
    tasks = plan_shards(make_spec(tmp_path, images_per_class=3, images_per_shard=8))
    assert len(tasks) == 10 and {t.count for t in tasks} == {3}


def test_seeds_deterministic_and_distinct(tmp_path: Path) -> None:
    a, b = plan_shards(make_spec(tmp_path)), plan_shards(make_spec(tmp_path))
    assert a == b
    seeds = [t.seed for t in a]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    other = plan_shards(make_spec(tmp_path, seed=1))
    assert not set(seeds) & {t.seed for t in other}
    # a shard's seed depends on (seed, class, shard index in class) only, not on the other classes
    subset = plan_shards(make_spec(tmp_path, classes=[3]))
    assert [t.seed for t in subset] == [t.seed for t in a if t.label == 3]
    assert shard_seed(0, 3, 1) == shard_seed(0, 3, 1) != shard_seed(0, 1, 3)


def test_token_phases_match_engine(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    phases = token_phases(spec)
    assert phases == [(20, 64), (20, 45), (40, 32), (40, 23), (60, 17), (20, 64)]  # the last 10%: a dense finish
    cfg = spec.inversion_config()
    assert [k for _, k in phases[1:-1]] == cfg.selection.schedule.kept_counts(64)
    selection = pytest.importorskip("smi_core.selection")
    per_iter = selection.tokens_per_iteration(cfg.selection, 64, cfg.iterations)
    assert [kept for n, kept in phases for _ in range(n)] == per_iter


def _iteration_flops(kept: int) -> int:
    """The toy teacher's iteration by hand: D=64, L=4, hidden 128, 4x4 patches, 1 prefix token, 10 classes;
    linear layers forward and backward (2x), attention's products forward and two backward (3x)."""
    d, t = 64, kept + 1
    linear = 2 * kept * 48 * d + 4 * (2 * t * 4 * d * d + 4 * t * d * 128) + 2 * d * 10
    return 2 * linear + 3 * 4 * (4 * t * t * d)


def test_flops_per_iteration_follow_the_engine(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    assert flops_per_image(spec, dense=True) == 200 * _iteration_flops(64)
    assert flops_per_image(spec) == sum(n * _iteration_flops(k) for n, k in token_phases(spec))


def test_summary(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    s = summarize(spec)
    assert (s["shards"], s["images"], s["classes"], s["images_per_shard"]) == (30, 100, 10, 4)
    per_image = sum(n * _iteration_flops(k) for n, k in token_phases(spec))
    assert s["flops"] == 100 * per_image and s["flops"] < s["flops_dense"]
    dense = make_spec(tmp_path, inversion={"method": "dense", "iterations": 200})
    assert summarize(dense)["flops"] == s["flops_dense"]
    assert s["bytes"] > 100 * 32 * 32 * 3 and s["gpu_hours"] > 0 and s["cpu_core_hours"] > s["gpu_hours"]
    assert s["spec_hash"] == spec.spec_hash() and "H100" in s["assumptions"]["gpu"]


@pytest.mark.parametrize("per_shard", [1000, 100])
def test_imagenet_scale_plan_is_fast(tmp_path: Path, per_shard: int) -> None:
    """Contract from the issue: planning 1,000 x 1,000 (DeiT-Base) takes < 2 s including spec loading."""
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"teacher": "timm:deit_base_patch16_224", "images_per_class": 1000,
                                    "images_per_shard": per_shard, "dtype": "bfloat16"}))
    start = time.perf_counter()
    spec = load_spec(path)
    s = summarize(spec)
    elapsed = time.perf_counter() - start
    assert s["images"] == 1_000_000 and s["shards"] == 1000 * (1000 // per_shard)
    assert s["kept_patches"] == [196, 138, 97, 68, 48, 196]  # the recommended recipe ends with a dense finish
    assert elapsed < 2.0, f"planning took {elapsed:.2f} s"


def test_totals_are_arithmetic_and_match_the_enumerated_plan(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, classes=[2, 5, 9], images_per_class=11)
    tasks = plan_shards(spec)
    s = summarize(spec)
    kept = token_phases(spec)[-1][1]
    per_task = sum(sample_bytes(spec, t.label, kept) * t.count for t in tasks)
    per_task += len(tasks) * (TAR_END_BYTES + PARQUET_FILE_BYTES + STATS_FILE_BYTES)
    assert (s["images"], s["shards"], s["classes"], s["bytes"]) == (sum(t.count for t in tasks), len(tasks), 3,
                                                                    per_task)


def _never_enumerate(*_: Any) -> None:
    raise AssertionError("plan enumerated the shards")


def test_plan_of_the_largest_corpus_enumerates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 classes x 10,000,000 images (the per-class limit) in 10,000 shards: totals from arithmetic."""
    monkeypatch.setattr("pipeline.run.plan.plan_shards", _never_enumerate)
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"teacher": "timm:deit_base_patch16_224", "images_per_class": 10_000_000,
                                    "images_per_shard": 1_000_000, "output": "out"}))
    assert main(["plan", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (s["images"], s["shards"], s["classes"]) == (10**10, MAX_SHARDS, 1000)


def _never_describe(spec: str) -> None:
    raise AssertionError("the teacher was described (timm imported) before the sizes were checked")


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("counts,expected", [
    ((1_000_000_000_000, 1000), "images_per_class: must be <= 10,000,000 (sample keys hold a 7-digit per-class "
                                "index), got 1,000,000,000,000"),
    ((1_000_000, 2), "images_per_shard: 1,000,000 images per class in shards of 2 make 500,000 shards per class; "
                     "a corpus has at most 10,000 (files per folder): use images_per_shard >= 100"),
], ids=["images_per_class", "shards"])
def test_huge_count_manifest_is_refused_at_once_naming_the_field_and_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str,
        counts: tuple[int, int], expected: str) -> None:
    """The issue's manifest (images_per_class 1e12) and a shard count over the limit: refused from the
    manifest's numbers alone: no teacher described, nothing enumerated, started or written."""
    monkeypatch.setattr(spec_mod, "_describe_teacher", _never_describe)
    monkeypatch.setattr("pipeline.run.plan.plan_shards", _never_enumerate)
    monkeypatch.setattr("pipeline.run.runner.plan_shards", _never_enumerate)
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump({"teacher": "timm:deit_base_patch16_224", "images_per_class": counts[0],
                                    "images_per_shard": counts[1], "output": "out"}))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert cli_lines(err) == [f"smi-synth {command}: error: {path}: {expected}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]


def test_more_classes_than_the_shard_limit_names_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in21k = TeacherInfo("timm:in21k", 21843, tuple(f"c{i}" for i in range(21843)), (224, 224), (0.5,) * 3,
                        (0.5,) * 3, None, 768, 12, 12, 4.0, (16, 16), 1)
    monkeypatch.setattr(spec_mod, "_describe_teacher", lambda spec: in21k)
    with pytest.raises(UserError, match=r"classes: 21,843 classes make at least 21,843 shards .* at most 10,000"):
        make_spec(tmp_path, images_per_class=1, images_per_shard=1)
    assert make_spec(tmp_path, classes={"start": 0, "stop": 10_000}, images_per_class=5,
                     images_per_shard=5).num_shards == 10_000
