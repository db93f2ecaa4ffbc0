"""``smi-synth run``: generate a corpus on a Ray cluster (or a local one), resuming where it stopped.

The driver plans the shards, prepares OUT (refusing a different spec, clearing incomplete shards
and stray temporaries), starts one actor per GPU (or CPU actors sized to the machine) that loads the
teacher once, hands out pending shards, retries failed ones and keeps manifest.json current as
shards complete. Workers write their shards themselves; a shard's stats file, written last, is the
only completion marker, so a killed run resumes exactly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from pipeline.console import emit_json, progress
from pipeline.corpus.index import (
    IndexWriter,
    ShardTask,
    complete_shard_ids,
    read_manifest,
    write_manifest,
)
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import CorpusLease
from pipeline.corpus.writer import clean_for_resume
from pipeline.errors import UserError
from pipeline.hub.card import write_card
from pipeline.run.cluster import check_fit, workers_that_fit
from pipeline.run.faults import FaultPlan
from pipeline.run.plan import plan_shards
from pipeline.run.scheduler import (
    AttemptRegistry,
    RayShardWorker,
    SchedulePolicy,
    WorkerStartError,
    schedule,
)
from pipeline.run.spec import RunSpec, load_spec
from pipeline.run.worker import WorkerConfig
from pipeline.teachers.toy import load_or_build_toy_teacher

log = logging.getLogger(__name__)



class RunError(RuntimeError):
    """The run cannot go on (a worker cannot start, the lease was lost); exit status 1 with this message."""


def package_version() -> str:
    try:
        return metadata.version("smi-synth")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class RunReport:
    """What one ``run`` did."""

    out: str
    shards: int
    images: int
    skipped_shards: int = 0
    completed_shards: int = 0
    completed_images: int = 0
    failed_shards: dict[int, str] = field(default_factory=dict)
    workers: int = 0
    device: str = "cpu"
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0  # planning, preparing OUT, Ray and teacher start-up
    inversion_seconds: float = 0.0  # summed over workers
    write_seconds: float = 0.0  # summed over workers
    retries: int = 0  # shard attempts re-queued after a failure
    shards_per_worker: list[int] = field(default_factory=list)  # in worker start order (grown pools too)

    @property
    def ok(self) -> bool:
        return not self.failed_shards

    def as_dict(self) -> dict:
        busy = self.wall_seconds * max(self.workers, 1)
        return {
            "ok": self.ok, "out": self.out, "shards": self.shards, "images": self.images,
            "skipped_shards": self.skipped_shards, "completed_shards": self.completed_shards,
            "completed_images": self.completed_images,
            "failed_shards": sorted(self.failed_shards), "failures": {str(k): v for k, v in self.failed_shards.items()},
            "workers": self.workers, "device": self.device, "wall_seconds": self.wall_seconds,
            "startup_seconds": self.startup_seconds, "inversion_seconds": self.inversion_seconds,
            "write_seconds": self.write_seconds, "retries": self.retries,
            "shards_per_worker": self.shards_per_worker,
            "images_per_second": self.completed_images / self.wall_seconds if self.wall_seconds else 0.0,
            "images_per_second_per_worker": (
                self.completed_images / self.inversion_seconds if self.inversion_seconds else 0.0
            ),
            "share_outside_inversion": 1 - self.inversion_seconds / busy if busy and self.completed_images else None,
        }


def check_resumable(spec: RunSpec, layout: CorpusLayout) -> set[int]:
    """Refuse an OUT holding another spec's corpus or non-corpus files; return its complete shard ids."""
    if layout.storage.exists(layout.manifest):
        existing = read_manifest(layout)
        if not spec.matches_hash(existing.get("spec_hash")):
            raise UserError(
                f"{layout.root} holds a corpus of a different spec (spec hash {str(existing.get('spec_hash'))[:12]}, "
                f"this manifest {spec.spec_hash()[:12]}); refusing to resume into it: use another --out"
            )
        return set(complete_shard_ids(layout, existing))
    if not layout.storage.is_empty():
        raise UserError(f"{layout.root} is not empty and is not an smi-synth corpus; refusing to write into it")
    return set()


def prepare_out(spec: RunSpec, tasks: list[ShardTask], complete: set[int], execution: dict) -> None:
    """Clear stray temporaries and incomplete shards, then (re)write manifest.json.

    ``execution`` (device kind and dtype) is recorded; resuming a corpus that already has complete
    shards on another kind of device is refused, since CPU and GPU arithmetic give different bytes.
    """
    layout = CorpusLayout(spec.output)
    existing = read_manifest(layout) if layout.storage.exists(layout.manifest) else None
    if complete and existing is not None:
        recorded = existing.get("spec", {}).get("execution")
        if recorded and recorded != execution:
            raise UserError(
                f"{layout.root} was generated with {recorded}; this run would use {execution}, which gives "
                f"different bytes: run it where the corpus was started, or use another --out"
            )
    clean_for_resume(layout, [t.shard_id for t in tasks if t.shard_id not in complete])
    resolved = {**spec.resolved(), "execution": execution}
    write_manifest(layout, spec=resolved, spec_hash=spec.spec_hash(), package_version=package_version(), tasks=tasks,
                   previous=existing)


def _ray_init(address: str | None):
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        kwargs.update(num_cpus=os.cpu_count() or 1, object_store_memory=256 * 1024 * 1024)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise UserError(f"--address {address}: cannot connect to the Ray cluster ({exc})") from None
    return ray


def _worker_layout(spec: RunSpec, ray, workers: int | None) -> tuple[str, int, dict, Callable[[], int] | None]:
    """(device, number of actors, actor options, room) for this cluster and spec.

    ``room()`` says how many actors fit the cluster now (the pool grows when nodes join); it is None
    when the count was given explicitly. Impossible requests exit 2 at once, naming the resource.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    res = spec.resources
    wanted = workers if workers is not None else (None if res.workers == "auto" else int(res.workers))
    label = "--workers" if workers is not None else "resources.workers"
    use_gpu = spec.device == "cuda" or (spec.device == "auto" and gpus > 0)
    per_gpu = float(res.gpus_per_worker or 1) if use_gpu else 0.0
    per_cpu = float(res.cpus_per_worker or 1)
    if use_gpu and gpus < per_gpu:
        raise UserError(f"device: cuda needs {per_gpu:g} GPU(s) per worker; the Ray cluster has {gpus}")

    def room() -> int:
        return workers_that_fit(ray.nodes(), per_cpu, per_gpu)

    count = check_fit(wanted, room(), per_cpu, per_gpu, ray.nodes(), label)
    options = {"num_cpus": per_cpu, **({"num_gpus": per_gpu} if use_gpu else {})}
    return ("cuda" if use_gpu else "cpu"), count, options, (room if wanted is None else None)


def prebuild_toy_teacher(show_progress: bool = True) -> dict:
    """Build (or load) the toy teacher in the driver, with a progress bar, so actors only load it."""
    bar = None

    def on_step(step: int, total: int, loss: float) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(total, "training the toy teacher (first use only)", unit="step", disable=not show_progress)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        return load_or_build_toy_teacher(progress=on_step)[1]
    finally:
        if bar is not None:
            bar.close()


def run_corpus(
    spec: RunSpec, *, address: str | None = None, workers: int | None = None, show_progress: bool = True,
    policy: SchedulePolicy | None = None,
) -> RunReport:
    """Generate every pending shard of ``spec`` into ``spec.output``; see the module docstring.

    ``policy`` overrides the scheduling limits (attempts, per-shard deadline, idle timeout).
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be >= 1, got {workers}")
    tasks = plan_shards(spec)
    layout = CorpusLayout(spec.output)
    complete = check_resumable(spec, layout)
    pending = [t for t in tasks if t.shard_id not in complete]
    report = RunReport(out=str(layout.root), shards=len(tasks), images=sum(t.count for t in tasks))
    report.skipped_shards = len(tasks) - len(pending)
    if not pending:
        _finish(layout, report, start)
        return report
    if spec.teacher_spec == "toy":
        prebuild_toy_teacher(show_progress)
    ray = _ray_init(address)
    try:
        device, count, options, room = _worker_layout(spec, ray, workers)
        dtype = spec.dtype if device == "cuda" else "float32"
        threads = None if device == "cuda" else max(1, int(options["num_cpus"]))
        with CorpusLease.acquire(layout, f"smi-synth run {spec.name}") as lease:
            prepare_out(spec, tasks, complete, {"device": device, "dtype": dtype, "threads_per_worker": threads})
            count = min(count, len(pending))
            report.workers, report.device = count, device
            config = WorkerConfig(
                teacher_spec=spec.teacher_spec, out=str(layout.root), inversion=spec.inversion_config(),
                method=spec.method, batch_size=spec.batch_size, image_format=spec.image_format,
                num_classes=spec.teacher.num_classes, device=device, dtype=dtype,
                threads=threads, fault=FaultPlan.from_env(),
            )
            actor_cls = ray.remote(RayShardWorker).options(max_restarts=-1, max_task_retries=0, **options)
            registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
            report.startup_seconds = time.perf_counter() - start
            _dispatch(ray, lambda: actor_cls.remote(config), count, pending, registry, layout, report,
                      show_progress, room, policy)
            if lease.lost:
                raise RunError(f"{layout.root}: another writer took the corpus lease during this run")
    finally:
        ray.shutdown()
    _finish(layout, report, start)
    return report


def _finish(layout: CorpusLayout, report: RunReport, start: float) -> None:
    """Once every shard is complete, (re)write the dataset card: its ``configs`` entry is what makes
    ``datasets.load_dataset(OUT)`` read ``data/*.tar`` rather than the parquet metadata."""
    if report.ok and len(complete_shard_ids(layout)) == report.shards:
        write_card(layout)
    report.wall_seconds = time.perf_counter() - start


def _dispatch(ray, make_actor, count: int, pending: list[ShardTask], registry, layout: CorpusLayout,
              report: RunReport, show: bool, room, policy: SchedulePolicy | None) -> None:
    """Schedule the pending shards (:mod:`pipeline.run.scheduler`); mark each completed shard in the
    in-memory index, flushed to manifest.json and shardindex.json on a timer and at the end."""
    index = IndexWriter(layout)
    bar = progress(sum(t.count for t in pending), "images", unit="img", disable=not show)

    def on_done(task: ShardTask, stats: dict) -> None:
        index.mark_complete(task.shard_id, stats)
        report.completed_shards += 1
        report.completed_images += int(stats["samples"])
        report.inversion_seconds += float(stats.get("inversion_seconds", 0.0))
        report.write_seconds += float(stats.get("write_seconds", 0.0))
        bar.update(int(stats["samples"]))
        bar.set_postfix(shards=f"{report.completed_shards}/{len(pending)}", failed=len(report.failed_shards))

    try:
        outcome = schedule(ray, make_actor, count, pending, registry=registry, on_done=on_done,
                           policy=policy or SchedulePolicy(), room=room)
    except WorkerStartError as exc:
        raise RunError(str(exc)) from None
    finally:
        index.flush()
        bar.close()
    report.failed_shards.update(outcome.failed)
    report.retries, report.workers = outcome.retries, max(report.workers, outcome.actors_started)
    report.shards_per_worker = outcome.shards_per_actor
    for shard, reason in sorted(outcome.failed.items()):
        log.warning("shard %d failed: %s", shard, reason)


def format_report(report: RunReport) -> str:
    d = report.as_dict()
    lines = [
        f"corpus {d['out']}: {d['shards']} shards, {d['images']} images "
        f"({d['skipped_shards']} shards already complete, {d['completed_shards']} generated now)",
    ]
    if d["completed_images"]:
        lines.append(
            f"{d['completed_images']} images in {d['wall_seconds']:.1f} s on {d['workers']} {d['device']} worker(s): "
            f"{d['images_per_second']:.2f} img/s, {d['images_per_second_per_worker']:.2f} img/s per busy worker; "
            f"start-up {d['startup_seconds']:.1f} s, share of worker time outside inversion "
            f"{100 * d['share_outside_inversion']:.0f}%"
        )
    for shard, reason in sorted(report.failed_shards.items()):
        lines.append(f"FAILED shard {shard}: {reason}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.manifest)
    if args.out:
        spec = spec.with_output(args.out)
    report = run_corpus(spec, address=args.address, workers=args.workers, show_progress=sys.stderr.isatty())
    print(format_report(report), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(report.as_dict())
    return 0 if report.ok else 1
