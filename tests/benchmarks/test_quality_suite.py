"""benchmarks/quality_suite.py: the default recipe, argument checks, a plugged-in recipe, and the --quick run."""

from __future__ import annotations

import dataclasses
import json
import shutil
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
     (["--recipe", "quality_suite_no_colon"], "--recipe"), (["--steps", "0"], "--steps"),
     (["--quant-only", "--no-quant"], "--quant-only"), (["--quant-bits", "W9A9"], "--quant-bits"),
     (["--quant-per-class", "8", "--per-class", "4"], "--quant-per-class"), (["--quant-per-class", "0"], "--quant-per-class")],
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
        assert all(0 < result["corpora"][m]["confidence"] <= 1 for m in ("dense", "smi"))
        assert not (out / name / "seed1" / "corpora").exists()  # removed unless --keep-corpora
        # the teacher quantized on each seed's corpora, beside the students (on by default)
        assert set(result["quant"]["top1"]) == {"W8A8", "W4A4"} and s["quant"]["seeds"] == [0, 1]
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
    assert args.steps == default_steps(args.classes * args.per_class, num_classes=args.classes,
                                       batch_size=args.batch_size)
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


def test_quant_only_distils_nothing_and_inverts_what_calibration_draws() -> None:
    qs = _load("quality_suite")
    args = qs.parse_args(["--quant-only", "--quant-per-class", "8"])
    assert args.corpora == [] and args.per_class == 8 and args.quant
    assert qs.settings_record(args, "shapes64", {})["corpora"] == []  # never reused as a run with students
    assert qs.parse_args(["--quant-only", "--per-class", "64"]).per_class == 64
    default = qs.parse_args([])
    assert default.quant and default.per_class == 64 and default.quant_bits == [(8, 8), (4, 4)]
    assert default.corpora == list(qs.CORPORA) and not qs.parse_args(["--no-quant"]).quant


def _quant_result(seed: int, w4a4: dict[str, float], bits_per_class: int = 4) -> dict:
    """A result's quantization as a reused result.json gives it back: keys sorted."""
    qs = _load("quality_suite")
    args = qs.parse_args(["--quant-per-class", str(bits_per_class)])
    quant = {"settings": qs.quant_record(args), "seconds": 10.0 + seed,
             "top1": {"W8A8": dict.fromkeys(qs.CALIB, 0.99), "W4A4": w4a4}}
    return {"seed": seed, "quant": json.loads(json.dumps(quant, sort_keys=True))}


def test_quant_summary_and_the_report_render_beside_the_students(tmp_path: Path) -> None:
    qs, render = _load("quality_suite"), _load("render")
    results = [_quant_result(0, {"dense": 0.90, "smi": 0.88, "real": 0.92, "noise": 0.30}),
               _quant_result(1, {"dense": 0.92, "smi": 0.86, "real": 0.94, "noise": 0.40}),
               _quant_result(2, {"dense": 0.0, "smi": 0.0, "real": 0.0, "noise": 0.0}, bits_per_class=2)]
    q = qs.quant_summary(results)
    # seeds measured with other settings than the first are left out, not averaged in
    assert q["seeds"] == [0, 1] and set(q["per_seed"]) == {"0", "1"}
    assert q["top1"]["W4A4"]["dense"]["mean"] == pytest.approx(0.91) and q["top1"]["W4A4"]["smi"]["sd"] > 0
    assert q["seconds"]["mean"] == 10.5 and qs.quant_summary([{"seed": 0}]) == {}
    spread = _load("quality_seeds").spread
    summary = {"settings": {"classes": 10, "per_class": 4, "iterations": 200}, "seeds": [0, 1],
               "teachers": {"alpha": {"teacher_top1": spread([0.995, 0.995]), "corpora": {}, "quant": q}}}
    run = {"command": "python benchmarks/quality_suite.py --quant-only", "commit": "abc1234", "date": "2026-12-07",
           "machine": "dev box"}
    report = qs.quant_report(summary, run)
    assert report["section"] == "quality" and report["command"] == run["command"] and report["commit"] == "abc1234"
    row = report["figures"][0]
    assert row["w4a4_dense"] == "91.00 (1.4)" and row["w4a4_noise"] == "35.00 (7.1)" and row["seeds"] == 2
    assert "student_dense" not in row and "Students: the quality table's" in report["setup"]
    # rendered beside a quality suite result of the same teacher: the students fill their columns
    quality = {"section": "quality", "order": 1, "command": "suite", "figures": [
        {"teacher": "alpha", "patches": 64, "seed": s, "teacher_top1": 99.5, "dense_top1": d, "smi_top1": m}
        for s, d, m in ((0, 80.0, 82.0), (1, 90.0, 94.0))]}
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "quality_suite.json").write_text(json.dumps(quality))
    (results_dir / "quality_suite_quant.json").write_text(json.dumps(report))
    md = tmp_path / "B.md"
    assert render.main(["--results", str(results_dir), "--out", str(md), "--docs", str(tmp_path / "docs")]) == 0
    lines = md.read_text().splitlines()
    assert ("| teacher | seeds | float % | dense student % | SMI student % | W4A4 dense % | W4A4 SMI % | W4A4 real % | "
            "W4A4 noise % | W8A8 dense % | W8A8 SMI % | W8A8 real % | W8A8 noise % | quantization s a seed |") in lines
    assert ("| alpha | 2 | 99.5 | 85.00 (7.1) | 88.00 (8.5) | 91.00 (1.4) | 87.00 (1.4) | 93.00 (1.4) | 35.00 (7.1) | "
            "99.00 (0.0) | 99.00 (0.0) | 99.00 (0.0) | 99.00 (0.0) | 10.5 |") in lines


@pytest.mark.bench  # trains tiny teachers; about a minute on the dev box
def test_quant_only_quick_run_and_a_reused_result_measured_on_its_kept_corpora(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["--quick", "--quant-only", "--keep-corpora", "--out", str(out), "--teachers", "digits64"]
    assert qs.main([*argv, "--report", str(report)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    path = out / "digits64" / "seed0" / "result.json"
    result = json.loads(path.read_text())
    quant = result["quant"]
    assert set(result["corpora"]) == {"dense", "smi"} and result["settings"]["corpora"] == []  # no student
    assert not (out / "digits64" / "seed0" / "corpora" / "noise").exists()
    assert quant["calib_images"] == dict.fromkeys(qs.CALIB, 12)  # 3 classes x 4 images, every set alike
    assert set(quant["top1"]) == {"W8A8", "W4A4"} and all(set(row) == set(qs.CALIB) for row in quant["top1"].values())
    assert all(0 <= v <= 1 for row in quant["top1"].values() for v in row.values())
    assert summary["teachers"]["digits64"]["quant"]["per_seed"] == {"0": quant["top1"]}
    written = json.loads(report.read_text())
    assert written["figures"][0]["teacher"] == "digits64" and "--quant-only" in written["command"]
    # a result without quantization (an older run) gets it from its kept corpora: the same figures
    path.write_text(json.dumps({k: v for k, v in result.items() if k != "quant"}))
    assert qs.main(argv) == 0
    assert "reusing" in capsys.readouterr().err and json.loads(path.read_text())["quant"]["top1"] == quant["top1"]
    # and without kept corpora it says so and measures nothing
    path.write_text(json.dumps({k: v for k, v in result.items() if k != "quant"}))
    shutil.rmtree(out / "digits64" / "seed0" / "corpora")
    assert qs.main(argv) == 0
    assert "corpora were not kept" in capsys.readouterr().err and "quant" not in json.loads(path.read_text())


@pytest.mark.parametrize(("name", "rejoin"), [("dense_finish", 360), ("dense_finish_20", 320)])
def test_dense_finish_changes_only_smis_rejoin(name: str, rejoin: int) -> None:
    qs = _load("quality_suite")
    args = qs.parse_args(["--recipe", f"{REPO / 'benchmarks' / 'recipes.py'}:{name}", "--iterations", "400"])
    project = qs.check_recipe(qs.project_recipe, 400)
    assert args.recipe_configs["dense"] == project["dense"]
    assert args.recipe_configs["smi"] == {**project["smi"], "selection": {**project["smi"]["selection"], "rejoin": rejoin}}


def test_late_rebirth_moves_only_rebirths_stops_to_the_second_half() -> None:
    """late_rebirth keeps rebirth's first image at half the run (stops 200, 267, 333 of 400, equal shares leaving);
    dense and SMI are the project's."""
    qs = _load("quality_suite")
    recipes = qs.load_recipe(f"{REPO / 'benchmarks' / 'recipes.py'}:late_rebirth")
    methods = ("dense", "smi", "rebirth")
    late, project = qs.check_recipe(recipes, 400, methods), qs.check_recipe(qs.project_recipe, 400, methods)
    assert late["dense"] == project["dense"] and late["smi"] == project["smi"]
    assert late["rebirth"]["selection"] == {**project["rebirth"]["selection"],
                                            "schedule": {"iterations": [200, 267, 333], "ratios": [0.25, 1 / 3, 0.5]}}


def test_rebirth_packs_classes_so_its_forward_holds_as_many_targets_as_denses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebirth yields four images per target here: one target per class of four images, three classes packed
    into one engine call, where dense inverts each class's four targets in a call of its own."""
    from pipeline.corpus.tar_io import read_tar
    from pipeline.teachers.loading import load_teacher
    from smi_core.recipe import recommended_config
    from tests.run.tiny_run import make_teacher_file

    qs = _load("quality_suite")
    checkpoint = make_teacher_file(tmp_path)
    calls: list[tuple[str, list[list[int]]]] = []
    packed = qs.invert_packed

    def spy(model, batches, config, **kwargs):  # the suite's own call, recorded on its way to the engine
        calls.append((config.selection.kind, [targets.tolist() for targets, _ in batches]))
        return packed(model, batches, config, **kwargs)

    monkeypatch.setattr(qs, "invert_packed", spy)
    configs = {m: recommended_config(m, 8) for m in ("dense", "rebirth")}
    roots = {m: tmp_path / m for m in configs}
    timing = qs.write_inverted(roots, configs, load_teacher(str(checkpoint)), checkpoint, 3, 4, 0)
    assert sorted(calls) == [("dense", [[0] * 4]), ("dense", [[1] * 4]), ("dense", [[2] * 4]),
                             ("rebirth", [[0], [1], [2]])]
    assert timing["rebirth"]["flops"] < timing["dense"]["flops"] / 4  # four images from each target's one run
    layout = qs.CorpusLayout(roots["rebirth"])
    for shard in range(3):
        records = list(read_tar(layout.storage, layout.tar(shard)))
        assert [json.loads(r["json"])["label"] for _, r in records] == [shard] * 4
