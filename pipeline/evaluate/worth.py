"""What a corpus is worth: a student distilled from it, next to the teacher and to the same student
distilled the same way from a Gaussian-noise corpus of the same size (:mod:`pipeline.evaluate.noise`).

Both students go through :func:`pipeline.evaluate.distill.distill` against the live teacher (its
augmented and adversarial views) and are scored on the same held-out images.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.evaluate.common import CorpusInfo, EvalSet, corpus_info, top1
from pipeline.evaluate.defaults import corpus_classes, default_steps, default_student
from pipeline.evaluate.distill import DistillConfig, DistillResult, build_student, distill
from pipeline.evaluate.kd_views import KDAugmentConfig
from pipeline.evaluate.noise import write_noise_corpus


@dataclass(frozen=True)
class WorthSettings:
    """How both students are trained; ``None`` takes :mod:`pipeline.evaluate.defaults`'s choice."""

    student: str | None = None
    steps: int | None = None
    batch_size: int = 64
    lr: float = DistillConfig.lr
    seed: int = 0
    augment: KDAugmentConfig = field(default_factory=KDAugmentConfig)  # the views the live teacher labels
    # train both students at once, each in its own (spawned) process with one torch thread; else one after
    # the other in this process, with its threads
    parallel: bool = False


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


@dataclass(frozen=True)
class StudentJob:
    """One student to distil from the corpus ``info`` against a live teacher (a picklable description)."""

    info: CorpusInfo
    teacher: nn.Module
    teacher_norm: tuple[tuple[float, ...], tuple[float, ...]]  # the teacher's mean and std
    student: str
    config: DistillConfig
    threads: int | None = None  # torch threads to train with (None: leave the process's setting)

    @property
    def norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The student's input normalisation: the corpus's recorded one, else the teacher's."""
        return self.info.mean or self.teacher_norm[0], self.info.std or self.teacher_norm[1]


def train_student(job: StudentJob) -> DistillResult:
    """Build ``job.student`` (seeded with ``job.config.seed``) and distil it; the trained model is ``.model``."""
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    info = job.info
    torch.manual_seed(job.config.seed)
    model = build_student(job.student, num_classes=info.num_classes, img_size=info.img_size,
                          patch_size=info.patch_size)
    mean, std = job.norm
    return distill(model, info, job.config, mean=mean, std=std, teacher=job.teacher, teacher_norm=job.teacher_norm)


def train_students(jobs: list[StudentJob], parallel: bool = False) -> list[DistillResult]:
    """:func:`train_student` for each job: one after the other, or each in its own spawned process (the jobs
    must then be picklable, and each should set ``threads``)."""
    if not parallel or len(jobs) < 2:
        return [train_student(job) for job in jobs]
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(train_student, jobs))


def corpus_worth(root: str | Path, teacher: Any, eval_set: EvalSet, settings: WorthSettings = WorthSettings(), *,
                 show_progress: bool = False) -> Worth:
    """Distil ``settings.student`` from the corpus at ``root`` and from a noise corpus like it (written to a
    temporary folder, removed afterwards), both against ``teacher`` (a loaded
    :class:`~pipeline.teachers.loading.Teacher`), and score them and the teacher on ``eval_set``."""
    info = corpus_info(root)
    student = settings.student or default_student(info)
    steps = settings.steps or default_steps(max(1, info.num_images), num_classes=corpus_classes(info),
                                            batch_size=settings.batch_size)
    norm = (tuple(teacher.mean), tuple(teacher.std))
    config = DistillConfig(steps=steps, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                           augment=settings.augment, show_progress=show_progress, workers=0)
    threads = 1 if settings.parallel else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smi-synth-noise-") as scratch:
        noise = write_noise_corpus(info, Path(scratch) / "noise", teacher.model, mean=norm[0], std=norm[1],
                                   seed=settings.seed)
        quiet = replace(config, show_progress=False)  # run at once, only the corpus's student shows progress
        jobs = [StudentJob(info, teacher.model, norm, student, config, threads),
                StudentJob(noise, teacher.model, norm, student, quiet if settings.parallel else config, threads)]
        results = train_students(jobs, settings.parallel)
    corpus_top1, noise_top1 = (top1(result.model, eval_set, mean=job.norm[0], std=job.norm[1])
                               for result, job in zip(results, jobs))
    seconds = time.perf_counter() - start
    teacher_top1 = top1(teacher.model, eval_set, mean=norm[0], std=norm[1])
    return Worth(teacher_top1, corpus_top1, noise_top1, student, steps, info.num_images, len(set(info.class_ids.values())),
                 eval_set.num_images, seconds)
