"""The recommended inversion recipe: what a manifest gets for every field it leaves out.

:func:`recommended_config` is the one place the recipe's numbers live. Manifest defaults
(``pipeline.run.spec``), the quality suite's default recipe (``benchmarks/quality_suite.py``) and the
demo all derive from it, so changing the recipe means editing this function only.
``InversionConfig()``'s own defaults are the SMI paper's and stay as they are (the engine version pins
them): an explicit config always gives the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from smi_core.config import (
    AugmentConfig,
    InversionConfig,
    LossWeights,
    SelectionConfig,
    StopSchedule,
)

Method = Literal["dense", "smi", "rebirth"]

# SMI's stop iterations t = 50, 100, 200, 300 of the paper's 4,000, as fractions of the run
PAPER_STOP_FRACTIONS: tuple[float, ...] = (50 / 4000, 100 / 4000, 200 / 4000, 300 / 4000)


# coarse levels of the recommended image parametrisation: pixel-level inversions of normally trained ViTs
# are high-frequency fooling patterns; coarse levels let low frequencies move as fast as single pixels
RECOMMENDED_PYRAMID: tuple[int, ...] = (2, 4, 8)


def scaled_stops(fractions: Sequence[float], iterations: int) -> tuple[int, ...]:
    """Stop iterations at ``fractions`` of a run of ``iterations`` (each in [1, iterations - 1], distinct,
    sorted); short runs merge stops that round to the same iteration."""
    if iterations < 1:
        raise ValueError(f"iterations: must be a positive integer, got {iterations!r}")
    return tuple(sorted({max(1, min(iterations - 1, round(f * iterations))) for f in fractions}))


def paper_stops(iterations: int) -> tuple[int, ...]:
    """The paper's stop iterations scaled to ``iterations``: ``paper_stops(200) == (2, 5, 10, 15)``."""
    return scaled_stops(PAPER_STOP_FRACTIONS, iterations)


# the last FINISH_FRACTION of an SMI run sees every patch again (``selection.rejoin``, a dense finish): without
# it SMI's images are optimised only where their kept quarter is, and the teacher, seeing them whole, gave
# their target 0.63 where dense's got 0.99 (shapes64); with it 0.91, and the students learnt more (BENCHMARKS.md,
# "The dense finish")
FINISH_FRACTION = 0.1


def finish_start(iterations: int, stops: Sequence[int], fraction: float = FINISH_FRACTION) -> int | None:
    """The iteration from which a dense finish over the last ``fraction`` of ``iterations`` runs (the
    recommended one by default), or None when that would not come after the last of ``stops`` (very short
    runs)."""
    rejoin = iterations - max(1, round(fraction * iterations))
    return rejoin if rejoin > max(stops, default=0) else None


# images one rebirth run yields per target: the most salient quarter of the patches leaves at 1/4, 1/2 and 3/4 of
# the run, and the image is kept at each of those stops and at the end
REBIRTH_STAGES = 4


def equal_stage_ratios(stops: int) -> tuple[float, ...]:
    """Ratios that let ``stops`` stops cut the patches into ``stops + 1`` equal shares: ``1 / (stops + 1 - j)`` of
    those remaining at stop ``j``."""
    return tuple(1 / (stops + 1 - j) for j in range(stops))


def rebirth_schedule(iterations: int, stages: int = REBIRTH_STAGES) -> StopSchedule:
    """Rebirth's stops: at ``j / stages`` of the run (``j = 1 .. stages - 1``), each letting an equal share of the
    patches leave (``1 / (stages - j)`` of those remaining), so the last quarter of the run moves a quarter of the
    patches (with 4 stages); short runs merge stops that round to the same iteration (fewer images)."""
    if stages < 2:
        raise ValueError(f"stages: rebirth needs at least 2, got {stages}")
    stops = scaled_stops([j / stages for j in range(1, stages)], iterations)
    return StopSchedule(stops, equal_stage_ratios(len(stops)))


def recommended_config(method: Method, iterations: int) -> InversionConfig:
    """The recommended recipe for ``method`` (``dense``, ``smi`` or ``rebirth``) at ``iterations`` Adam steps.

    Today's best measured recipe (BENCHMARKS.md, issue 14): the image parametrised as pixels plus coarse
    levels at 1/2, 1/4 and 1/8 of the side (``pyramid``), all moved by Adam at lr 0.1, betas (0.5, 0.99);
    cross-entropy plus TV-l2 0.75; a random horizontal flip as the only augmentation; SMI stops 30% of
    the remaining patches at the paper's stops scaled to ``iterations``, stopped patches left to the
    image prior, saliency from the last forward, every patch back for the last 10% of the run
    (:func:`finish_start`); each image's lowest-loss iterate kept. ``rebirth`` (patch rebirth): the same, but
    its stops are :func:`rebirth_schedule`'s and no patch rejoins: one run yields :data:`REBIRTH_STAGES` images
    per target.
    """
    if method not in ("dense", "smi", "rebirth"):
        raise ValueError(f"method: expected dense, smi or rebirth, got {method!r}")
    if method == "rebirth":
        schedule = rebirth_schedule(iterations)
    else:
        stops = paper_stops(iterations)
        schedule = StopSchedule(stops, (0.3,) * len(stops))
    return InversionConfig(
        iterations=iterations,
        lr=0.1,
        betas=(0.5, 0.99),
        selection=SelectionConfig(kind=method, schedule=schedule, stopped="prior", saliency="instant",
                                  rejoin=finish_start(iterations, schedule.iterations) if method == "smi" else None),
        loss=LossWeights(ce=1.0, tv_l1=0.0, tv_l2=0.75, l2=0.0, bn_prior=0.0, patch_entropy=0.0),
        augment=AugmentConfig(enabled=True, max_roll_fraction=0.0, flip=True, zoom=None, colour_shift=0.0,
                              per_sample=True),
        keep_best=True,
        pyramid=RECOMMENDED_PYRAMID,
    )
