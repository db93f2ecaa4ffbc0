"""Small value checks shared by manifest validation and the corpus writer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: Any) -> bool:
    """Convertible to a finite float."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
