"""benchmarks/quant_calibration.py: argument checks, merging results, and the --quick run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import assert_usage_error
from tests.benchmarks import load_benchmark as _load


@pytest.mark.parametrize(("argv", "flag"), [(["--teachers", "imagenet"], "--teachers")])
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("quant_calibration"), argv, flag, capsys)


def test_merge_keeps_other_teachers_of_the_same_settings() -> None:
    qc = _load("quant_calibration")
    old = {"format": qc.FORMAT, "settings": {"seeds": [0]}, "teachers": {"glyphs196": {"a": 1}, "digits64": {"a": 2}}}
    new = {"format": qc.FORMAT, "settings": {"seeds": [0]}, "teachers": {"digits64": {"a": 3}}}
    assert qc.merge_results(old, new)["teachers"] == {"glyphs196": {"a": 1}, "digits64": {"a": 3}}
    other = {**old, "settings": {"seeds": [1]}}
    assert qc.merge_results(other, new)["teachers"] == {"digits64": {"a": 3}}


@pytest.mark.bench
def test_quick_run_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qc = _load("quant_calibration")
    out = tmp_path / "q.json"
    assert qc.main(["--quick", "--teachers", "digits64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result == json.loads(out.read_text()) and result["commit"] and result["machine"]
    t = result["teachers"]["digits64"]
    assert set(t["rows"]) == {"W8A8", "W4A4"} and t["calib_images"] == 20 and t["eval_images"] == 50
    for row in t["rows"].values():
        assert set(row) == {"dense", "smi", "real", "noise"}
        assert all(len(cell["values"]) == 1 and 0 <= cell["mean"] <= 1 for cell in row.values())
    assert set(t["goals"]) >= {"w8a8_within_1pt_of_float", "w4a4_calibration_matters", "w4a4_smi_within_1pt_of_dense"}
    assert any(line.startswith("digits64   W4A4") for line in printed)
