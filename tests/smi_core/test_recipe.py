"""smi_core.recipe: the paper's stops scaled to any run, and the recommended recipe as a valid engine config."""

from __future__ import annotations

import pytest

from smi_core import InversionConfig, paper_stops, recommended_config
from smi_core.recipe import PAPER_STOP_FRACTIONS, equal_stage_ratios, finish_start, scaled_stops


def test_paper_stops_scale_the_papers_proportions() -> None:
    assert paper_stops(4000) == (50, 100, 200, 300)
    assert paper_stops(300) == (4, 8, 15, 22)
    assert paper_stops(200) == (2, 5, 10, 15)
    assert paper_stops(40) == (1, 2, 3) and paper_stops(8) == (1,)  # short runs merge stops that round alike
    assert paper_stops(1) == (1,)
    assert len(PAPER_STOP_FRACTIONS) == 4
    with pytest.raises(ValueError, match="iterations"):
        paper_stops(0)


def test_scaled_stops_take_any_fractions() -> None:
    assert scaled_stops((20 / 300, 40 / 300, 80 / 300, 120 / 300), 300) == (20, 40, 80, 120)  # the demo schedule
    assert scaled_stops((0.75, 0.25, 0.25, 1.0), 8) == (2, 6, 7)  # sorted, merged, the last iteration excluded


@pytest.mark.parametrize("iterations", [2, 10, 200, 300, 4000])
@pytest.mark.parametrize("method", ["dense", "smi"])
def test_recommended_config_is_valid_at_any_length(method: str, iterations: int) -> None:
    cfg = recommended_config(method, iterations)  # type: ignore[arg-type]
    assert isinstance(cfg, InversionConfig) and cfg.iterations == iterations and cfg.selection.kind == method
    assert cfg.selection.schedule.iterations == paper_stops(iterations)
    assert len(cfg.selection.schedule.ratios) == len(cfg.selection.schedule.iterations)


def test_recommended_config_is_not_the_engines_own_default() -> None:
    """The engine's defaults stay the paper's (ENGINE_VERSION pins them); the recipe is a separate choice."""
    assert InversionConfig() != recommended_config("smi", 4000)
    with pytest.raises(ValueError, match="method"):
        recommended_config("random", 100)  # type: ignore[arg-type]


def test_smis_recommended_recipe_ends_with_a_dense_finish() -> None:
    """The last 10% of an SMI run sees every patch again; dense has nothing to rejoin; a run too short for a
    finish after its last stop gets none."""
    assert recommended_config("smi", 400).selection.rejoin == 360
    assert recommended_config("smi", 300).selection.rejoin == 270
    assert recommended_config("dense", 400).selection.rejoin is None
    assert finish_start(10, (1,)) == 9 and finish_start(2, (1,)) is None


@pytest.mark.parametrize("iterations", [3, 4, 200, 4000])
def test_rebirths_recipe_cuts_the_patches_into_equal_images(iterations: int) -> None:
    cfg = recommended_config("rebirth", iterations)
    schedule = cfg.selection.schedule
    assert cfg.selection.kind == "rebirth" and cfg.selection.rejoin is None
    assert schedule.kept_counts(64) == [48, 32, 16][: len(schedule.iterations)] or iterations == 3
    if iterations >= 4:
        assert schedule.iterations == tuple(round(iterations * j / 4) for j in (1, 2, 3))
        assert schedule.kept_counts(196) == [147, 98, 49]
    assert equal_stage_ratios(2) == (1 / 3, 1 / 2)
