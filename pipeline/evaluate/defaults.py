"""What ``smi-synth distill`` chooses when a flag is left out: the student and the step budget.

One function per choice, so changing a default means editing it here only (``smi-synth demo`` uses the
same functions unless it sets its own values, see :mod:`pipeline.run.demo`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.evaluate.common import CorpusInfo

# The step budget, in teacher-labelled views: about PASSES_PER_IMAGE views of every corpus image, and at
# least VIEWS_PER_CLASS views per class the corpus covers (a student learns the teacher's boundaries between
# classes, so more classes need more views at equal images per class), divided by the batch size and kept
# within [MIN_STEPS, MAX_STEPS]. VIEWS_PER_CLASS is MIN_STEPS' 3,000 steps of 64 views spread over 10
# classes, so a 10-class corpus gets what it got before the class term existed; the class term is
# proportional by choice, not yet fitted to a many-class teacher. MAX_STEPS stays where it was before the
# class term (a 100-class corpus gets 20,000 steps, not 30,000) until a many-class teacher shows more pays.
# MIN_STEPS: 160 inverted images of the toy teacher taught test_resnet 13% at 300 steps, 32.5% at 1,000 and
# 36.2% at 1,500 with the plain views; with the live teacher's views (kd_views) 59.45% / 68.9% at 1,000 and
# 81.4% / 82.25% at 3,000 on two such corpora (BENCHMARKS.md, "Quality").
PASSES_PER_IMAGE = 100
VIEWS_PER_CLASS = 3000 * 64 // 10
MIN_STEPS = 3000
MAX_STEPS = 20_000


def default_student(info: CorpusInfo) -> str:
    """The student trained when ``--student`` is left out: timm's ``test_resnet`` (a 374 k-parameter CNN
    that takes any input size), whatever the corpus."""
    return "test_resnet"


def corpus_classes(info: CorpusInfo) -> int:
    """The classes a corpus covers (its manifest's class ids; the teacher's count when it names none)."""
    return len(set(info.class_ids.values())) or info.num_classes


@dataclass(frozen=True)
class StepBudget:
    """The default optimizer steps for a corpus, and the terms they came from."""

    steps: int
    num_images: int
    num_classes: int
    batch_size: int

    @property
    def image_views(self) -> int:
        return PASSES_PER_IMAGE * self.num_images

    @property
    def class_views(self) -> int:
        return VIEWS_PER_CLASS * self.num_classes

    def why(self) -> str:
        """How the budget was chosen, in one line (``smi-synth distill`` prints it)."""
        raw = math.ceil(max(self.image_views, self.class_views) / self.batch_size)
        bound = " (the floor)" if raw < MIN_STEPS else " (the cap)" if raw > MAX_STEPS else ""
        return (f"the default for {self.num_images:,} images of {self.num_classes:,} classes at batch "
                f"{self.batch_size}: max({PASSES_PER_IMAGE} views x {self.num_images:,} images, "
                f"{VIEWS_PER_CLASS:,} views x {self.num_classes:,} classes) / {self.batch_size}, "
                f"within [{MIN_STEPS:,}, {MAX_STEPS:,}]{bound}")


def step_budget(num_images: int, *, num_classes: int, batch_size: int) -> StepBudget:
    """Optimizer steps when neither ``--steps`` nor ``--epochs`` is given: enough for
    ``max(PASSES_PER_IMAGE * num_images, VIEWS_PER_CLASS * num_classes)`` views at ``batch_size``, clamped to
    [:data:`MIN_STEPS`, :data:`MAX_STEPS`]."""
    if num_images < 1 or num_classes < 1 or batch_size < 1:
        raise ValueError(f"expected at least one image and one class and a batch size >= 1, got {num_images}, "
                         f"{num_classes} and {batch_size}")
    views = max(PASSES_PER_IMAGE * num_images, VIEWS_PER_CLASS * num_classes)
    steps = min(MAX_STEPS, max(MIN_STEPS, math.ceil(views / batch_size)))
    return StepBudget(steps, num_images, num_classes, batch_size)


def default_steps(num_images: int, *, num_classes: int, batch_size: int) -> int:
    """:func:`step_budget`'s steps."""
    return step_budget(num_images, num_classes=num_classes, batch_size=batch_size).steps
