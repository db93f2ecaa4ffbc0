"""benchmarks/quality.py: argument checks and the manifests it runs (the benchmark itself is `make bench`-sized)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
    assert inversion["saliency"] == "instant" and "saliency" not in q.manifest_dict("dense", args, tmp_path)["inversion"]
    args = q.parse_args(["--schedule", schedule, "--saliency", "accumulated"])
    args.teacher_spec = "toy"
    assert q.manifest_dict("smi", args, tmp_path)["inversion"]["saliency"] == "accumulated"


def test_finer_grid_needs_the_robust_teacher(capsys: pytest.CaptureFixture[str]) -> None:
    q = _quality()
    assert q.parse_args(["--teacher-patch", "2"]).teacher_patch == 2
    with pytest.raises(SystemExit) as exc:
        q.parse_args(["--teacher-recipe", "default", "--teacher-patch", "2"])
    assert exc.value.code == 2 and "--teacher-patch" in capsys.readouterr().err


def _seeds():
    spec = importlib.util.spec_from_file_location("quality_seeds", REPO / "benchmarks" / "quality_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _result(seed: int, *, dense: float | None = None, smi: float | None = None, noise: float | None = None,
            stops: list[int] | None = None, epochs: int = 400) -> dict:
    corpora: dict = {}
    for name, top1, secs in (("dense", dense, 600.0), ("smi", smi, 200.0), ("noise", noise, 0.5)):
        corpora[name] = {"gen_seconds": secs} if top1 is None else {"gen_seconds": secs, "student_top1": top1}
    return {"seed": seed, "teacher_top1": 0.9995, "teacher_recipe": "robust", "teacher_patch": 2, "iterations": 300,
            "epochs": epochs, "student": "test_resnet", "labels": "live", "adversarial_eps": 1.0,
            "images_per_corpus": 320, "eval_images": 2000, "corpora": corpora, "smi_vs_dense_time": 200 / 600,
            "inversion": {"lr": 0.1, "tv_l2": 0.75, "schedule": {"iterations": stops or [4, 8, 15]},
                          "stopped_patches": "prior"}}


def test_seed_summary_pairs_dense_and_smi_by_seed() -> None:
    qs = _seeds()
    # seed 0's dense student came from a run with another SMI schedule: a dense inversion ignores it
    results = [_result(0, dense=0.876, stops=[4, 8, 15, 22]), _result(0, smi=0.841),
               _result(1, dense=0.86, smi=0.85, noise=0.1), _result(2, dense=0.88, smi=0.87), _result(3, dense=0.9)]
    s = qs.summarise(results)
    assert s["seeds"] == [0, 1, 2] and s["unpaired"] == {"dense": [3], "smi": []}
    gaps = [r["gap"] for r in s["per_seed"]]
    assert gaps == pytest.approx([-0.035, -0.01, -0.01])
    assert s["stats"]["gap"]["mean"] == pytest.approx(-0.055 / 3)
    low, high = s["gap_95ci"]
    assert low < s["stats"]["gap"]["mean"] < high and high - low == pytest.approx(2 * 4.303 * s["stats"]["gap"]["sd"] / 3 ** 0.5)
    assert s["stats"]["time_ratio"]["mean"] == pytest.approx(1 / 3)
    assert s["targets_met_on_means"] == {"smi_within_1pt_of_dense": False, "smi_student_at_least_80pct_teacher": True,
                                         "smi_time_at_most_40pct": True, "far_above_noise": True}


def test_seed_summary_refuses_mixed_settings_and_repeated_seeds(tmp_path: Path, capsys) -> None:
    qs = _seeds()
    with pytest.raises(qs.SummaryError, match="schedule|inversion"):
        qs.summarise([_result(0, dense=0.8, smi=0.7), _result(1, dense=0.8, smi=0.7, stops=[4, 8])])
    with pytest.raises(qs.SummaryError, match="epochs"):
        qs.summarise([_result(0, dense=0.8, smi=0.7), _result(1, dense=0.8, smi=0.7, epochs=100)])
    with pytest.raises(qs.SummaryError, match="seed 0 is given twice"):
        qs.summarise([_result(0, dense=0.8, smi=0.7), _result(0, dense=0.8)])
    with pytest.raises(qs.SummaryError, match="no seed has both"):
        qs.summarise([_result(0, dense=0.8), _result(1, smi=0.7)])
    old = _result(0, dense=0.8, smi=0.7)
    del old["seed"]
    with pytest.raises(qs.SummaryError, match="no 'seed'"):
        qs.summarise([old])
    # the command line: exit 2 with the reason, and the JSON summary last on success
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text("table\n" + json.dumps(_result(0, dense=0.8, smi=0.795)) + "\n")
    bad.write_text("not json\n")
    assert qs.main([str(good), str(bad)]) == 2 and "bad.json" in capsys.readouterr().err
    assert qs.main([str(good), str(tmp_path / "missing.json")]) == 2
    capsys.readouterr()
    assert qs.main([str(good)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["seeds"] == [0] and out["gap_95ci"] is None and out["targets_met_on_means"]["smi_within_1pt_of_dense"]
    # FILE:dense takes the dense student only, so another schedule's SMI student does not clash
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_result(1, dense=0.9, smi=0.5, stops=[4, 8])) + "\n")
    both = tmp_path / "seed1-smi.json"
    both.write_text(json.dumps(_result(1, smi=0.89)) + "\n")
    assert qs.main([str(good), str(other), str(both)]) == 2 and "differ in inversion" in capsys.readouterr().err
    assert qs.main([str(good), f"{other}:dense", str(both)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["seeds"] == [0, 1] and [r["gap"] for r in out["per_seed"]] == pytest.approx([-0.005, -0.01])
