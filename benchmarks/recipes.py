"""Candidate inversion recipes for ``quality_suite.py --recipe benchmarks/recipes.py:NAME``.

Each is the recommended recipe (:func:`smi_core.recipe.recommended_config`) with one change, so a suite
run compares exactly that change against the default run of the same settings.
"""

from __future__ import annotations

import dataclasses

from smi_core import InversionConfig
from smi_core.recipe import recommended_config


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
