"""benchmarks/class_count.py: argument checks, quality_suite's many-class teachers, and the --quick study."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.benchmarks import assert_usage_error
from tests.benchmarks import load_benchmark as _load


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--teachers", "imagenet"], "--teachers"), (["--teachers", ""], "--teachers"),
     (["--corpora", "dense,fake"], "--corpora"), (["--seeds", "0,x"], "--seeds")],
)
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(_load("class_count"), argv, flag, capsys)


def test_quality_suite_takes_the_many_class_teachers_up_to_their_classes(capsys: pytest.CaptureFixture[str]) -> None:
    qs = _load("quality_suite")
    assert qs.parse_args(["--teachers", "glyphs30x196", "--classes", "30"]).classes == 30
    assert_usage_error(qs, ["--teachers", "glyphs30x196", "--classes", "31"], "--classes", capsys)
    assert_usage_error(qs, ["--teachers", "glyphs196,glyphs30x196", "--classes", "30"], "--classes", capsys)


def test_each_teacher_is_studied_at_all_its_classes(tmp_path: Path) -> None:
    cc = _load("class_count")
    args = cc.parse_args(["--per-class", "3", "--steps", "7", "--out", str(tmp_path)])
    assert args.teachers == ["glyphs196", "glyphs30x196", "glyphs100x196"]
    classes = [_load("quality_suite").parse_args(cc.suite_argv(name, args)).classes for name in args.teachers]
    assert classes == [10, 30, 100]


@pytest.mark.slow  # two tiny teachers, their held-out glyphs and six students: about 50 CPU-seconds
def test_quick_study_writes_the_table_the_json_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cc = _load("class_count")
    out, doc_path, plot = tmp_path / "out", tmp_path / "cc.json", tmp_path / "cc.png"
    assert cc.main(["--quick", "--out", str(out), "--json", str(doc_path), "--plot", str(plot),
                    "--machine", "test box"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads(doc_path.read_text())
    assert doc == printed and doc["machine"] == "test box" and doc["command"].startswith("python benchmarks/class_count.py --quick")
    assert [(r["teacher"], r["classes"], r["images_per_corpus"]) for r in doc["rows"]] == [
        ("glyphs196", 10, 20), ("glyphs30x196", 30, 60)]
    for row in doc["rows"]:
        assert set(row["corpora"]) == {"noise", "dense", "smi", "real"}
        for kind in ("noise", "dense", "smi"):
            cell = row["corpora"][kind]
            assert 0.0 <= cell["student_top1"]["mean"] <= 1.0 and cell["gen_seconds"]["mean"] > 0
        assert "student_top1" not in row["corpora"]["real"]  # generated, not distilled by default
        assert (out / row["teacher"] / "seed0" / "result.json").is_file()
    assert doc["plot"] == str(plot) and plot.read_bytes().startswith(b"\x89PNG")
    assert (out / "teachers-quick" / "suite-glyphs30x196-v1" / "model.safetensors").is_file()


def _row(teacher: str, classes: int, held: bool, shares: dict[str, float]) -> dict:
    spread = lambda v: {"mean": v, "sd": 0.02, "min": v, "max": v, "n": 2}  # noqa: E731
    return {"teacher": teacher, "classes": classes, "heldout_teacher": held, "seeds": [0, 1],
            "images_per_corpus": 4 * classes,
            "corpora": {k: {"student_vs_teacher": spread(v)} for k, v in shares.items()}}


def test_plot_draws_each_distilled_corpus_in_its_colour() -> None:
    cc = _load("class_count")
    render = _load("render")
    rows = [_row("glyphs196", 10, False, {"dense": 0.9, "smi": 0.8, "noise": 0.1}),
            _row("glyphs100x196", 100, False, {"dense": 0.5, "smi": 0.4, "noise": 0.05}),
            _row("glyphs100x196b", 100, True, {"dense": 0.45, "smi": 0.35, "noise": 0.05})]
    img = Image.open(io.BytesIO(cc.plot_png(rows))).convert("RGB")
    assert img.size == (560, 400)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert {render.DENSE, render.SMI, render.NOISE} <= colours
    no_smi = Image.open(io.BytesIO(cc.plot_png([{**r, "corpora": {k: v for k, v in r["corpora"].items() if k != "smi"}}
                                                 for r in rows]))).convert("RGB")
    assert render.SMI not in {c for _, c in no_smi.getcolors(maxcolors=1 << 20)}
