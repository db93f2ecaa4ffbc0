"""benchmarks/saliency_settling.py: the set arithmetic on hand-made rankings, argument checks, the --quick run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.benchmarks import assert_usage_error
from tests.benchmarks import load_benchmark as _load


def test_lowest_set_takes_each_rows_lowest_share() -> None:
    ss = _load("saliency_settling")
    saliency = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.8], [0.0, 1.0, 2.0, 3.0, 4.0]])
    got = ss.lowest_set(saliency, 0.4)  # int(0.4 * 5) = 2 per row
    assert got.tolist() == [[False, True, False, True, False], [True, True, False, False, False]]
    with pytest.raises(ValueError, match="selects none"):
        ss.lowest_set(saliency, 0.1)


def test_shared_and_settling_on_a_ranking_that_stops_moving() -> None:
    ss = _load("saliency_settling")
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[True, False, True, False]])
    assert ss.shared(a, a) == 1.0 and ss.shared(a, b) == 0.5
    assert ss.shared(torch.cat([a, a]), torch.cat([a, b])) == 0.75  # mean over rows
    # moves every iteration up to iteration 4 (1-based), then stays: settled from the first t with t-1 equal
    sets = [a, b, a, b] + [a] * 6
    assert ss.settles_at(sets, window=1, threshold=1.0) == 6
    assert ss.first_settled(sets, window=1, threshold=1.0) == 6 and ss.first_settled(sets, window=2, threshold=1.0) == 3
    # two back: equal while a and b alternate, then iteration 6 (a) meets iteration 4 (b) once more
    assert ss.settles_at(sets, window=2, threshold=1.0) == 7
    assert ss.settles_at([a, b] * 5, window=1, threshold=0.9) is None
    assert ss.first_settled([a, b] * 5, window=1, threshold=0.9) is None
    assert ss.first_settled([a, a, b], window=1, threshold=0.9) == 2 and ss.settles_at([a, a, b], 1, 0.9) is None


@pytest.mark.parametrize("argv, flag", [
    (["--teachers", "cifar"], "--teachers"), (["--classes", "11"], "--classes"),
    (["--ratio", "1.5"], "--ratio"), (["--iterations", "5", "--window", "5"], "--iterations"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("saliency_settling"), argv, flag, capsys)


@pytest.mark.bench  # a study: trains the suite's tiny teachers and inverts with them
def test_quick_run_reports_every_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ss = _load("saliency_settling")
    out = tmp_path / "settling.json"
    assert ss.main(["--quick", "--teachers", "shapes64,glyphs196", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    rows = {row["teacher"]: row for row in result["teachers"]}
    assert rows["shapes64"]["patches"] == 64 and rows["glyphs196"]["patches"] == 196
    for row in rows.values():
        assert row["images"] == 4 and row["iterations"] == 12
        assert set(row["paper_stops"]) and all(0.0 <= v <= 1.0 for v in row["paper_stops"].values())
        assert row["by_iteration"]["1"]["with_window"] is None and 0 <= row["by_iteration"]["10"]["with_window"] <= 1
        assert row["settles_at"] is None or 4 <= row["settles_at"] <= 12
        assert row["first_settled"] is None or 3 <= row["first_settled"] <= (row["settles_at"] or 12)
