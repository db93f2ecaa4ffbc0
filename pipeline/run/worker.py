"""Generating one class shard: invert its images batch by batch, then write it (the worker side).

``ShardWorker`` loads the teacher once and turns ``ShardTask``s into complete shards; the runner
wraps it in a Ray actor, but it runs the same without Ray. Every batch's generator is seeded from
(shard seed, batch index), so a shard's bytes depend only on the manifest and its id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.corpus.index import ShardTask
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.sample import ShardSample
from pipeline.corpus.writer import warm_up, write_shard
from pipeline.run.faults import FaultPlan
from pipeline.teachers.loading import load_teacher
from smi_core import InversionConfig, InversionResult, invert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs (picklable, sent once per actor)."""

    teacher_spec: str
    out: str
    inversion: InversionConfig
    method: str
    batch_size: int
    image_format: str
    num_classes: int
    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "float32"  # "bfloat16": autocast on the teacher
    threads: int | None = None  # torch intra-op threads for CPU workers
    fault: FaultPlan | None = None


def batch_seed(shard_seed: int, batch_index: int) -> int:
    """Seed of one batch's generator, from the shard's seed and the batch's index."""
    digest = hashlib.blake2b(f"{shard_seed}:{batch_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def samples_from_result(
    result: InversionResult,
    task: ShardTask,
    *,
    offset: int,
    teacher: str,
    method: str,
    seconds_per_image: float,
) -> list[ShardSample]:
    """Turn one engine batch into samples ``task.first_index + offset + i`` of ``task``'s shard."""
    images = result.images.detach().to("cpu", torch.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"result.images must be (B, 3, H, W), got {tuple(images.shape)}")
    batch = images.shape[0]
    if offset < 0 or offset + batch > task.count:
        raise ValueError(f"batch of {batch} at offset {offset} does not fit shard {task.shard_id} of {task.count}")
    if torch.isnan(images).any():
        bad = sorted({int(i) for i in torch.nonzero(torch.isnan(images).flatten(1).any(1)).flatten()})
        raise ValueError(f"result.images has NaN pixels in batch items {bad} of shard {task.shard_id}")
    labels = result.labels.detach().cpu().tolist()
    if any(int(lab) != task.label for lab in labels):
        raise ValueError(f"result.labels {labels} do not all equal shard {task.shard_id}'s label {task.label}")
    pixels = (images * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    logits = result.logits.detach().to("cpu", torch.float32).numpy()
    grid = (int(result.grid[0]), int(result.grid[1]))
    samples = []
    for i in range(batch):
        samples.append(
            ShardSample(
                key=sample_key(task.label, task.first_index + offset + i),
                image=pixels[i],
                label=task.label,
                class_name=task.class_name,
                seed=task.seed,
                shard_id=task.shard_id,
                teacher=teacher,
                method=method,
                kept_patches=result.kept_indices(i),
                patch_grid=grid,
                final_loss=float(result.loss[i]),
                confidence=float(result.confidence[i]),
                soft_label=logits[i].copy(),
                generation_seconds=float(seconds_per_image),
            )
        )
    return samples


class ShardWorker:
    """Loads the teacher once; ``run(task)`` generates and writes one shard and returns its stats."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        if config.fault is not None:
            config.fault.maybe_fire_at_start()
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.device = torch.device(config.device)
        start = time.perf_counter()
        self.teacher = load_teacher(config.teacher_spec, device=self.device)
        self.load_seconds = time.perf_counter() - start
        self.layout = CorpusLayout(config.out)
        warm_up()  # pyarrow's one-time costs belong to start-up, not to the first shard's write
        log.info("worker %d: teacher %s on %s in %.1f s", os.getpid(), self.teacher.teacher_id, self.device, self.load_seconds)

    def ready(self) -> int:
        """Answer once the actor is up (teacher loaded); the runner probes restarted actors with it."""
        return os.getpid()

    def run(self, task: ShardTask, guard: Callable[[], None] | None = None) -> dict:
        """Invert ``task``'s images and write the shard; the stats dict is returned once it is complete.

        ``guard`` raises :class:`~pipeline.corpus.writer.StaleAttempt` once another attempt owns the shard.
        """
        cfg, teacher = self.config, self.teacher
        autocast = torch.bfloat16 if cfg.dtype == "bfloat16" else None
        samples, inversion_seconds, flops = [], 0.0, 0
        for batch_index, offset in enumerate(range(0, task.count, cfg.batch_size)):
            n = min(cfg.batch_size, task.count - offset)
            generator = torch.Generator(device="cpu").manual_seed(batch_seed(task.seed, batch_index))
            targets = torch.full((n,), task.label, dtype=torch.int64, device=self.device)
            result = invert(
                teacher.model, targets, cfg.inversion, generator,
                img_size=teacher.img_size, mean=teacher.mean, std=teacher.std, autocast_dtype=autocast,
            )
            inversion_seconds += result.seconds
            flops += result.flops
            samples += samples_from_result(
                result, task, offset=offset, teacher=teacher.teacher_id, method=cfg.method,
                seconds_per_image=result.seconds / n,
            )
            if cfg.fault is not None:
                cfg.fault.maybe_fire(task.shard_id)
        start = time.perf_counter()
        stats = write_shard(
            self.layout, task.shard_id, samples, num_classes=cfg.num_classes, image_format=cfg.image_format,
            extra_stats={"inversion_seconds": inversion_seconds, "flops": flops, "device": str(self.device)},
            guard=guard,
        )
        stats["write_seconds"] = time.perf_counter() - start
        return stats
