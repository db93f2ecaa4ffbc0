"""Generating one class shard: invert its images batch by batch, then write it (the worker side).

``ShardWorker`` loads the teacher once and turns ``ShardTask``s into complete shards; the runner
wraps it in a Ray actor, but it runs the same without Ray. Every batch's generator is seeded from
(shard seed, batch index), so a shard's bytes depend only on the manifest and its id (on one kind of
device and GPU model: see :func:`deterministic_settings`). Every shard's stats carry the worker's
provenance record (:mod:`pipeline.run.provenance`). With ``pack_batches > 1`` consecutive batches of a
shard are inverted by one engine call, each still from its own generator (:mod:`smi_core.packing`).

Start-up reports its phases (``starting``, ``loading teacher``, ``warming up``) through ``report``, and
keeps reporting while the teacher loads (a multi-GB download can take minutes), so that the scheduler
tells a slow worker from a stuck one. A shard is committed only while the run still holds the corpus
lease (``lease_token``: :func:`pipeline.corpus.lease.check_fence`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from pipeline.corpus.index import ShardTask
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.lease import check_fence
from pipeline.corpus.sample import ShardSample
from pipeline.corpus.writer import warm_up, write_shard
from pipeline.run.faults import FaultPlan
from pipeline.run.provenance import collect as collect_provenance
from pipeline.run.provenance import note_local_commit
from pipeline.teachers.loading import load_teacher
from smi_core import InversionConfig, InversionResult, invert_packed
from smi_core.flops import schedule_flops
from smi_core.selection import targets_for
from smi_core.vit import vit_geometry
from smi_core.version import ENGINE_VERSION

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
    pack_batches: int = 1  # batches of one shard inverted together by one engine call (smi_core.packing)
    lease_token: str | None = None  # the run's corpus lease: every commit checks it still holds it
    progress_every_s: float = 10.0  # how often a loading worker reports that it is still loading


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to pick deterministic reductions (CUDA >= 10.2)


def deterministic_settings(device: torch.device) -> dict:
    """Ask for deterministic kernels on a GPU worker; return what is in force (for provenance).

    CUDA: ``CUBLAS_WORKSPACE_CONFIG`` (kept if already set; it must be set before cuBLAS starts, i.e.
    before the teacher's first matmul), ``torch.use_deterministic_algorithms(True, warn_only=True)``
    (an op without a deterministic kernel warns rather than failing the shard), cuDNN deterministic and
    no benchmark autotuning. Repeats on the same GPU model and software then give the same bytes;
    another GPU model may not (other kernels). CPU workers are left as they are: their kernels are
    already deterministic for a fixed thread count.
    """
    if device.type != "cuda":
        return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }


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


@contextmanager
def reporting(report: Callable[[str], None], phase: str, every_s: float) -> Iterator[None]:
    """Report ``phase`` now and every ``every_s`` seconds (with the time spent in it) until the block ends."""
    stop, start = threading.Event(), time.monotonic()

    def beat() -> None:
        while True:
            try:
                report(f"{phase}, {time.monotonic() - start:.0f} s in")
            except Exception as exc:  # noqa: BLE001 - a lost report must not fail the load it reports on
                log.warning("start-up progress report failed: %s", exc)
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=beat, name="start-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class ShardWorker:
    """Loads the teacher once; ``run(task)`` generates and writes one shard and returns its stats.

    ``report(phase)`` is told of start-up progress (see the module docstring)."""

    def __init__(self, config: WorkerConfig, report: Callable[[str], None] | None = None) -> None:
        self.config = config
        report = report or (lambda phase: None)
        report("starting")
        if config.fault is not None:
            config.fault.maybe_fire_at_start()
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.device = torch.device(config.device)
        determinism = deterministic_settings(self.device)  # before the teacher's first CUDA call
        start = time.perf_counter()
        with reporting(report, "loading teacher", config.progress_every_s):
            if config.fault is not None:
                time.sleep(config.fault.teacher_load_delay())
            self.teacher = load_teacher(config.teacher_spec, device=self.device)
        self.load_seconds = time.perf_counter() - start
        report("warming up")
        self.record = collect_provenance(
            teacher_id=self.teacher.info.identity, weights_sha256=self.teacher.weights_sha256,
            engine_version=ENGINE_VERSION, device=str(self.device), dtype=config.dtype,
            threads=config.threads, determinism=determinism,
        )
        self.layout = CorpusLayout(config.out)
        self._flops: dict[int, int] = {}  # batch size -> FLOPs of one batch's schedule (counted once)
        warm_up()  # pyarrow's one-time costs belong to start-up, not to the first shard's write
        log.info("worker %d: teacher %s on %s in %.1f s", os.getpid(), self.teacher.teacher_id, self.device, self.load_seconds)

    def batch_flops(self, batch: int) -> int:
        """FLOPs of one batch of ``batch`` images under the schedule; counted once per batch size, since
        they depend only on the model, the schedule and the batch."""
        if batch not in self._flops:
            teacher, cfg = self.teacher, self.config.inversion
            geometry = vit_geometry(teacher.model, teacher.img_size)
            self._flops[batch] = schedule_flops(teacher.model, geometry, cfg.selection, cfg.iterations, batch,
                                                device=self.device)
        return self._flops[batch]

    def ready(self) -> int:
        """Answer once the actor is up (teacher loaded); the runner probes restarted actors with it."""
        return os.getpid()

    def provenance(self) -> dict:
        """This worker's provenance record (teacher identity and weights, engine, packages, device)."""
        return dict(self.record)

    def run(self, task: ShardTask, guard: Callable[[], None] | None = None) -> dict:
        """Invert ``task``'s images and write the shard; the stats dict is returned once it is complete.

        ``guard`` raises :class:`~pipeline.corpus.writer.StaleAttempt` once another attempt owns the shard;
        with a ``lease_token``, :class:`~pipeline.corpus.lease.LeaseLost` once the run lost the corpus.
        Each commit is noted, with this host, in OUT's local notes (:func:`note_local_commit`).
        """
        cfg, teacher = self.config, self.teacher
        autocast = torch.bfloat16 if cfg.dtype == "bfloat16" else None
        samples, inversion_seconds, flops = [], 0.0, 0
        offsets = list(range(0, task.count, cfg.batch_size))
        for first in range(0, len(offsets), cfg.pack_batches):
            packed = [(i, offsets[i], min(cfg.batch_size, task.count - offsets[i]))
                      for i in range(first, min(first + cfg.pack_batches, len(offsets)))]
            selection = cfg.inversion.selection
            batches = [(torch.full((targets_for(selection, n),), task.label, dtype=torch.int64, device=self.device),
                        torch.Generator(device="cpu").manual_seed(batch_seed(task.seed, i))) for i, _, n in packed]
            results = invert_packed(
                teacher.model, batches, cfg.inversion,
                img_size=teacher.img_size, mean=teacher.mean, std=teacher.std, autocast_dtype=autocast,
                count_flops=False,
            )
            for (_, offset, n), (targets, _), result in zip(packed, batches, results):
                inversion_seconds += result.seconds
                flops += self.batch_flops(targets.shape[0])
                samples += samples_from_result(
                    result.first(n), task, offset=offset, teacher=teacher.teacher_id, method=cfg.method,
                    seconds_per_image=result.seconds / n,
                )
            if cfg.fault is not None:
                cfg.fault.maybe_fire(task.shard_id)
        def owns() -> None:
            if guard is not None:
                guard()
            if cfg.lease_token is not None:
                check_fence(self.layout, cfg.lease_token)

        start = time.perf_counter()
        stats = write_shard(
            self.layout, task.shard_id, samples, num_classes=cfg.num_classes, image_format=cfg.image_format,
            extra_stats={"inversion_seconds": inversion_seconds, "flops": flops, "device": str(self.device),
                         "provenance": self.record},
            guard=owns,
        )
        note_local_commit(self.layout, task.shard_id)
        stats["write_seconds"] = time.perf_counter() - start
        return stats
