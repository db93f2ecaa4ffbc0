"""What ``smi-synth distill`` chooses when a flag is left out: the student and the step budget.

One function per choice, so changing a default means editing it here only (``smi-synth demo`` uses the
same functions unless it sets its own values, see :mod:`pipeline.run.demo`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.evaluate.common import CorpusInfo

# The step budget: about PASSES_PER_IMAGE augmented views of every corpus image, within these bounds
# (small corpora need many passes over fresh views; a large one needs no more than MAX_STEPS by default).
# MIN_STEPS: 160 inverted images of the toy teacher taught test_resnet 13% at 300 steps, 32.5% at 1,000 and
# 36.2% at 1,500 with the plain views; with the live teacher's views (kd_views) 59.45% / 68.9% at 1,000 and
# 81.4% / 82.25% at 3,000 on two such corpora (BENCHMARKS.md, "Quality").
PASSES_PER_IMAGE = 100
MIN_STEPS = 3000
MAX_STEPS = 20_000


def default_student(info: CorpusInfo) -> str:
    """The student trained when ``--student`` is left out: timm's ``test_resnet`` (a 374 k-parameter CNN
    that takes any input size), whatever the corpus."""
    return "test_resnet"


def default_steps(num_images: int, batch_size: int) -> int:
    """Optimizer steps when neither ``--steps`` nor ``--epochs`` is given: enough for about
    :data:`PASSES_PER_IMAGE` views of each of ``num_images`` images at ``batch_size``, clamped to
    [:data:`MIN_STEPS`, :data:`MAX_STEPS`]."""
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"expected at least one image and a batch size >= 1, got {num_images} and {batch_size}")
    return min(MAX_STEPS, max(MIN_STEPS, math.ceil(PASSES_PER_IMAGE * num_images / batch_size)))
