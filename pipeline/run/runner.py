"""``smi-synth run``: generate a corpus on a Ray cluster (or a local one), resuming where it stopped.

The driver plans the shards, prepares OUT (refusing a different spec, clearing incomplete shards
and stray temporaries), starts one actor per GPU (or CPU actors sized to the machine) that loads the
teacher once, hands out pending shards, retries failed ones and keeps manifest.json current as
shards complete. Workers write their shards themselves; a shard's stats file, written last, is the
only completion marker, so a killed run resumes exactly. Once the dispatch ends, the temporaries of
writers that died mid-write (a worker on a lost node) are removed, while the run still holds the corpus.

Provenance: before any shard is handed out, every worker's record (teacher weights, engine, package
versions, device, GPU model; :mod:`pipeline.run.provenance`) is compared with the one manifest.json
recorded when the corpus's first shards were made (or, for a new corpus, with the first worker's).
A difference is refused with a message naming it, unless ``allow_provenance_mismatch`` (``run
--allow-provenance-mismatch``), which records it in manifest.json (``spec.provenance_mismatches``).
Shards whose stats show another provenance anyway (an actor restarted on another node) are deleted
and reported as failed once the dispatch ends, so the next run regenerates them.

Fencing: the run holds the corpus lease (:mod:`pipeline.corpus.lease`, ``resources.lease_ttl_s``) and
decides what is complete only once it holds it. Every commit checks the lease first: a worker's shard
commit (:func:`~pipeline.corpus.lease.check_fence`) and the driver's writes of manifest.json and OUT.
A driver that lost it (stopped past its lease, then taken over) stops before its next commit and
exits 1 naming the holder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from pipeline.console import emit_json, progress
from pipeline.corpus.card import write_card
from pipeline.corpus.index import (
    IndexWriter,
    ShardTask,
    complete_shard_ids,
    read_manifest,
    read_stats,
    refresh_index,
    write_manifest,
)
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import CorpusLease, LeaseLost
from pipeline.corpus.writer import clean_for_resume, remove_shard, remove_stray_temporaries
from pipeline.errors import UserError
from pipeline.run.attempts import AttemptRegistry
from pipeline.run.cluster import check_fit, workers_that_fit
from pipeline.run.faults import FaultPlan
from pipeline.run.plan import plan_shards
from pipeline.run.provenance import mismatches, package_version
from pipeline.run.scheduler import (
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
    requeued_unstarted: int = 0  # shards queued behind a failed attempt on its worker: re-queued, no attempt used
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
            "requeued_unstarted": self.requeued_unstarted,
            "shards_per_worker": self.shards_per_worker,
            "images_per_second": self.completed_images / self.wall_seconds if self.wall_seconds else 0.0,
            "images_per_second_per_worker": (
                self.completed_images / self.inversion_seconds if self.inversion_seconds else 0.0
            ),
            "share_outside_inversion": 1 - self.inversion_seconds / busy if busy and self.completed_images else None,
        }


def check_resumable(spec: RunSpec, layout: CorpusLayout) -> set[int]:
    """Refuse an OUT holding another spec's corpus or non-corpus files; return its complete shard ids."""
    return load_resumable(spec, layout)[2]


def load_resumable(spec: RunSpec, layout: CorpusLayout) -> tuple[RunSpec, dict, set[int]]:
    """:func:`check_resumable`, also returning the spec to resume with and OUT's manifest.json as read
    (``{}`` for a new corpus), so that a resume reads it once and hands it to :func:`check_provenance` and
    :func:`prepare_out`. On a resume, the inversion fields the manifest leaves out keep the values the
    corpus recorded (:meth:`RunSpec.with_recorded_recipe`), so a corpus finishes with the recipe it began."""
    if layout.storage.exists(layout.manifest):
        existing = read_manifest(layout)
        spec = spec.with_recorded_recipe(existing)
        if not spec.matches_hash(existing.get("spec_hash")):
            recorded = (existing.get("spec") or {}).get("hashed_fields")
            diffs = spec.hash_differences(recorded) if isinstance(recorded, dict) else []
            named = f": {'; '.join(diffs[:4])}" + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else "") if diffs else ""
            raise UserError(
                f"{layout.root} holds a corpus of a different spec (spec hash {str(existing.get('spec_hash'))[:12]}, "
                f"this manifest {spec.spec_hash()[:12]}){named}; refusing to resume into it: use another --out"
            )
        return spec, existing, set(complete_shard_ids(layout, existing))
    if not layout.storage.is_empty():
        raise UserError(f"{layout.root} is not empty and is not an smi-synth corpus; refusing to write into it")
    return spec, {}, set()


def prepare_out(spec: RunSpec, tasks: list[ShardTask], complete: set[int], execution: dict,
                provenance: dict | None = None, *, allow_provenance_mismatch: bool = False,
                manifest: dict | None = None) -> None:
    """Clear stray temporaries and incomplete shards, then (re)write manifest.json.

    ``execution`` (device kind and dtype) is recorded; resuming a corpus that already has complete
    shards on another kind of device is refused, since CPU and GPU arithmetic give different bytes
    (allowed with ``allow_provenance_mismatch``, and recorded). ``provenance`` (from
    :func:`check_provenance`) is written into the spec as ``provenance`` and
    ``provenance_mismatches``. The package version recorded when the first shards were made is kept.
    ``manifest``: OUT's manifest.json as :func:`load_resumable` read it (``{}``: none); read here if None.
    """
    layout = CorpusLayout(spec.output)
    if manifest is None:
        manifest = read_manifest(layout) if layout.storage.exists(layout.manifest) else {}
    existing = manifest if complete else {}
    recorded_spec = existing.get("spec") or {}
    provenance = dict(provenance or {})
    recorded = recorded_spec.get("execution")
    if recorded and recorded != execution:
        if not allow_provenance_mismatch:
            raise UserError(
                f"{layout.root} was generated with {recorded}; this run would use {execution}, which gives "
                f"different bytes: run it where the corpus was started, use another --out, or pass "
                f"--allow-provenance-mismatch to mix them (recorded in manifest.json)"
            )
        provenance.setdefault("provenance_mismatches", list(recorded_spec.get("provenance_mismatches") or []))
        provenance["provenance_mismatches"].append(
            {"complete_shards_before": len(complete), "differences": [f"execution: {recorded} -> {execution}"]})
        execution = recorded  # the corpus's own execution stays its reference
    clean_for_resume(layout, [t.shard_id for t in tasks if t.shard_id not in complete])
    resolved = {**spec.resolved(), "execution": execution, **provenance}
    version = existing.get("package_version") if complete else None
    write_manifest(layout, spec=resolved, spec_hash=spec.spec_hash(), package_version=version or package_version(),
                   tasks=tasks, previous=manifest or {"shards": []})


def check_provenance(records: list[dict | None], layout: CorpusLayout, complete: set[int],
                     allow: bool = False, manifest: dict | None = None) -> dict:
    """Compare the workers' provenance records with the corpus's; return what manifest.json records.

    The reference is the record manifest.json kept from the corpus's first shards when some shards
    are complete, else the first worker's. ``None`` records (workers that did not start) are skipped.
    Raises UserError naming the first differences unless ``allow``; then the difference is recorded.
    ``manifest``: OUT's manifest.json as :func:`load_resumable` read it (``{}``: none); read here if None.
    """
    records = [r for r in records if r is not None]
    recorded_spec: dict = {}
    if complete:
        if manifest is None:
            manifest = read_manifest(layout) if layout.storage.exists(layout.manifest) else {}
        recorded_spec = manifest.get("spec") or {}
    reference = recorded_spec.get("provenance") if complete else None
    history = list(recorded_spec.get("provenance_mismatches") or [])
    if not records:
        return {"provenance": reference, "provenance_mismatches": history} if reference else {}
    if reference is None:
        reference = records[0]
    diffs: list[str] = []
    for record in records:
        diffs += [d for d in mismatches(reference, record) if d not in diffs]
    if diffs and not allow:
        what = ("this run's workers differ from those that made the corpus's first shards" if complete
                else "this run's workers differ from each other")
        raise UserError(
            f"{layout.root}: provenance mismatch: {what}: {'; '.join(diffs[:4])}"
            + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else "")
            + "; mixing them can change bytes. Run where the corpus was started (same versions, device and "
            "GPU model), use another --out, or pass --allow-provenance-mismatch to mix them (recorded in manifest.json)"
        )
    if diffs:
        log.warning("provenance mismatch allowed: %s", "; ".join(diffs))
        history.append({"complete_shards_before": len(complete), "differences": diffs,
                        "records": [r for r in records if mismatches(reference, r)][:4]})
    return {"provenance": reference, "provenance_mismatches": history}


# Ray runs its workers at niceness 15; beside any busy process at 0 (another job on a shared machine), the
# local actors then got about 4% of a core each and none was ready within the scheduler's 120 s (the demo
# failed so beside two CPU-bound processes, 2026-11-30). The shard workers are the run's work: niceness 0,
# as Ray itself gives a job's driver (RAY_worker_niceness is Ray's RayConfig variable).
LOCAL_WORKER_NICENESS = ("RAY_worker_niceness", "0")


def _ray_init(address: str | None, num_cpus: int | None = None) -> tuple[ModuleType, bool]:
    """Ray for this run and whether the run owns it (then it shuts it down at the end). A Ray this process
    has already initialised (a test's, a notebook's) is used as it is and left running; an ``address``
    naming another cluster is then refused. ``num_cpus``: a new local instance's size (default: the
    machine's cores)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", current):
            raise UserError(f"--address {address}: this process is already connected to the Ray cluster at {current}")
        return ray, False
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:  # a fresh local instance, never a Ray cluster another program started on this host
        address = "local"
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=256 * 1024 * 1024,
                      runtime_env={"env_vars": {LOCAL_WORKER_NICENESS[0]: LOCAL_WORKER_NICENESS[1]}})
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise UserError(f"--address {address}: cannot connect to the Ray cluster ({exc})") from None
    return ray, True


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
    per_gpu = (1.0 if res.gpus_per_worker is None else float(res.gpus_per_worker)) if use_gpu else 0.0
    if use_gpu and not 0 < per_gpu <= 1:
        raise UserError(
            f"resources.gpus_per_worker: {per_gpu:g} is not usable: a worker runs on one GPU, so give 1, or a "
            "fraction such as 0.5 to share one GPU between workers (0 would give a CUDA worker no GPU)")
    per_cpu = float(res.cpus_per_worker or 1)
    if use_gpu and gpus < per_gpu:
        raise UserError(f"device: cuda needs {per_gpu:g} GPU(s) per worker; the Ray cluster has {gpus}")

    def room() -> int:
        return workers_that_fit(ray.nodes(), per_cpu, per_gpu)

    nodes = ray.nodes()
    count = check_fit(wanted, workers_that_fit(nodes, per_cpu, per_gpu), per_cpu, per_gpu, nodes, label)
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
    policy: SchedulePolicy | None = None, allow_provenance_mismatch: bool = False,
    worker_start_timeout_s: float | None = None,
) -> RunReport:
    """Generate every pending shard of ``spec`` into ``spec.output``; see the module docstring.

    ``policy`` overrides the scheduling limits (attempts, per-shard deadline, start-up); its start-up
    limit is ``resources.worker_start_timeout_s`` unless given, and ``worker_start_timeout_s`` (``run
    --worker-start-timeout``) overrides both.
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be >= 1, got {workers}")
    if worker_start_timeout_s is not None and not worker_start_timeout_s > 0:
        raise UserError(f"--worker-start-timeout: must be > 0 seconds, got {worker_start_timeout_s:g}")
    policy = policy or SchedulePolicy(start_timeout_s=float(spec.resources.worker_start_timeout_s))
    if worker_start_timeout_s is not None:
        policy = dataclasses.replace(policy, start_timeout_s=float(worker_start_timeout_s))
    layout = CorpusLayout(spec.output)
    spec, manifest, complete = load_resumable(spec, layout)
    tasks = plan_shards(spec)
    pending = [t for t in tasks if t.shard_id not in complete]
    report = RunReport(out=str(layout.root), shards=len(tasks), images=sum(t.count for t in tasks))
    report.skipped_shards = len(tasks) - len(pending)
    if not pending:
        _finish(layout, report, start)
        return report
    if spec.teacher_spec == "toy":
        prebuild_toy_teacher(show_progress)
    ray, owned = _ray_init(address)
    actors: list = []  # this run's actors: released at the end when the Ray is the caller's
    try:
        device, count, options, room = _worker_layout(spec, ray, workers)
        dtype = spec.dtype if device == "cuda" else "float32"
        threads = None if device == "cuda" else max(1, int(options["num_cpus"]))
        execution = {"device": device, "dtype": dtype, "threads_per_worker": threads}
        with CorpusLease.acquire(layout, f"smi-synth run {spec.name}", ttl_s=spec.resources.lease_ttl_s) as lease:
            if layout.storage.exists(layout.manifest):  # what is complete now that this run holds the lease
                spec, manifest, complete = load_resumable(spec, layout)
                pending = [t for t in tasks if t.shard_id not in complete]
                report.skipped_shards = len(tasks) - len(pending)
            count = min(count, len(pending))
            report.workers, report.device = count, device
            config = WorkerConfig(
                teacher_spec=spec.teacher_spec, out=str(layout.root), inversion=spec.inversion_config(),
                method=spec.method, batch_size=spec.batch_size, pack_batches=spec.pack_batches,
                image_format=spec.image_format,
                num_classes=spec.teacher.num_classes, device=device, dtype=dtype,
                threads=threads, fault=FaultPlan.from_env(), lease_token=lease.token,
                progress_every_s=max(0.2, min(10.0, policy.start_timeout_s / 5)),
            )
            actor_cls = ray.remote(RayShardWorker).options(max_restarts=-1, max_task_retries=0, **options)
            # the registry lives on the driver's node: losing a worker node must not lose every attempt's record
            here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)
            registry_name = f"smi-synth-attempts-{lease.token}"  # the workers look it up by name
            registry = ray.remote(AttemptRegistry).options(num_cpus=0, scheduling_strategy=here,
                                                           name=registry_name).remote()
            actors.append(registry)
            gate = _ProvenanceGate(ray, spec, tasks, complete, manifest, execution, allow_provenance_mismatch, lease)
            report.startup_seconds = time.perf_counter() - start
            try:
                if pending:
                    _dispatch(ray, lambda: actors.append(actor_cls.remote(config, registry_name)) or actors[-1], count,
                              pending, registry, layout, report, show_progress, room, policy, gate, lease)
                if not allow_provenance_mismatch:  # e.g. an actor restarted on a node unlike the others
                    lease.check()
                    reject_foreign_shards(layout, [t.shard_id for t in pending], gate.reference, report)
                lease.check()
                # every attempt has returned or its worker is gone: a temporary left now is a dead writer's
                # (a worker on a lost node killed mid-write), removed while the run still holds the corpus
                remove_stray_temporaries(layout)
            except LeaseLost as exc:
                raise RunError(f"{exc}; this run stopped before its next commit (what it committed stays "
                               "complete)") from None
    finally:
        if owned:
            ray.shutdown()
        else:
            for handle in actors:
                ray.kill(handle)
    _finish(layout, report, start)
    return report


def reject_foreign_shards(layout: CorpusLayout, shard_ids: list[int], reference: dict | None,
                          report: RunReport) -> list[int]:
    """Unmark and delete shards of ``shard_ids`` whose stats' provenance differs from ``reference``;
    they count as failed (the next run regenerates them). Returns their ids."""
    if not reference:
        return []
    rejected = []
    for sid in shard_ids:
        try:
            stats = read_stats(layout, sid)
        except (OSError, ValueError):
            continue  # not complete
        diffs = mismatches(reference, stats.get("provenance") or {})
        if diffs:
            remove_shard(layout, sid)
            report.failed_shards[sid] = f"provenance mismatch: {'; '.join(diffs[:2])}"
            report.completed_shards -= 1
            report.completed_images -= int(stats.get("samples", 0))
            rejected.append(sid)
    if rejected:
        refresh_index(layout, shard_ids=rejected)
    return rejected


def _finish(layout: CorpusLayout, report: RunReport, start: float) -> None:
    """Once every shard is complete, (re)write the dataset card: its ``configs`` entry is what makes
    ``datasets.load_dataset(OUT)`` read ``data/*.tar`` rather than the parquet metadata."""
    if report.ok and len(complete_shard_ids(layout)) == report.shards:
        write_card(layout)
    report.wall_seconds = time.perf_counter() - start


class _ProvenanceGate:
    """Admits workers as they become ready: the first one's provenance is checked against the corpus
    (:func:`check_provenance`) and OUT is prepared before any shard is handed out; a later worker that
    differs from that reference (a restart on an unlike node) gets no shards, unless mismatches are
    allowed."""

    def __init__(self, ray, spec: RunSpec, tasks: list[ShardTask], complete: set[int], manifest: dict,
                 execution: dict, allow: bool, lease: CorpusLease) -> None:
        self.ray, self.spec, self.tasks, self.complete, self.manifest, self.execution, self.allow = (
            ray, spec, tasks, complete, manifest, execution, allow)
        self.lease = lease
        self.reference: dict | None = None
        self.prepared = False

    def __call__(self, handle) -> bool:
        record = self.ray.get(handle.provenance.remote())
        if not self.prepared:
            layout = CorpusLayout(self.spec.output)
            recorded = check_provenance([record], layout, self.complete, self.allow, manifest=self.manifest)
            self.lease.check()
            prepare_out(self.spec, self.tasks, self.complete, self.execution, recorded,
                        allow_provenance_mismatch=self.allow, manifest=self.manifest)
            self.reference, self.prepared = recorded.get("provenance") or record, True
            return True
        diffs = mismatches(self.reference, record)
        if diffs and not self.allow:
            log.warning("a worker differs from the corpus's provenance (%s); it gets no shards", "; ".join(diffs[:2]))
            return False
        return True


def _dispatch(ray, make_actor, count: int, pending: list[ShardTask], registry, layout: CorpusLayout,
              report: RunReport, show: bool, room, policy: SchedulePolicy, gate: _ProvenanceGate,
              lease: CorpusLease) -> None:
    """Schedule the pending shards (:mod:`pipeline.run.scheduler`); mark each completed shard in the
    in-memory index (opened once OUT is prepared), flushed to manifest.json and shardindex.json on a
    timer and at the end, each only while the run still holds ``lease``."""
    index: IndexWriter | None = None
    bar = progress(sum(t.count for t in pending), "images", unit="img", disable=not show)

    def on_done(task: ShardTask, stats: dict) -> None:
        nonlocal index
        lease.check()  # the index may be flushed now: a commit
        if index is None:
            index = IndexWriter(layout)
        index.mark_complete(task.shard_id, stats)
        report.completed_shards += 1
        report.completed_images += int(stats["samples"])
        report.inversion_seconds += float(stats.get("inversion_seconds", 0.0))
        report.write_seconds += float(stats.get("write_seconds", 0.0))
        bar.update(int(stats["samples"]))
        bar.set_postfix(shards=f"{report.completed_shards}/{len(pending)}", failed=len(report.failed_shards))

    try:
        outcome = schedule(ray, make_actor, count, pending, registry=registry, on_done=on_done,
                           policy=policy, room=room, on_ready=gate, fence=lease.raise_if_lost)
    except WorkerStartError as exc:
        raise RunError(str(exc)) from None
    finally:
        bar.close()
        if index is not None and not lease.lost:
            index.flush()
    report.failed_shards.update(outcome.failed)
    report.retries, report.workers = outcome.retries, max(report.workers, outcome.actors_started)
    report.requeued_unstarted = outcome.requeued_unstarted
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
    report = run_corpus(spec, address=args.address, workers=args.workers, show_progress=sys.stderr.isatty(),
                        allow_provenance_mismatch=getattr(args, "allow_provenance_mismatch", False),
                        worker_start_timeout_s=getattr(args, "worker_start_timeout", None))
    print(format_report(report), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(report.as_dict())
    return 0 if report.ok else 1
