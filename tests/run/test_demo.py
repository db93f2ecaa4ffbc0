"""``smi-synth demo``: its closing lines (held-out top-1 of the teacher, the corpus's student and the noise
student) and, marked slow, the whole demo end to end with a two-step distillation."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.evaluate.worth import Worth
from pipeline.run import demo


def test_the_demo_prints_teacher_corpus_and_noise_students_side_by_side() -> None:
    text = demo.format_worth(Worth(teacher_top1=0.998, corpus_top1=0.4125, noise_top1=0.1, student="test_resnet",
                                   steps=150, corpus_images=80, num_classes=10, eval_images=2000,
                                   distill_seconds=101.2))
    lines = text.splitlines()
    assert len(lines) == 4 and "2,000 real toy images" in lines[0] and "150 steps each" in lines[0]
    assert lines[1].split()[-1] == "99.80%" and "teacher" in lines[1]
    assert "demo corpus" in lines[2] and lines[2].split()[-1] == "41.25%"
    assert "Gaussian noise" in lines[3] and "10.00%" in lines[3] and "80 noise images" in lines[3]
    assert "chance 10%" in lines[3]


def test_the_demo_distillation_is_set_in_one_place() -> None:
    assert isinstance(demo.DEMO_DISTILL.steps, int) and demo.DEMO_DISTILL.steps > 0
    assert demo.DEMO_MANIFEST.is_file()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch, capsys, local_ray) -> None:
    """The real demo (toy teacher from the cache, local Ray), with two distillation steps per student."""
    from pipeline.cli import main

    monkeypatch.setattr(demo, "DEMO_DISTILL", dataclasses.replace(demo.DEMO_DISTILL, steps=2))
    assert main(["demo", "--out", str(tmp_path / "demo-out")]) == 0
    out = capsys.readouterr().out
    assert "verify: ok" in out and "2 steps each" in out
    for needle in ("toy teacher ", "student distilled from the demo corpus", "student distilled from Gaussian noise",
                   "demo finished in"):
        assert needle in out
