"""benchmarks/quality_suite.py: the default recipe, argument checks, a plugged-in recipe, and the --quick run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.benchmarks import REPO, assert_usage_error
from tests.benchmarks import load_benchmark as _load


@pytest.mark.parametrize("method", ["dense", "smi"])
def test_default_recipe_is_quality_py_s(method: str, tmp_path: Path) -> None:
    from pipeline.run.spec import spec_from_dict

    qs, q = _load("quality_suite"), _load("quality")
    args = q.parse_args([])
    args.teacher_spec = "toy"
    expected = spec_from_dict(q.manifest_dict(method, args, tmp_path), label="t").inversion_config()
    assert qs.project_recipe(method, args.iterations) == expected


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--teachers", "imagenet"], "--teachers"), (["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "--seeds"),
     (["--per-class", "0"], "--per-class"), (["--iterations", "1"], "--iterations"), (["--classes", "11"], "--classes"),
     (["--corpora", "dense,fake"], "--corpora"), (["--recipe", "no_such_module_xyz:f"], "--recipe"),
     (["--recipe", "quality_suite_no_colon"], "--recipe"), (["--steps", "0"], "--steps")],
)
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("quality_suite"), argv, flag, capsys)


def test_a_recipe_from_a_file_is_checked_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    good = tmp_path / "my_recipe.py"
    good.write_text(
        f"import importlib.util, dataclasses\n"
        f"spec = importlib.util.spec_from_file_location('qs', {str(REPO / 'benchmarks' / 'quality_suite.py')!r})\n"
        "qs = importlib.util.module_from_spec(spec); spec.loader.exec_module(qs)\n"
        "def recipe(method, iterations):\n"
        "    return dataclasses.replace(qs.project_recipe(method, iterations), lr=0.05)\n"
        "def wrong(method, iterations):\n"
        "    return qs.project_recipe('dense', iterations)\n"
    )
    args = qs.parse_args(["--recipe", f"{good}:recipe", "--iterations", "40"])
    assert args.recipe_configs["smi"]["lr"] == 0.05 and args.recipe_configs["smi"]["selection"]["kind"] == "smi"
    assert dataclasses.asdict(args.recipe_fn("dense", 40))["lr"] == 0.05
    with pytest.raises(SystemExit) as exc:
        qs.parse_args(["--recipe", f"{good}:wrong"])
    assert exc.value.code == 2 and "--recipe: smi" in capsys.readouterr().err


def test_random_stops_is_a_sparse_control_the_suite_accepts() -> None:
    qs = _load("quality_suite")
    args = qs.parse_args(["--recipe", f"{REPO / 'benchmarks' / 'recipes.py'}:random_stops"])
    smi, dense = args.recipe_configs["smi"], args.recipe_configs["dense"]
    assert smi["selection"]["kind"] == "random" and dense == qs.check_recipe(qs.project_recipe, 200)["dense"]
    assert {**smi, "selection": None} == {**qs.check_recipe(qs.project_recipe, 200)["smi"], "selection": None}
    assert smi["selection"]["schedule"] == qs.check_recipe(qs.project_recipe, 200)["smi"]["selection"]["schedule"]


@pytest.mark.parametrize(("name", "stops", "ratio", "saliency"), [
    ("late_stops", [20, 60, 100, 160], 0.3, "instant"), ("accumulated", [5, 10, 20, 30], 0.3, "accumulated"),
    ("late_accumulated", [20, 60, 100, 160], 0.3, "accumulated"), ("keep_more", [5, 10, 20, 30], 0.2, "instant")])
def test_smi_candidates_change_only_smis_selection(name: str, stops: list[int], ratio: float, saliency: str) -> None:
    qs = _load("quality_suite")
    args = qs.parse_args(["--recipe", f"{REPO / 'benchmarks' / 'recipes.py'}:{name}", "--iterations", "400"])
    project = qs.check_recipe(qs.project_recipe, 400)
    smi, dense = args.recipe_configs["smi"], args.recipe_configs["dense"]
    assert dense == project["dense"] and {**smi, "selection": None} == {**project["smi"], "selection": None}
    assert smi["selection"] == {**project["smi"]["selection"], "saliency": saliency,
                                "schedule": {"iterations": stops, "ratios": [ratio] * 4}}


def _check_quick(out: Path, summary: dict, teachers: set[str]) -> None:
    assert summary == json.loads((out / "summary.json").read_text())
    assert set(summary["teachers"]) == teachers
    assert summary["heldout_teachers"] == [t for t in ("digits64",) if t in teachers]
    for name, s in summary["teachers"].items():
        assert s["seeds"] == [0, 1] and set(s["corpora"]) == {"noise", "dense", "smi", "real"}
        assert s["paired"]["gap_95ci"] is not None and s["time_ratio"]["n"] == 2
        assert set(s["goals_met_on_means"]) == {"smi_time_at_most_40pct", "dense_at_least_80pct_teacher",
                                                "smi_within_2pt_of_dense", "far_above_noise"}
        result = json.loads((out / name / "seed1" / "result.json").read_text())
        assert result["images_per_corpus"] == 12 and result["seed"] == 1 and 0 <= result["teacher_top1"] <= 1
        assert result["corpora"]["smi"]["gen_seconds"] > 0 and result["corpora"]["dense"]["gen_seconds"] > 0
        assert not (out / name / "seed1" / "corpora").exists()  # removed unless --keep-corpora
    assert (out / "teachers-quick").is_dir()  # tiny teachers never touch the real cache


@pytest.mark.bench  # a study: the suite's --quick run trains teachers and students
def test_quick_mode_runs_end_to_end_and_reuses_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    out = tmp_path / "out"
    assert qs.main(["--quick", "--out", str(out), "--seeds", "0,1", "--teachers", "digits64"]) == 0
    _check_quick(out, json.loads(capsys.readouterr().out.strip().splitlines()[-1]), {"digits64"})
    # a second run with the same settings reuses every result
    assert qs.main(["--quick", "--out", str(out), "--seeds", "0,1", "--teachers", "digits64"]) == 0
    assert "reusing" in capsys.readouterr().err


@pytest.mark.bench
def test_parallel_students_equal_those_distilled_in_turn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    rows = {}
    for flags in ([], ["--parallel-students"]):
        out = tmp_path / ("at-once" if flags else "in-turn")
        assert qs.main(["--quick", "--out", str(out), "--teachers", "digits64", "--corpora", "noise,dense,smi",
                        "--cache", str(tmp_path / "teachers"), *flags]) == 0
        result = json.loads((out / "digits64" / "seed0" / "result.json").read_text())
        rows[bool(flags)] = {kind: (row["student_top1"], row["final_loss"])
                             for kind, row in result["corpora"].items() if "student_top1" in row}
    assert "at once, one process each" in capsys.readouterr().err
    assert set(rows[False]) == {"noise", "dense", "smi"} and rows[True] == rows[False]
    assert len({loss for _, loss in rows[False].values()}) == 3  # three corpora, three different students


@pytest.mark.bench
def test_quick_mode_on_every_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    assert qs.main(["--quick", "--out", str(tmp_path), "--seeds", "0,1"]) == 0
    _check_quick(tmp_path, json.loads(capsys.readouterr().out.strip().splitlines()[-1]),
                 {"shapes64", "glyphs196", "digits64"})


def test_settings_record_the_kd_views_so_a_new_default_is_not_reused() -> None:
    """A finished result is reused only under equal settings: the students' views are part of them."""
    from pipeline.evaluate.kd_views import KDAugmentConfig

    qs = _load("quality_suite")
    args = qs.parse_args(["--adversarial-eps", "0.5"])
    record = qs.settings_record(args, "shapes64", {})
    assert record["kd_views"] == dataclasses.asdict(KDAugmentConfig(adversarial_eps=0.5))
    assert qs.kd_views(args) == KDAugmentConfig(adversarial_eps=0.5)


def test_the_suite_distils_with_the_library_defaults() -> None:
    """The student's learning rate defaults to the library's; the data path's budget is in the settings."""
    from pipeline.evaluate.distill import DistillConfig

    qs = _load("quality_suite")
    from pipeline.evaluate.defaults import default_steps

    args = qs.parse_args([])
    assert args.lr == DistillConfig.lr
    assert qs.settings_record(args, "shapes64", {})["distill_memory_budget"] == DistillConfig.memory_budget
    # the step budget smi-synth distill would choose for a corpus of this size, unless --steps says otherwise
    assert args.steps == default_steps(args.classes * args.per_class, args.batch_size)
    assert qs.parse_args(["--per-class", "16", "--steps", "700"]).steps == 700


def _teacher_summary(dense: list[float], smi: list[float] | None, time_ratio: float,
                     noise: list[float] | None = None, teacher: float = 0.99) -> dict:
    """A teacher's summary as ``summarise_teacher`` lays it out, from per-seed student top-1s."""
    spread = _load("quality_seeds").spread
    corpora = {k: v for k, v in (("dense", dense), ("smi", smi), ("noise", noise)) if v}
    return {"time_ratio": spread([time_ratio] * len(dense)),
            "corpora": {k: {"student_top1": spread(v), "student_vs_teacher": spread([x / teacher for x in v])}
                        for k, v in corpora.items()}}


def test_suite_goals_are_issue_14s_on_the_means() -> None:
    goals = _load("quality_suite").suite_goals
    assert goals(_teacher_summary([0.80, 0.82], [0.79, 0.80], 0.35, noise=[0.40, 0.55])) == {
        "dense_at_least_80pct_teacher": True, "smi_within_2pt_of_dense": True, "smi_time_at_most_40pct": True,
        "far_above_noise": True}
    # dense mean 0.785 of a 0.99 teacher is 79.3%; SMI 2.5 points under dense; 41% of the time
    assert goals(_teacher_summary([0.78, 0.79], [0.76, 0.76], 0.41)) == {
        "dense_at_least_80pct_teacher": False, "smi_within_2pt_of_dense": False, "smi_time_at_most_40pct": False}
    # the worst inverted seed must clear the best noise seed by 20 points
    assert goals(_teacher_summary([0.95, 0.74], [0.95, 0.95], 0.35, noise=[0.30, 0.55]))["far_above_noise"] is False
    # with only one inverted corpus distilled, only what it allows is claimed
    assert goals(_teacher_summary([0.9], None, 0.3)) == {"dense_at_least_80pct_teacher": True,
                                                        "smi_time_at_most_40pct": True}
