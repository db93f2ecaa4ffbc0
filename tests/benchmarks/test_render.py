"""benchmarks/render.py: BENCHMARKS.md's tables and the plots from a results folder, and --check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.benchmarks import REPO
from tests.benchmarks import load_benchmark as _load

ENGINE = {
    "section": "engine", "title": "CPU bench", "command": "make bench", "commit": "abc1234",
    "date": "2026-11-24", "machine": "dev box, 2 cores",
    "columns": {"workload": "workload", "speedup": "speedup", "flop_ratio": "FLOP ratio"},
    "figures": [{"workload": "big batch", "speedup": 3.57, "flop_ratio": 3.66},
                {"workload": "small batch", "speedup": 1.45, "flop_ratio": 2.41}],
}
QUALITY = {
    "section": "quality", "title": "Suite", "command": ["suite --seeds 0,1"], "date": "2026-11-30",
    "machine": "dev box",
    "figures": [
        {"teacher": "alpha", "patches": 64, "seed": 0, "teacher_top1": 100.0, "noise_top1": 10.0, "dense_top1": 80.0,
         "smi_top1": 82.0, "dense_s": 100.0, "smi_s": 30.0, "smi_dense_time_pct": 30.0},
        {"teacher": "alpha", "patches": 64, "seed": 1, "teacher_top1": 100.0, "noise_top1": None, "dense_top1": 90.0,
         "smi_top1": 94.0, "dense_s": None, "smi_s": None, "smi_dense_time_pct": 40.0},
        {"teacher": "beta", "patches": 196, "seed": 0, "teacher_top1": 98.0, "noise_top1": 50.0, "dense_top1": 96.0,
         "smi_top1": 97.0, "dense_s": 700.0, "smi_s": 180.0, "smi_dense_time_pct": 25.0},
    ],
}
CLASS_COUNT = {  # another helper's schema: no section, no columns
    "command": "python benchmarks/class_count.py --classes 10,100", "date": "2026-12-07",
    "figures": [{"classes": 10, "top1": 64.2}, {"classes": 100, "top1": 31.5, "extra": "new key"}],
}


def write_results(folder: Path, **results: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in results.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


def render_to(tmp_path: Path, results: Path) -> tuple[str, Path]:
    render = _load("render")
    md, docs = tmp_path / "out" / "BENCHMARKS.md", tmp_path / "out" / "docs"
    assert render.main(["--results", str(results), "--out", str(md), "--docs", str(docs)]) == 0
    return md.read_text(), docs


def test_tables_and_plots_from_a_tiny_results_folder(tmp_path: Path) -> None:
    unknown = {"command": "python x.py", "figures": [{"a": 1}]}  # a section nobody declared: its own, last
    results = write_results(tmp_path / "results", engine=ENGINE, quality=QUALITY, class_count=CLASS_COUNT,
                            gpu_loader=unknown)
    md, docs = render_to(tmp_path, results)
    lines = md.splitlines()
    # one section per measure, in the fixed order, each result with its command, date, commit and machine
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Engine speed against the FLOP limit", "## Quality per teacher",
                        "## Quality against generation time", "## Class count", "## gpu loader"]
    assert "make bench" in lines and "Measured 2026-11-24, commit `abc1234`, dev box, 2 cores." in lines
    assert "| workload | speedup | FLOP ratio |" in lines and "| big batch | 3.57 | 3.66 |" in lines
    # the summary: means (sd) over seeds, and the paired interval with t(1 dof) = 12.706 on diffs 2 and 4:
    # mean 3, sd sqrt(2), half-width 12.706 * sqrt(2) / sqrt(2) = 12.706
    summary = "| alpha | 64 | 2 | 100.0 | 10.00 | 85.00 (7.1) | 88.00 (8.5) | 0.850 | +3.0 (-9.7 to +15.7) | 35.0 |"
    assert summary in lines
    assert "| beta | 196 | 1 | 98.0 | 50.00 | 96.00 | 97.00 | 0.980 | one seed: +1.0 | 25.0 |" in lines
    # an unknown file: its command and a table of its rows with the union of their keys
    assert "python benchmarks/class_count.py --classes 10,100" in lines
    assert "| classes | top1 | extra |" in lines and "| 100 | 31.5 | new key |" in lines
    # the plots, linked relative to the Markdown file
    assert "![Engine speed against the FLOP limit](docs/speed_vs_flops.png)" in lines
    assert "![Quality against generation time](docs/quality_vs_time.png)" in lines
    with Image.open(docs / "speed_vs_flops.png") as img:
        assert img.format == "PNG" and img.size == (620, 440)
        speed = np.asarray(img.convert("RGB")).astype(int)
    with Image.open(docs / "quality_vs_time.png") as img:
        assert img.format == "PNG" and img.size == (680, 300)  # two teachers: one row of two panels
        quality = np.asarray(img.convert("RGB")).astype(int)

    def pixels_near(image: np.ndarray, colour: tuple[int, int, int]) -> int:
        return int((np.abs(image - np.array(colour)).sum(axis=2) < 30).sum())

    assert pixels_near(speed, (31, 119, 180)) > 50  # the two measured points
    assert pixels_near(quality, (31, 119, 180)) > 50 and pixels_near(quality, (255, 127, 14)) > 50  # dense and SMI


QUANT = {  # quality_suite.py --quant-only --report: one row per teacher, no students of its own
    "section": "quality", "order": 2, "title": "Suite quantization", "command": "quality_suite.py --quant-only",
    "columns": {"teacher": "teacher", "seeds": "seeds", "float": "float %", "w4a4_dense": "W4A4 dense %",
                "w4a4_smi": "W4A4 smi %", "quant_s": "quantization s a seed"},
    "figures": [{"teacher": "alpha", "seeds": 3, "float": 99.5, "w4a4_dense": "91.53 (1.5)", "w4a4_smi": "88.60 (1.6)",
                 "quant_s": 12.5},
                {"teacher": "gamma", "seeds": 3, "float": 97.0, "w4a4_dense": "90.00 (0.1)", "w4a4_smi": "89.00 (0.2)",
                 "quant_s": 3.0}],
}


def test_quantization_rows_get_the_students_beside_them(tmp_path: Path) -> None:
    quality = {**QUALITY, "order": 1}  # as the repository's suite result sets it
    md, _ = render_to(tmp_path, write_results(tmp_path / "results", quality=quality, quality_suite_quant=QUANT))
    lines = md.splitlines()
    # in the quality section, after the suite's own block (order 2), the students' mean (sd) over their seeds
    # beside the float column; a teacher without students keeps empty cells
    assert "| teacher | seeds | float % | dense student % | SMI student % | W4A4 dense % | W4A4 smi % | " \
           "quantization s a seed |" in lines
    assert "| alpha | 3 | 99.5 | 85.00 (7.1) | 88.00 (8.5) | 91.53 (1.5) | 88.60 (1.6) | 12.5 |" in lines
    assert "| gamma | 3 | 97.0 |  |  | 90.00 (0.1) | 89.00 (0.2) | 3.0 |" in lines
    assert lines.index("### Suite") < lines.index("### Suite quantization") < lines.index("## Quality against generation time")
    # the quality summary and its plot are the students' alone
    assert "| alpha | 64 | 2 | 100.0 | 10.00 | 85.00 (7.1) | 88.00 (8.5) | 0.850 | +3.0 (-9.7 to +15.7) | 35.0 |" in lines
    # rows that bring their own students are left as they are
    own = {**QUANT, "figures": [{**QUANT["figures"][0], "student_dense": "1.00", "student_smi": "2.00"}],
           "columns": {**QUANT["columns"], "student_dense": "dense student %", "student_smi": "SMI student %"}}
    md, _ = render_to(tmp_path / "own", write_results(tmp_path / "own-results", quality=quality, quality_suite_quant=own))
    assert "| alpha | 3 | 99.5 | 91.53 (1.5) | 88.60 (1.6) | 12.5 | 1.00 | 2.00 |" in md.splitlines()


def test_no_quality_results_no_quality_sections_nor_plot(tmp_path: Path) -> None:
    md, docs = render_to(tmp_path, write_results(tmp_path / "results", engine=ENGINE))
    assert "## Quality" not in md and not (docs / "quality_vs_time.png").exists()
    assert (docs / "speed_vs_flops.png").is_file()


def test_check_says_whether_the_outputs_are_up_to_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    render = _load("render")
    results = write_results(tmp_path / "results", engine=ENGINE, quality=QUALITY)
    md = tmp_path / "BENCHMARKS.md"
    argv = ["--results", str(results), "--out", str(md), "--docs", str(tmp_path / "docs")]
    assert render.main([*argv, "--check"]) == 1 and not md.exists()  # nothing rendered yet; check writes nothing
    assert render.main(argv) == 0
    assert render.main([*argv, "--check"]) == 0
    md.write_text(md.read_text().replace("| big batch | 3.57 |", "| big batch | 3.9 |"))  # a hand edit
    capsys.readouterr()
    assert render.main([*argv, "--check"]) == 1 and "BENCHMARKS.md is out of date" in capsys.readouterr().err
    assert render.main(argv) == 0
    write_results(results, engine={**ENGINE, "figures": ENGINE["figures"][:1]})  # a new measurement
    assert render.main([*argv, "--check"]) == 1


def test_a_malformed_results_file_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    render = _load("render")
    results = write_results(tmp_path / "results", broken={"command": "x", "figures": {"a": 1}})
    assert render.main(["--results", str(results), "--out", str(tmp_path / "B.md"), "--check"]) == 2
    assert "broken.json: 'figures' must be a list" in capsys.readouterr().err


def test_the_repository_benchmarks_md_is_rendered_from_its_results() -> None:
    """BENCHMARKS.md and docs/*.png are what `make bench-render` makes of benchmarks/results (no hand edits)."""
    render = _load("render")
    assert render.main(["--check"]) == 0, "run `make bench-render` and commit the result"
    assert len((REPO / "BENCHMARKS.md").read_text().splitlines()) < 400


def test_the_distillation_cost_result_gets_its_means_and_ratio(tmp_path: Path) -> None:
    cost = {
        "section": "distill_cost", "title": "Distillation cost", "command": "python benchmarks/distill_cost.py c",
        "date": "2026-12-07", "machine": "dev box",
        "figures": [{"seed": 0, "before_s": 100.0, "before_top1": 60.0, "after_s": 30.0, "after_top1": 62.0},
                    {"seed": 1, "before_s": 120.0, "before_top1": 64.0, "after_s": 36.0, "after_top1": 63.0},
                    {"seed": 2, "before_s": 110.0, "before_top1": None, "after_s": 33.0, "after_top1": 61.0}],
    }
    text, _ = render_to(tmp_path, write_results(tmp_path / "results", distill_cost=cost))
    lines = text.splitlines()
    assert "## Distillation cost" in lines
    summary = next(line for line in lines if line.startswith("| after |"))  # the seeds with both arms' top-1
    cells = [c.strip() for c in summary.strip("|").split("|")]
    assert cells == ["after", "2", "62.00 (2.8)", "62.50 (0.7)", "30.0", "+0.5 (-18.6 to +19.6)"]
    assert "| 2 | 110.0 | None |" not in text and "| 2 | 110.0 |  | 33.0 | 61.0 |" in text  # the per-seed table
    # with alternating short runs, each arm's share is their seconds per step; every arm gets its row
    cost["figures"] = [{**row, "pool_s": 20.0, "pool_top1": 60.0} for row in cost["figures"]]
    cost["timing"] = {"arms": {"pool": {"per_step_ratio": 0.5}}}
    text, _ = render_to(tmp_path, write_results(tmp_path / "results2", distill_cost=cost))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith(("| after |", "| pool |"))}
    assert "| 30.0 |" in rows["after"] and "| 50.0 (per step) |" in rows["pool"] and "-2.0 (" in rows["pool"]


def test_a_result_shows_the_plot_its_command_drew_when_the_file_exists(tmp_path: Path) -> None:
    drawn = tmp_path / "drawn.png"
    Image.new("RGB", (4, 4), "white").save(drawn)
    study = {**CLASS_COUNT, "title": "A study", "plot": str(drawn)}
    missing = {**CLASS_COUNT, "title": "Another", "plot": str(tmp_path / "never-drawn.png")}
    md, _ = render_to(tmp_path, write_results(tmp_path / "results", class_count=study, other=missing))
    lines = md.splitlines()
    assert "![A study](../drawn.png)" in lines  # relative to BENCHMARKS.md (under tmp_path/out)
    assert lines.index("### A study") < lines.index("![A study](../drawn.png)") < lines.index("| classes | top1 | extra |")
    assert "never-drawn" not in md
