"""What a corpus is worth: a student distilled from it, next to the teacher and to the same student
distilled the same way from a Gaussian-noise corpus of the same size (:mod:`pipeline.evaluate.noise`).

Both students go through :func:`pipeline.evaluate.distill.distill` against the live teacher (its
augmented and adversarial views) and are scored on the same held-out images.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.evaluate.common import CorpusInfo, EvalSet, corpus_info, top1
from pipeline.evaluate.defaults import default_steps, default_student
from pipeline.evaluate.distill import DistillConfig, build_student, distill
from pipeline.evaluate.noise import write_noise_corpus


@dataclass(frozen=True)
class WorthSettings:
    """How both students are trained; ``None`` takes :mod:`pipeline.evaluate.defaults`'s choice."""

    student: str | None = None
    steps: int | None = None
    batch_size: int = 64
    lr: float = DistillConfig.lr
    seed: int = 0


@dataclass(frozen=True)
class Worth:
    """Held-out top-1 of the teacher, the corpus's student and the noise corpus's student."""

    teacher_top1: float
    corpus_top1: float
    noise_top1: float
    student: str
    steps: int
    corpus_images: int
    num_classes: int  # the corpus's classes (chance is 1 / num_classes)
    eval_images: int
    distill_seconds: float  # both students, in all

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _student_top1(info: CorpusInfo, teacher: Any, eval_set: EvalSet, settings: WorthSettings, student: str,
                  steps: int, show_progress: bool) -> float:
    mean, std = info.mean or tuple(teacher.mean), info.std or tuple(teacher.std)
    torch.manual_seed(settings.seed)
    model = build_student(student, num_classes=info.num_classes, img_size=info.img_size, patch_size=info.patch_size)
    cfg = DistillConfig(steps=steps, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                        show_progress=show_progress, workers=0)
    result = distill(model, info, cfg, mean=mean, std=std, teacher=teacher.model,
                     teacher_norm=(tuple(teacher.mean), tuple(teacher.std)))
    return top1(result.model, eval_set, mean=mean, std=std)


def corpus_worth(root: str | Path, teacher: Any, eval_set: EvalSet, settings: WorthSettings = WorthSettings(), *,
                 show_progress: bool = False) -> Worth:
    """Distil ``settings.student`` from the corpus at ``root`` and from a noise corpus like it (written to a
    temporary folder, removed afterwards), both against ``teacher`` (a loaded
    :class:`~pipeline.teachers.loading.Teacher`), and score them and the teacher on ``eval_set``."""
    info = corpus_info(root)
    student = settings.student or default_student(info)
    steps = settings.steps or default_steps(max(1, info.num_images), settings.batch_size)
    start = time.perf_counter()
    corpus_top1 = _student_top1(info, teacher, eval_set, settings, student, steps, show_progress)
    with tempfile.TemporaryDirectory(prefix="smi-synth-noise-") as scratch:
        noise = write_noise_corpus(info, Path(scratch) / "noise", teacher.model, mean=tuple(teacher.mean),
                                   std=tuple(teacher.std), seed=settings.seed)
        noise_top1 = _student_top1(noise, teacher, eval_set, settings, student, steps, show_progress)
    seconds = time.perf_counter() - start
    teacher_top1 = top1(teacher.model, eval_set, mean=tuple(teacher.mean), std=tuple(teacher.std))
    return Worth(teacher_top1, corpus_top1, noise_top1, student, steps, info.num_images, len(set(info.class_ids.values())),
                 eval_set.num_images, seconds)
