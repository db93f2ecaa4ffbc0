"""Candidate inversion recipes for ``quality_suite.py --recipe benchmarks/recipes.py:NAME``.

Each is the recommended recipe (:func:`smi_core.recipe.recommended_config`) with one change, so a suite
run compares exactly that change against the default run of the same settings.
"""

from __future__ import annotations

import dataclasses

from smi_core import InversionConfig
from smi_core.recipe import recommended_config


def pyramid(method: str, iterations: int) -> InversionConfig:
    """Coarse image levels at 1/2, 1/4 and 1/8 of the side on top of the pixels (``InversionConfig.pyramid``)."""
    return dataclasses.replace(recommended_config(method, iterations), pyramid=(2, 4, 8))  # type: ignore[arg-type]
