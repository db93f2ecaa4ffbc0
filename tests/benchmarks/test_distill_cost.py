"""benchmarks/distill_cost.py: argument checks, the order of the runs, and the document render.py reads."""

from __future__ import annotations

import pytest

from tests.benchmarks import assert_usage_error
from tests.benchmarks import load_benchmark as _load


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["c", "--seeds", "0,x"], "--seeds"), (["c", "--seeds", "1,1"], "--seeds"), (["c", "--seeds", ","], "--seeds"),
     (["c", "--arms", "before,fast"], "--arms"), (["c", "--arms", ""], "--arms"),
     (["c", "--parallel", "0"], "--parallel"),
     (["c", "--no-runs"], "--no-runs"), (["c", "--timing-steps", "-1"], "--timing-steps"),
     (["c", "--profile-steps", "-2"], "--profile-steps"), ([], "corpus"),
     (["c", "--before-root", "/nonexistent"], "--before-root"),
     (["c", "--arms", "before,fresh-half", "--profile-steps", "3"], "--profile-steps")],
)
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("distill_cost"), argv, flag, capsys)


def test_the_arms_of_a_seed_run_side_by_side_and_timing_alternates(tmp_path) -> None:
    dc = _load("distill_cost")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "cli.py").write_text("")  # a checkout of the code before the change
    args = dc.parse_args(["c", "--seeds", "3,1", "--timing-steps", "20", "--timing-rounds", "2",
                          "--before-root", str(tmp_path)])
    assert [(r.arm, r.seed) for r in dc.plan(args)] == [("before", 3), ("after", 3), ("before", 1), ("after", 1)]
    assert [r.root for r in dc.plan(args)] == [tmp_path.resolve(), dc.ROOT] * 2  # before runs the old code
    assert [r.root for r in dc.timing_plan(args)] == [tmp_path.resolve(), dc.ROOT] * 2
    timing = dc.timing_plan(args)
    assert [r.arm for r in timing] == ["before", "after", "before", "after"]
    assert all(r.argv[r.argv.index("--steps") + 1] == "20" and r.argv.count("--steps") == 1 for r in timing)
    assert dc.with_steps(["--lr", "1"], 5) == ["--lr", "1", "--steps", "5"]
    cmd = dc.command(dc.plan(args)[0], "/c", "toy")
    assert cmd[1:6] == ["-m", "pipeline.cli", "distill", "/c", "--eval"] and cmd[-len(dc.ARMS["before"]):] == dc.ARMS[
        "before"]


def test_the_document_has_a_row_per_seed_with_both_arms() -> None:
    dc = _load("distill_cost")
    args = dc.parse_args(["c", "--seeds", "0,1", "--timing-steps", "10", "--timing-rounds", "1"])

    def row(arm: str, seed: int, seconds: float, top1: float | None) -> dict:
        return {"arm": arm, "seed": seed, "seconds": seconds, "wall_seconds": seconds + 5, "student_top1": top1,
                "teacher_top1": 0.99, "steps": 3000, "budget": "--steps", "commit": "c", "date": "d"}

    rows = [row("before", 0, 300.0, 0.6), row("after", 0, 100.0, 0.62), row("before", 1, 330.0, 0.64)]
    timing = [{**row("before", 0, 1.0, 0.1), "steps": 10}, {**row("after", 0, 0.25, 0.1), "steps": 10}]
    doc = dc.summarise(rows, args, timing)
    assert doc["section"] == "distill_cost" and doc["machine"].startswith("dev box")
    assert doc["figures"] == [{"seed": 0, "before_s": 300.0, "before_top1": 60.0, "after_s": 100.0, "after_top1": 62.0},
                              {"seed": 1, "before_s": 330.0, "before_top1": 64.0, "after_s": None, "after_top1": None}]
    assert doc["arms"]["before"]["seconds"]["mean"] == 315.0 and doc["arms"]["after"]["student_top1"]["sd"] == 0.0
    assert doc["timing"]["per_step_ratio"] == 0.25 and "25.0% of before" in doc["notes"][-1]
    assert doc["seconds_ratio"] == pytest.approx(100 / 315)


def test_without_full_runs_the_rows_are_the_timing_rounds_or_the_profile() -> None:
    dc = _load("distill_cost")
    args = dc.parse_args(["c", "--no-runs", "--timing-steps", "10", "--timing-rounds", "2", "--profile-steps", "4",
                          "--note", "first", "--note", "second"])
    base = {"seed": 0, "wall_seconds": 9.0, "student_top1": 0.1, "teacher_top1": 0.99, "steps": 10}
    timing = [{**base, "arm": arm, "seconds": s} for arm, s in (("before", 4.0), ("after", 1.0), ("before", 5.0),
                                                                 ("after", 1.5))]
    profile = {"before": {"views": 4.0, "adversarial": 300.0}, "after": {"views": 4.0}}
    doc = dc.summarise([], args, timing, profile)
    assert doc["figures"] == [{"round": 1, "before_s_per_step": 0.4, "after_s_per_step": 0.1},
                              {"round": 2, "before_s_per_step": 0.5, "after_s_per_step": 0.15}]
    assert list(doc["columns"]) == ["round", "before_s_per_step", "after_s_per_step"] and "arms" in doc
    assert doc["timing"]["per_step_ratio"] == pytest.approx(0.125 / 0.45)
    assert doc["timing"]["per_round_ratio"] == pytest.approx([0.25, 0.3])
    assert "per round 25.0%, 30.0%" in doc["notes"][-1]
    assert "Timing: 10-step commands" in doc["setup"] and "Load average" in doc["setup"]
    assert doc["setup"].startswith("Corpus c, the default student")  # no manifest there: the folder alone
    assert any(n.startswith("Profile (4 steps") and "before 304.0" in n for n in doc["notes"])
    assert doc["notes"][2:4] == ["first", "second"]  # after the arms' command lines
    only_profile = dc.summarise([], dc.parse_args(["c", "--no-runs", "--profile-steps", "4"]), [], profile)
    assert only_profile["figures"] == [{"phase": "views", "before_ms": 4.0, "after_ms": 4.0},
                                       {"phase": "adversarial", "before_ms": 300.0, "after_ms": None},
                                       {"phase": "step", "before_ms": 304.0, "after_ms": 4.0}]


def test_every_arm_is_compared_with_before() -> None:
    dc = _load("distill_cost")
    args = dc.parse_args(["c", "--seeds", "0", "--arms", "before,fresh-half", "--timing-steps", "10",
                          "--timing-rounds", "1"])
    base = {"seed": 0, "wall_seconds": 9.0, "teacher_top1": 0.99, "steps": 10, "budget": "--steps", "commit": "c",
            "date": "d"}
    rows = [{**base, "arm": "before", "seconds": 300.0, "student_top1": 0.70, "steps": 3000},
            {**base, "arm": "fresh-half", "seconds": 180.0, "student_top1": 0.69, "steps": 3000}]
    timing = [{**base, "arm": "before", "seconds": 2.0, "student_top1": 0.1},
              {**base, "arm": "fresh-half", "seconds": 1.2, "student_top1": 0.1}]
    doc = dc.summarise(rows, args, timing)
    assert doc["arms"]["fresh-half"]["seconds_ratio"] == pytest.approx(0.6)
    assert doc["arms"]["fresh-half"]["top1_difference"] == pytest.approx(-0.01)
    assert doc["timing"]["arms"]["fresh-half"]["per_step_ratio"] == pytest.approx(0.6)
    assert "fresh-half 0.120 s (60.0% of before" in doc["notes"][-1] and "seconds_ratio" not in doc
