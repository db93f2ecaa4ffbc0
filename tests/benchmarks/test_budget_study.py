"""benchmarks/budget_study.py: argument checks, one quality_suite run per point, the verdicts and the plot."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.benchmarks import assert_usage_error
from tests.benchmarks import load_benchmark as _load


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--teachers", "imagenet"], "--teachers"), (["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "--seeds"),
     (["--iterations", "1,50"], "--iterations"), (["--iterations", ""], "--iterations")],
)
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("budget_study"), argv, flag, capsys)


def test_each_point_is_one_quality_suite_run_in_its_own_folder(tmp_path: Path) -> None:
    bs, qs = _load("budget_study"), _load("quality_suite")
    args = bs.parse_args(["--seeds", "3,4", "--iterations", "50,25", "--out", str(tmp_path)])
    runs = {(seed, n): qs.parse_args(bs.suite_argv("shapes64", seed, n, args)) for seed in (3, 4) for n in (25, 50)}
    assert {key: (q.out, q.iterations, q.per_class, q.steps, q.corpora, q.quant) for key, q in runs.items()} == {
        (3, 25): (tmp_path / "iters25", 25, 32, 1000, ["noise", "dense", "smi"], False),  # the floor: once
        (3, 50): (tmp_path / "iters50", 50, 32, 1000, ["dense", "smi"], False),
        (4, 25): (tmp_path / "iters25", 25, 32, 1000, ["dense", "smi"], False),
        (4, 50): (tmp_path / "iters50", 50, 32, 1000, ["dense", "smi"], False),
    }
    assert bs.point_corpora(3, 25, bs.parse_args(["--seeds", "3", "--no-noise"])) == ["dense", "smi"]


def _point(method: str, iterations: int, flops: float, top1: float) -> dict:
    return {"method": method, "iterations": iterations, "seeds": 3, "flops_per_image": flops, "time_vs_dense": 0.4,
            "seconds_per_image": flops / 1e9, "confidence": 0.9,
            "student_top1": {"mean": top1, "sd": 0.02, "min": top1, "max": top1, "n": 3}}


def test_verdicts_compare_each_smi_point_with_the_cheapest_dense_point_as_good() -> None:
    bs = _load("budget_study")
    points = [_point("dense", 25, 1e9, 0.60), _point("dense", 50, 2e9, 0.70), _point("dense", 200, 8e9, 0.72),
              _point("smi", 25, 0.1e9, 0.65), _point("smi", 50, 0.2e9, 0.715), _point("smi", 200, 3e9, 0.80)]
    by_iterations = {v["iterations"]: v for v in bs.verdicts(points)}
    low, mid, high = by_iterations[25], by_iterations[50], by_iterations[200]
    # 65%: dense 50 (70%) is the cheapest as good; a tenth of its FLOPs, but 7 points under the best dense
    assert low["cheapest_dense_iterations"] == 50 and low["flops_share"] == pytest.approx(0.05)
    assert low["gap_to_best_dense"] == pytest.approx(-0.07) and not low["goal_met"]
    # 71.5%: within a point of the best dense (72%) at 1/40 of dense 200's FLOPs: the goal
    assert mid["cheapest_dense_iterations"] == 200 and mid["flops_share"] == pytest.approx(0.025) and mid["goal_met"]
    assert mid["seconds_share"] == pytest.approx(0.025)
    # above every dense point: compared with the best dense point (dense 200), 3/8 of its FLOPs: not the goal
    assert high["above_dense"] and high["cheapest_dense_iterations"] == 200 and not high["goal_met"]
    assert high["flops_share"] == pytest.approx(3 / 8) and not mid["above_dense"]


def test_plot_draws_dense_and_smi_per_teacher() -> None:
    bs, render = _load("budget_study"), _load("render")
    points = [_point("dense", 25, 1e8, 0.5), _point("dense", 200, 8e8, 0.7), _point("smi", 25, 4e7, 0.45),
              _point("smi", 200, 3e8, 0.68)]
    curve = {"teacher": "shapes64", "heldout_teacher": False, "teacher_top1": 0.99, "points": points,
             "noise_top1": {"mean": 0.1, "sd": 0.0}}
    img = Image.open(io.BytesIO(bs.plot_png([curve, {**curve, "teacher": "digits64", "heldout_teacher": True,
                                                     "noise_top1": None}]))).convert("RGB")
    assert img.size == (840, 400)  # one panel per teacher
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert {render.DENSE, render.SMI, render.NOISE} <= colours


@pytest.mark.slow  # a tiny teacher and five students: about 15 CPU-seconds
def test_quick_study_writes_the_table_the_json_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bs = _load("budget_study")
    out, doc_path, plot = tmp_path / "out", tmp_path / "b.json", tmp_path / "b.png"
    assert bs.main(["--quick", "--out", str(out), "--json", str(doc_path), "--plot", str(plot), "--machine", "box",
                    "--note", "how the points ran"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads(doc_path.read_text())
    assert doc == printed and doc["section"] == "budget" and doc["plot"] == str(plot)
    assert doc["notes"] == ["how the points ran"]
    (curve,) = doc["curves"]
    assert [(p["method"], p["iterations"]) for p in curve["points"]] == [("dense", 4), ("dense", 8), ("smi", 4),
                                                                         ("smi", 8)]
    for p in curve["points"]:
        assert p["flops_per_image"] > 0 and p["seconds_per_image"] > 0 and 0 <= p["student_top1"]["mean"] <= 1
    dense4, dense8 = curve["points"][:2]
    assert dense8["flops_per_image"] == pytest.approx(2 * dense4["flops_per_image"])  # FLOPs scale with iterations
    assert curve["noise_top1"]["n"] == 1 and [v["iterations"] for v in curve["verdicts"]] == [4, 8]
    assert [(f["iterations"], f["seeds"]) for f in doc["figures"]] == [(4, 1), (8, 1)]  # dense and SMI side by side
    assert all(0 < f["time_pct"] and 0 < f["flops_pct"] < 100 for f in doc["figures"])
    assert (out / "iters8" / "shapes64" / "seed0" / "result.json").is_file()
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_finished_only_summarises_what_a_study_has_so_far(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bs = _load("budget_study")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="no finished point"):
        bs.main(["--quick", "--out", str(out), "--finished-only"])
    assert bs.main(["--quick", "--out", str(out)]) == 0
    shutil.rmtree(out / "iters8")  # one point of two finished
    capsys.readouterr()
    assert bs.main(["--quick", "--out", str(out), "--finished-only", "--seeds", "0,1"]) == 0  # runs nothing more
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(p["method"], p["iterations"], p["seeds"]) for p in doc["curves"][0]["points"]] == [("dense", 4, 1),
                                                                                               ("smi", 4, 1)]
    assert not (out / "iters8").exists() and not (out / "iters4" / "shapes64" / "seed1").exists()


def test_rebirth_runs_apart_and_is_judged_and_drawn_like_smi(tmp_path: Path) -> None:
    bs, qs, render = _load("budget_study"), _load("quality_suite"), _load("render")
    args = bs.parse_args(["--seeds", "0", "--iterations", "25", "--rebirth", "--out", str(tmp_path)])
    q = qs.parse_args(bs.suite_argv("shapes64", 0, 25, args, rebirth=True))
    assert (q.out, q.corpora) == (tmp_path / "rebirth-iters25", ["rebirth"])
    assert set(q.recipe_configs) == {"dense", "smi", "rebirth"}  # dense and SMI are still timed beside it
    point = {"iterations": 25, "images_per_corpus": 10, "corpora": {
        "dense": {"gen_seconds": 4.0, "flops": 8e9, "student_top1": 0.5}, "smi": {"gen_seconds": 2.0, "flops": 3e9}}}
    own = {"corpora": {"dense": {"gen_seconds": 8.0}, "rebirth": {"gen_seconds": 2.0, "flops": 1e9, "student_top1": 0.4}}}
    merged = bs.with_rebirth(point, own)
    assert merged["corpora"]["rebirth"]["dense_gen_seconds"] == 8.0 and "rebirth" not in point["corpora"]
    points = [_point("dense", 25, 1e9, 0.60), _point("dense", 200, 8e9, 0.72), _point("smi", 200, 3e9, 0.70),
              _point("rebirth", 200, 0.9e9, 0.715)]
    (smi, rebirth) = bs.verdicts(points)
    assert (smi["method"], rebirth["method"]) == ("smi", "rebirth")
    assert rebirth["goal_met"] and rebirth["flops_share"] == pytest.approx(0.9 / 8) and not smi["goal_met"]
    curve = {"teacher": "shapes64", "heldout_teacher": False, "teacher_top1": 0.99, "points": points,
             "noise_top1": None, "verdicts": bs.verdicts(points)}
    img = Image.open(io.BytesIO(bs.plot_png([curve]))).convert("RGB")
    assert render.REBIRTH in {c for _, c in img.getcolors(maxcolors=1 << 20)}
    doc = {"curves": [curve], "settings": {"classes": 10, "per_class": 32, "iterations": [200], "recipe": "project",
                                           "student": "test_resnet", "distill_steps": 1000}}
    rows = bs.with_report(doc)["figures"]
    assert [(r["method"], r["iterations"], r["flops_pct"]) for r in rows] == [("SMI", 200, 37.5), ("rebirth", 200, 11.2)]
