"""benchmarks/quality.py: argument checks and the manifests it runs (the benchmark itself is `make bench`-sized)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize(("schedule", "stops"), [("paper", [4, 8, 15, 22]), ("paper-3", [4, 8, 15]),
                                                  ("demo", [20, 40, 80, 120])])
def test_schedules_scale_to_the_iterations(tmp_path: Path, schedule: str, stops: list[int]) -> None:
    q = _quality()
    args = q.parse_args(["--schedule", schedule])
    args.teacher_spec = "toy"
    inversion = q.manifest_dict("smi", args, tmp_path)["inversion"]
    assert inversion["schedule"] == {"iterations": stops, "ratios": [0.3] * len(stops)}
    assert inversion["stopped_patches"] == "prior" and inversion["iterations"] == 300


def test_finer_grid_needs_the_robust_teacher(capsys: pytest.CaptureFixture[str]) -> None:
    q = _quality()
    assert q.parse_args(["--teacher-patch", "2"]).teacher_patch == 2
    with pytest.raises(SystemExit) as exc:
        q.parse_args(["--teacher-recipe", "default", "--teacher-patch", "2"])
    assert exc.value.code == 2 and "--teacher-patch" in capsys.readouterr().err
