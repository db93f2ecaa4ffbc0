"""``make bench-gpu`` (pipeline.bench.gpu): its smoke mode runs where Ray, webdataset and pydantic cannot be
imported, as on the lent GPU machine, and reports every measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench import gpu

ROOT = Path(__file__).resolve().parents[2]
# what the GPU machine lacks: importing any of them fails in the child, as it would there
SHIM = ("import runpy, sys\n"
        "for name in ('ray', 'webdataset', 'pydantic'):\n"
        "    sys.modules[name] = None\n"
        "sys.argv = ['pipeline.bench.gpu', *sys.argv[1:]]\n"
        "runpy.run_module('pipeline.bench.gpu', run_name='__main__')\n")


def _run_smoke(tmp_path: Path, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", SHIM, "--out", str(tmp_path / "out"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "out" / "bench-gpu.json").read_text())
    return report, proc.stderr


@pytest.mark.bench  # the whole GPU benchmark in its CPU smoke mode
def test_smoke_mode_runs_without_ray_webdataset_or_pydantic_and_reports_everything(tmp_path: Path) -> None:
    report, stderr = _run_smoke(tmp_path, "--compile-modes", "none", "--repeats", "2")
    assert report["mode"] == "smoke" and "SMOKE MODE (no CUDA device)" in stderr
    assert any("not a GPU measurement" in note for note in report["notes"])
    rows = {(r["kind"], r["batch"]): r for r in report["eager"]}
    assert set(rows) == {(k, b) for k in ("dense", "smi", "rebirth") for b in gpu.smoke_plan().batches}
    assert all(r["images_per_second"] > 0 and r["estimated_memory_bytes"] > 0 for r in rows.values())
    for b in gpu.smoke_plan().batches:  # rebirth: four images per target in the forward, each a quarter of a run
        assert rows["rebirth", b]["images"] == 4 * rows["dense", b]["images"] == 4 * b
        assert 1 < rows["smi", b]["flop_ratio"] < rows["rebirth", b]["flop_ratio"]
        assert rows["rebirth", b]["flops_per_image"] * rows["rebirth", b]["flop_ratio"] == pytest.approx(
            rows["dense", b]["flops_per_image"])
    assert all(len(r["seconds_all"]) == 2 and r["seconds"] == min(r["seconds_all"]) for r in rows.values())
    packing = report["packing"]
    assert packing["packed"]["images_per_call"] == packing["pack"] * packing["batch"]
    assert packing["packed_vs_one_by_one"]["kept_masks_equal"]
    assert packing["packed_vs_one_by_one"]["max_abs_pixel_difference"] < 1e-4
    assert report["compiled"]["modes"] == {} and report["compiled"]["schedule"]["kept"][-1] == report["schedule"]["kept"][-1]
    shards = report["shards"]
    assert shards["shards"] == 2 and shards["tar_sha256_matches_stats"]
    assert shards["shard0_tar_identical"] and shards["shard0_parquet_identical"]  # the CPU is deterministic
    table = (tmp_path / "out" / "bench-gpu.md").read_text()
    assert "| eager dense |" in table and "| eager rebirth |" in table and "packed" in table and "tar identical True" in table


def test_bad_arguments_exit_2_naming_the_flag(capsys) -> None:
    assert gpu.main(["--compile-modes", "max-autotune"]) == 2
    assert "--compile-modes" in capsys.readouterr().err
    assert gpu.main(["--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_one_stop_schedule_lands_on_the_final_kept_count() -> None:
    from smi_core import StopSchedule

    paper = StopSchedule((50, 100, 200, 300), (0.3, 0.3, 0.3, 0.3))
    assert gpu.one_stop_schedule(paper, 196).kept_counts(196) == [48]
    assert gpu.one_stop_schedule(paper, 196).iterations == (300,)


@pytest.mark.bench
def test_smoke_mode_measures_the_compiled_path(tmp_path: Path) -> None:
    """Inductor on the CPU: minutes with a cold compile cache."""
    report, _ = _run_smoke(tmp_path, "--compile-modes", "default")
    mode = report["compiled"]["modes"]["default"]
    assert "error" not in mode, mode
    assert mode["vs_eager"]["kept_masks_equal"] and mode["vs_eager"]["max_abs_pixel_difference"] < 1e-3
    assert mode["compile_seconds"] > 0 and mode["speedup_over_eager"] > 0
