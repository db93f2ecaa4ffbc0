"""Candidate inversion recipes for ``quality_suite.py --recipe benchmarks/recipes.py:NAME``.

Each is the recommended recipe (:func:`smi_core.recipe.recommended_config`) with one change, so a suite
run compares exactly that change against the default run of the same settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from smi_core import InversionConfig
from smi_core.config import StopSchedule
from smi_core.recipe import equal_stage_ratios, finish_start, paper_stops, recommended_config, scaled_stops


def pixels(method: str, iterations: int) -> InversionConfig:
    """The recommended recipe without its coarse image levels (the recommended recipe before commit
    9d3016a made the pyramid its default): Adam moves single pixels only."""
    return dataclasses.replace(recommended_config(method, iterations), pyramid=())  # type: ignore[arg-type]


def random_stops(method: str, iterations: int) -> InversionConfig:
    """The recommended recipe with SMI's stops choosing patches at random instead of by CLS saliency (a
    control: the same schedule and cost, no saliency); dense is unchanged."""
    config = recommended_config(method, iterations)
    if method != "smi":
        return config
    return dataclasses.replace(config, selection=dataclasses.replace(config.selection, kind="random"))


def _smi_selection(method: str, iterations: int, **changes: object) -> InversionConfig:
    """The recommended recipe with ``changes`` to SMI's selection (dense unchanged)."""
    config = recommended_config(method, iterations)  # type: ignore[arg-type]
    if method != "smi":
        return config
    return dataclasses.replace(config, selection=dataclasses.replace(config.selection, **changes))


def late_stops(method: str, iterations: int) -> InversionConfig:
    """SMI's four 30% stops spread over 5-40% of the run (20, 60, 100, 160 of 400) instead of the paper's
    1.25-7.5%: the CLS saliency has settled (benchmarks/saliency_settling.py) and the stopped patches have
    had dense steps before they stop; the same 24% of patches kept at the end."""
    stops = scaled_stops((0.05, 0.15, 0.25, 0.40), iterations)
    return _smi_selection(method, iterations, schedule=StopSchedule(stops, (0.3,) * len(stops)))


def accumulated(method: str, iterations: int) -> InversionConfig:
    """SMI at the paper's stops, patches ranked by the CLS attention summed over every forward since the
    first (selection.saliency 'accumulated') instead of the last forward's."""
    return _smi_selection(method, iterations, saliency="accumulated")


def late_accumulated(method: str, iterations: int) -> InversionConfig:
    """:func:`late_stops` with the accumulated saliency of :func:`accumulated`."""
    stops = scaled_stops((0.05, 0.15, 0.25, 0.40), iterations)
    return _smi_selection(method, iterations, schedule=StopSchedule(stops, (0.3,) * len(stops)),
                          saliency="accumulated")


def keep_more(method: str, iterations: int) -> InversionConfig:
    """SMI at the paper's stops with 20% of the remaining patches stopped at each (41% kept at the end)."""
    stops = paper_stops(iterations)
    return _smi_selection(method, iterations, schedule=StopSchedule(stops, (0.2,) * len(stops)))


def dense_finish(method: str, iterations: int) -> InversionConfig:
    """SMI at the paper's stops with every stopped patch back in the forward for the last 10% of the run
    (``selection.rejoin``): the whole image, not only its kept quarter, is optimised towards the target
    before it is kept (about 1.25x SMI's teacher tokens)."""
    return _smi_selection(method, iterations, rejoin=finish_start(iterations, paper_stops(iterations), 0.1))


def dense_finish_20(method: str, iterations: int) -> InversionConfig:
    """:func:`dense_finish` over the last 20% of the run (about 1.5x SMI's teacher tokens)."""
    return _smi_selection(method, iterations, rejoin=finish_start(iterations, paper_stops(iterations), 0.2))


def _rebirth_only(method: str, iterations: int,
                  change: Callable[[InversionConfig], InversionConfig]) -> InversionConfig:
    """The recommended recipe, with ``change`` applied to rebirth's config only (dense and SMI unchanged)."""
    config = recommended_config(method, iterations)  # type: ignore[arg-type]
    return change(config) if method == "rebirth" else config


def rebirth_tv(method: str, iterations: int) -> InversionConfig:
    """Patch rebirth with the TV-l2 prior at 2.0 instead of 0.75 (dense and SMI unchanged): after each stop the
    remaining patches are pushed to carry the class alone and, under the recommended prior, turn into saturated
    blotches; a stronger prior keeps them smooth."""
    return _rebirth_only(method, iterations,
                         lambda c: dataclasses.replace(c, loss=dataclasses.replace(c.loss, tv_l2=2.0)))


def rebirth_gain(method: str, iterations: int) -> InversionConfig:
    """Patch rebirth with its priors growing as patches leave (``loss.prior_gain`` 1: TV-l2 0.75, 1.0, 1.5, 3.0
    over its four stages) instead of :func:`rebirth_tv`'s 2.0 throughout (dense and SMI unchanged): the first
    image keeps the recommended prior's detail, the later ones a prior that holds against the class pull the
    remaining patches carry alone."""
    return _rebirth_only(method, iterations,
                         lambda c: dataclasses.replace(c, loss=dataclasses.replace(c.loss, prior_gain=1.0)))


def late_rebirth(method: str, iterations: int) -> InversionConfig:
    """Patch rebirth whose first image is kept at half the run, not a quarter (stops at 1/2, 2/3 and 5/6,
    equal shares leaving; dense and SMI unchanged): every image has had at least half the run's dense steps
    (its first is a dense image of half the iterations), for 18.75% of dense's FLOPs per image instead of 15.6%."""
    stops = scaled_stops((1 / 2, 2 / 3, 5 / 6), iterations)
    late = StopSchedule(stops, equal_stage_ratios(len(stops)))
    return _rebirth_only(method, iterations,
                         lambda c: dataclasses.replace(c, selection=dataclasses.replace(c.selection, schedule=late)))
