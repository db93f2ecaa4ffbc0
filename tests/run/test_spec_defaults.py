"""Manifest defaults come from smi_core.recipe.recommended_config; explicit fields win; a corpus started
under older defaults resumes with the settings it was made with, or is refused naming what the manifest
changed."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.run.spec as spec_mod
from pipeline.cli import main
from pipeline.corpus.layout import CorpusLayout
from pipeline.run.engine_schema import inversion_fields
from pipeline.run.spec import load_spec
from smi_core import InversionConfig, paper_stops, recommended_config
from smi_core.config import AugmentConfig, LossWeights, SelectionConfig, StopSchedule
from tests.cli_stderr import cli_lines
from tests.run.fake_teacher import fake_describe
from tests.run.test_spec import PAPER_RECIPE, merged, write
from tests.run.tiny_run import last_json, tar_digests, write_manifest

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
MINIMAL: dict[str, Any] = {"teacher": "toy", "classes": "all", "images_per_class": 4, "images_per_shard": 2,
                           "inversion": {"method": "smi", "iterations": 300}, "output": "out"}


@pytest.fixture
def fake_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)


@pytest.mark.parametrize("iterations", [20, 300, 1000, 4000])
@pytest.mark.parametrize("method", ["dense", "smi"])
def test_a_minimal_manifest_gets_the_recommended_recipe(tmp_path: Path, fake_teacher: None, method: str,
                                                        iterations: int) -> None:
    """Teacher, classes, counts, method and iterations: the rest is the recommended recipe, whose stops
    scale with the iteration count (changing it alone is valid)."""
    spec = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"method": method, "iterations": iterations}})))
    assert spec.inversion_config() == recommended_config(method, iterations)  # type: ignore[arg-type]
    assert spec.resolved()["inversion"]["schedule"]["iterations"] == list(paper_stops(iterations))
    assert spec.resolved()["inversion"] == inversion_fields(recommended_config(method, iterations),  # type: ignore[arg-type]
                                                            batch_size=2)


def test_pinned_stops_get_pixels_only_unless_a_pyramid_is_written(tmp_path: Path, fake_teacher: None) -> None:
    """The recommended coarse levels would move pinned pixels: an SMI manifest that pins its stopped patches
    gets the pixel-only image instead of an error about a field it never wrote; writing both is refused."""
    assert recommended_config("smi", 300).pyramid == (2, 4, 8)
    frozen = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"stopped_patches": "frozen"}})))
    assert frozen.inversion_config().pyramid == () and frozen.inversion_config().selection.stopped == "frozen"
    dense = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"method": "dense", "stopped_patches": "frozen"}})))
    assert dense.inversion_config().pyramid == (2, 4, 8)  # a dense run stops nothing: stopped_patches is moot
    with pytest.raises(spec_mod.UserError, match="inversion.pyramid"):
        load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"stopped_patches": "frozen", "pyramid": [2]}})))


def test_explicit_fields_win_and_unset_ones_stay_recommended(tmp_path: Path, fake_teacher: None) -> None:
    spec = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {
        "lr": 0.2, "loss": {"tv_l2": 1e-4}, "augment": {"max_roll_fraction": 0.125, "colour_shift": 0.3},
        "schedule": {"iterations": [10, 20, 40]}}})))
    rec = recommended_config("smi", 300)
    expected = dataclasses.replace(
        rec, lr=0.2, loss=dataclasses.replace(rec.loss, tv_l2=1e-4),
        augment=dataclasses.replace(rec.augment, max_roll_fraction=0.125, colour_shift=0.3),
        selection=dataclasses.replace(rec.selection, schedule=StopSchedule((10, 20, 40), (0.3, 0.3, 0.3))))
    assert spec.inversion_config() == expected  # stops without ratios: the recommended ratio at each


@pytest.mark.parametrize(("inversion", "message"), [
    ({"lr": None}, "inversion.lr: must not be null"),
    ({"loss": {"tv_l2": None}}, "inversion.loss.tv_l2: must not be null"),
    ({"augment": {"zoom": [0.5]}}, "inversion.augment.zoom: expected 2 items"),
    ({"augment": {"zoom": [0.0, 1.0]}}, "inversion.augment.zoom: expected 0 < lo <= hi <= 1"),
    ({"iterations": 1}, "inversion.schedule.iterations: stop iteration 1 is not below the run's 1 iterations"),
])
def test_bad_recipe_fields_exit_2_naming_the_field(tmp_path: Path, fake_teacher: None,
                                                  capsys: pytest.CaptureFixture[str],
                                                  inversion: dict[str, Any], message: str) -> None:
    assert main(["plan", str(write(tmp_path, merged(MINIMAL, {"inversion": inversion})))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(cli_lines(err)) == 1, err


def test_every_engine_field_can_be_written_in_a_manifest(tmp_path: Path, fake_teacher: None) -> None:
    """Every field away from both the engine's and the recipe's default round-trips through a manifest
    (tests/run/test_engine_schema.py adds fields to smi_core's config and sees them do the same)."""
    odd = InversionConfig(
        iterations=50, lr=0.3, betas=(0.6, 0.9), keep_best=False, compile="default", pyramid=(2, 4),
        selection=SelectionConfig(kind="smi", schedule=StopSchedule((5, 9), (0.2, 0.4)), stopped="prior",
                                  saliency="accumulated"),
        loss=LossWeights(ce=0.5, tv_l1=0.1, tv_l2=0.2, l2=0.3, bn_prior=0.4, patch_entropy=0.6),
        augment=AugmentConfig(enabled=False, max_roll_fraction=0.25, flip=False, zoom=(0.5, 0.9),
                              colour_shift=0.2, per_sample=False))
    section = inversion_fields(odd, batch_size=2)
    assert load_spec(write(tmp_path, merged(MINIMAL, {"inversion": section}))).inversion_config() == odd


def test_shipped_manifests(fake_teacher: None) -> None:
    """demo.yaml names no recipe field; the ImageNet manifest spells out the paper's recipe and gets exactly it."""
    raw = yaml.safe_load((MANIFESTS / "demo.yaml").read_text())
    assert set(raw["inversion"]) == {"method", "iterations"}
    demo = load_spec(MANIFESTS / "demo.yaml")
    assert demo.inversion_config() == recommended_config(demo.method, raw["inversion"]["iterations"])  # type: ignore[arg-type]
    big = load_spec(MANIFESTS / "imagenet1k-deit-base.yaml")
    assert big.inversion_config() == InversionConfig()  # the engine's defaults are the SMI paper's


# --- resuming a corpus made under older defaults -------------------------------------------------------------


def _old_corpus_manifest(tmp_path: Path) -> dict[str, Any]:
    """manifest.json of a corpus the minimal manifest made when its defaults were the paper's (as the code
    of that time recorded it: no zoom, colour shift or per-sample fields)."""
    old = load_spec(write(tmp_path / "old", merged(MINIMAL, {"inversion": PAPER_RECIPE})))
    resolved = old.resolved()
    for name in ("zoom", "colour_shift", "per_sample"):
        del resolved["inversion"]["augment"][name]
    return {"spec_hash": old.spec_hash(), "spec": resolved}


def test_a_resume_keeps_the_settings_the_corpus_was_made_with(tmp_path: Path, fake_teacher: None,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    recorded = _old_corpus_manifest(tmp_path)
    spec = load_spec(write(tmp_path, MINIMAL))
    assert not spec.matches_hash(recorded["spec_hash"])  # today's defaults make another corpus
    with caplog.at_level(logging.WARNING):
        resumed = spec.with_recorded_recipe(recorded)
    assert resumed.matches_hash(recorded["spec_hash"])
    old_cfg = load_spec(write(tmp_path / "old", merged(MINIMAL, {"inversion": PAPER_RECIPE}))).inversion_config()
    assert resumed.inversion_config() == old_cfg
    assert "resuming with the settings the corpus was started with" in caplog.text
    assert "lr 0.25 (default now 0.1)" in caplog.text
    assert spec.with_recorded_recipe({"spec_hash": spec.spec_hash(), "spec": {}}) is spec  # nothing to adopt


def test_a_field_the_manifest_changed_is_still_refused_and_named(tmp_path: Path, fake_teacher: None) -> None:
    recorded = _old_corpus_manifest(tmp_path)
    changed = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"lr": 0.2}}))).with_recorded_recipe(recorded)
    assert not changed.matches_hash(recorded["spec_hash"])
    assert changed.hash_differences(recorded["spec"]["hashed_fields"]) == ["inversion.lr: 0.25 -> 0.2"]


class _ReachedRay(Exception):
    """Raised in place of starting Ray: the resume checks before it passed."""


def test_run_corpus_adopts_the_recorded_recipe_before_its_resume_check(tmp_path: Path, fake_teacher: None,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The runner's wiring, without Ray: an old-default corpus passes the spec-hash check (the run goes on to
    start Ray); a manifest that changed a field is refused before, naming only that field."""
    from pipeline.corpus.index import write_manifest as write_corpus_manifest
    from pipeline.run import runner
    from pipeline.run.plan import plan_shards

    old = load_spec(write(tmp_path / "old", merged(MINIMAL, {"inversion": PAPER_RECIPE}))).with_output(tmp_path / "c")
    resolved = old.resolved()
    for name in ("zoom", "colour_shift", "per_sample"):  # as the code before them recorded it
        del resolved["inversion"]["augment"][name]
    write_corpus_manifest(CorpusLayout(old.output), spec=resolved, spec_hash=old.spec_hash(), package_version="0.old",
                          tasks=plan_shards(old))

    def past_the_resume_check(*args: Any, **kwargs: Any) -> None:
        raise _ReachedRay

    # what follows the check: the toy teacher's build (minutes on a fresh machine's empty cache), then Ray
    monkeypatch.setattr(runner, "prebuild_toy_teacher", past_the_resume_check)
    monkeypatch.setattr(runner, "_ray_init", past_the_resume_check)
    today = load_spec(write(tmp_path, MINIMAL)).with_output(old.output)
    with caplog.at_level(logging.WARNING), pytest.raises(_ReachedRay):
        runner.run_corpus(today, show_progress=False)
    assert "lr 0.25 (default now 0.1)" in caplog.text
    changed = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"lr": 0.2}}))).with_output(old.output)
    with pytest.raises(spec_mod.UserError, match=r"different spec.*: inversion\.lr: 0\.25 -> 0\.2; refusing"):
        runner.run_corpus(changed, show_progress=False)


@pytest.mark.slow
def test_run_resumes_an_old_default_corpus_with_its_own_recipe(tmp_path: Path, teacher_file: Path, local_ray: object,
                                                              capsys: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """End to end on local Ray: a corpus made with the paper's recipe spelled out (what the defaults were)
    resumes from a manifest that leaves the recipe out, regenerating a lost shard byte for byte; changing a
    field the manifest spells is refused, naming it."""
    old = write_manifest(tmp_path, teacher_file, inversion={
        "method": "smi", "iterations": 12, "batch_size": 2, **PAPER_RECIPE,
        "schedule": {"iterations": [2, 4, 6, 8], "ratios": [0.3] * 4}})
    out = tmp_path / "out"
    assert main(["run", str(old), "--out", str(out), "--json"]) == 0
    before = tar_digests(out)
    layout = CorpusLayout(out)
    recorded = json.loads((out / layout.manifest).read_text())
    for name in ("zoom", "colour_shift", "per_sample"):  # as the code before them recorded it
        del recorded["spec"]["inversion"]["augment"][name]
    (out / layout.manifest).write_text(json.dumps(recorded))
    sorted((out / layout.stats_dir).glob("*.json"))[0].unlink()  # one shard loses its resume marker
    capsys.readouterr()
    today = write_manifest(tmp_path, teacher_file, inversion={
        "method": "smi", "iterations": 12, "batch_size": 2, "schedule": {"iterations": [2, 4, 6, 8]}})
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(today), "--out", str(out), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["completed_shards"] == 1 and tar_digests(out) == before
    assert "resuming with the settings the corpus was started with" in caplog.text
    assert json.loads((out / layout.manifest).read_text())["spec"]["inversion"]["lr"] == 0.25
    changed = write_manifest(tmp_path, teacher_file, inversion={
        "method": "smi", "iterations": 12, "batch_size": 2, "lr": 0.2, "schedule": {"iterations": [2, 4, 6, 8]}})
    assert main(["run", str(changed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "inversion.lr: 0.25 -> 0.2" in err and "inversion.loss" not in err and tar_digests(out) == before


def test_rejoin_is_a_manifest_field_hashed_only_when_set(tmp_path: Path, fake_teacher: None) -> None:
    """``rejoin`` (a dense finish) reaches the engine and the spec hash; ``null`` is the engine's default (no
    finish, the paper), left out of the hash as before the field existed; a rejoin not after the last stop is
    refused naming the field."""
    plain = load_spec(write(tmp_path, MINIMAL))
    assert plain.inversion_config().selection.rejoin == 270 and plain.hashed_fields()["inversion"]["rejoin"] == 270
    paper = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"rejoin": None}})))
    assert paper.inversion_config().selection.rejoin is None and "rejoin" not in paper.hashed_fields()["inversion"]
    later = load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"rejoin": 280}})))
    assert later.inversion_config().selection.rejoin == 280
    assert len({plain.spec_hash(), paper.spec_hash(), later.spec_hash()}) == 3
    with pytest.raises(spec_mod.UserError, match="rejoin"):
        load_spec(write(tmp_path, merged(MINIMAL, {"inversion": {"rejoin": paper_stops(300)[-1]}})))


def test_written_stops_move_the_recommended_finish_after_them(tmp_path: Path, fake_teacher: None) -> None:
    """A manifest's own stops with no ``rejoin`` get the recommended finish when it follows them, else none."""
    late = {"inversion": {"iterations": 300, "schedule": {"iterations": [20, 280]}}}
    assert load_spec(write(tmp_path, merged(MINIMAL, late))).inversion_config().selection.rejoin is None
    early = {"inversion": {"iterations": 300, "schedule": {"iterations": [20, 40]}}}
    assert load_spec(write(tmp_path, merged(MINIMAL, early))).inversion_config().selection.rejoin == 270
    assert load_spec(write(tmp_path, MINIMAL)).inversion_config().selection.rejoin == 270
