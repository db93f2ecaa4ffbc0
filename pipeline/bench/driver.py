"""Driver benchmark: bookkeeping cost per completed shard, and the status / resume scans, at scale.

Builds a synthetic corpus folder of N planned shards (manifest plus one small stats file per complete
shard; no tars: only the driver's bookkeeping is measured), then times, in one process:

- ``per_shard_ms``: the run driver's work per completed shard (:class:`IndexWriter`: mark it in the
  in-memory manifest; flushes on its 10 s timer and once at the end), and for comparison the old
  per-shard ``refresh_index`` (re-read and rewrite the whole index after every shard) on a sample;
- ``status_s``: ``smi-synth status`` (manifest, one stats listing, every stats file);
- ``resume_scan_s``: a resume's preparation (refuse-or-accept the folder, clear leftovers of pending
  shards, rewrite the manifest from the stats);
- ``dispatch_ms`` (``--dispatch N``): the scheduler's own time per shard on a local Ray instance, with
  actors that answer at once (token registration, dispatch, result, bookkeeping), for each queue
  depth of ``--depths`` (shards held per actor: 1 = one at a time, 2 = one running + one queued);
- ``busy`` (``--busy N``): real workers (a tiny ViT checkpoint, CPU) generate and write N short
  shards, once per queue depth, the depths interleaved ``--repeats`` times in one Ray instance; from
  each attempt's start and end on its actor: the actors' idle time between consecutive shards, their
  busy share of the generation window, and shards per second.

    .venv/bin/python -m pipeline.bench.driver --shards 4000,40000 --dispatch 2000 --json
    .venv/bin/python -m pipeline.bench.driver --shards '' --busy 120 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.console import emit_json
from pipeline.corpus.index import (
    IndexWriter,
    ShardTask,
    complete_shard_ids,
    read_manifest,
    refresh_index,
    write_manifest,
)
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.status import corpus_status
from pipeline.corpus.writer import clean_for_resume

PER_SHARD = 250
OLD_SAMPLE = 20  # shards timed with the old per-shard refresh (it is quadratic)


def _stats(shard_id: int) -> dict[str, Any]:
    return {"shard": shard_id, "samples": PER_SHARD, "tar_bytes": 1 << 24, "tar_sha256": f"{shard_id:064x}",
            "tar_md5": f"{shard_id:032x}", "inversion_seconds": 100.0, "generation_seconds": 100.0}


def build(root: Path, shards: int, complete_fraction: float = 0.9) -> tuple[CorpusLayout, list[ShardTask]]:
    """A corpus folder of ``shards`` planned shards, the first ``complete_fraction`` of them complete."""
    layout = CorpusLayout(root)
    tasks = [ShardTask(i, i // 4, f"class{i // 4}", (i % 4) * PER_SHARD, PER_SHARD, i) for i in range(shards)]
    write_manifest(layout, spec={"name": "bench"}, spec_hash="bench", package_version="bench", tasks=tasks)
    stats_dir = root / layout.stats_dir
    stats_dir.mkdir(parents=True, exist_ok=True)
    for i in range(int(shards * complete_fraction)):
        (root / layout.stats(i)).write_text(json.dumps(_stats(i)))
    return layout, tasks


def bench_driver(root: Path, shards: int) -> dict[str, Any]:
    layout, tasks = build(root, shards)
    done = int(shards * 0.9)

    t0 = time.perf_counter()
    write_manifest(layout, spec={"name": "bench"}, spec_hash="bench", package_version="bench", tasks=tasks)
    index = IndexWriter(layout)
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(done):
        index.mark_complete(i, _stats(i))
    index.flush()
    per_shard_new = (time.perf_counter() - t0) / done

    t0 = time.perf_counter()
    for i in range(OLD_SAMPLE):
        refresh_index(layout, shard_ids=[i])
    per_shard_old = (time.perf_counter() - t0) / OLD_SAMPLE

    t0 = time.perf_counter()
    status = corpus_status(layout)
    t_status = time.perf_counter() - t0
    assert status["complete_shards"] == done

    t0 = time.perf_counter()  # what a resume does before its first dispatch (runner.check_resumable, prepare_out)
    existing = read_manifest(layout)
    complete = set(complete_shard_ids(layout, existing))
    clean_for_resume(layout, [t.shard_id for t in tasks if t.shard_id not in complete])
    write_manifest(layout, spec={"name": "bench"}, spec_hash="bench", package_version="bench", tasks=tasks,
                   previous=existing)
    t_resume = time.perf_counter() - t0
    return {
        "shards": shards, "complete": done,
        "per_shard_ms": 1000 * per_shard_new, "old_refresh_per_shard_ms": 1000 * per_shard_old,
        "index_load_s": t_setup, "status_s": t_status, "resume_scan_s": t_resume,
    }


class _InstantWorker:
    """A Ray actor that 'generates' a shard at once: what is left is the driver's own cost."""

    def ready(self) -> int:
        return 1

    def run_attempt(self, task: ShardTask, token: str, registry: Any, assigned: None = None) -> dict:
        return _stats(task.shard_id)


def bench_dispatch(shards: int, workers: int = 2, depths: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    import ray

    from pipeline.run.attempts import AttemptRegistry
    from pipeline.run.scheduler import SchedulePolicy, schedule

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    results = []
    try:
        actor_cls = ray.remote(_InstantWorker).options(num_cpus=1)
        registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
        tasks = [ShardTask(i, i // 4, f"class{i // 4}", 0, PER_SHARD, i) for i in range(shards)]
        for depth in depths:
            with tempfile.TemporaryDirectory() as tmp:
                layout, _ = build(Path(tmp) / "corpus", shards, complete_fraction=0.0)
                index = IndexWriter(layout)
                start = time.perf_counter()
                outcome = schedule(ray, actor_cls.remote, workers, tasks, registry=registry,
                                   on_done=lambda t, st, index=index: index.mark_complete(t.shard_id, st),
                                   policy=SchedulePolicy(queue_depth=depth))
                index.flush()
                seconds = time.perf_counter() - start
            assert not outcome.failed
            results.append({"shards": shards, "workers": workers, "queue_depth": depth,
                            "dispatch_ms": 1000 * seconds / shards})
    finally:
        ray.shutdown()
    return results


BUSY_ARCH = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 4}


def _busy_spec(root: Path, iterations: int, per_shard: int, shards: int):
    """A tiny checkpoint teacher and a RunSpec of ``shards`` short shards around it (4 classes)."""
    import timm
    import torch
    import yaml

    from pipeline.run.spec import load_spec
    from pipeline.teachers.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **BUSY_ARCH).eval()
    teacher = save_checkpoint(model, root / "tiny.safetensors", arch="vit_tiny_patch16_224", model_kwargs=BUSY_ARCH,
                              class_names=["a", "b", "c", "d"], license="apache-2.0")
    stops = [max(1, iterations * k // 10) for k in (1, 2, 4, 6)]
    spec = {"name": "busy", "teacher": str(teacher), "classes": "all", "seed": 7, "device": "cpu",
            "images_per_class": per_shard * -(-shards // 4), "images_per_shard": per_shard,
            "inversion": {"method": "smi", "iterations": iterations, "batch_size": per_shard,
                          "schedule": {"iterations": stops, "ratios": [0.3] * 4}},
            "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}}
    path = root / "busy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_spec(path)


def _timed_worker_class():
    from pipeline.run.scheduler import RayShardWorker

    class TimedShardWorker(RayShardWorker):
        """The run's worker, returning when (wall clock) each attempt started and ended on the actor."""

        def run_attempt(self, task, token, registry, assigned=None) -> dict:
            start = time.time()
            stats = super().run_attempt(task, token, registry, assigned)
            return {**stats, "attempt_start": start, "attempt_end": time.time(), "pid": os.getpid()}

    return TimedShardWorker


def _idle_figures(results: list[dict]) -> dict[str, Any]:
    """Idle gaps between consecutive attempts on each actor, busy share of the window, shards/s."""
    by_actor: dict[int, list[dict]] = {}
    for r in results:
        by_actor.setdefault(r["pid"], []).append(r)
    gaps, busy = [], 0.0
    for runs in by_actor.values():
        runs.sort(key=lambda r: r["attempt_start"])
        gaps += [b["attempt_start"] - a["attempt_end"] for a, b in itertools.pairwise(runs)]
        busy += sum(r["attempt_end"] - r["attempt_start"] for r in runs)
    window = max(r["attempt_end"] for r in results) - min(r["attempt_start"] for r in results)
    durations = [r["attempt_end"] - r["attempt_start"] for r in results]
    return {
        "shard_ms_median": 1000 * statistics.median(durations),
        "idle_gap_ms_median": 1000 * statistics.median(gaps), "idle_gap_ms_mean": 1000 * statistics.fmean(gaps),
        "idle_gap_ms_p90": 1000 * sorted(gaps)[int(0.9 * (len(gaps) - 1))],
        "busy_share": busy / (window * len(by_actor)), "window_s": window, "shards_per_s": len(results) / window,
        "actors": len(by_actor),
    }


def bench_busy(shards: int, workers: int = 2, depths: tuple[int, ...] = (1, 2), repeats: int = 3,
               iterations: int = 20, per_shard: int = 2, planned: int = 0) -> dict[str, Any]:
    """Real workers, short shards: idle time between shards per queue depth (see the module doc).

    ``planned`` > ``shards``: the manifest lists that many shards (padded with synthetic rows after the
    ``shards`` that run), so the driver's index flushes (every 10 s) cost what they cost at that size."""
    import ray

    from pipeline.corpus.index import write_manifest as write_index
    from pipeline.run.plan import plan_shards
    from pipeline.run.attempts import AttemptRegistry
    from pipeline.run.scheduler import SchedulePolicy, schedule
    from pipeline.run.worker import WorkerConfig

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _busy_spec(Path(tmp), iterations, per_shard, shards)
        tasks = plan_shards(spec)[:shards]
        planned_tasks = tasks + [ShardTask(i, i // 4, f"class{i // 4}", 0, per_shard, i)
                                 for i in range(len(tasks), planned)]
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                 object_store_memory=256 * 1024 * 1024)
        try:
            actor_cls = ray.remote(_timed_worker_class()).options(num_cpus=1, max_restarts=-1, max_task_retries=0)
            registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
            for repeat in range(repeats):
                for depth in depths:
                    layout = CorpusLayout(Path(tmp) / f"corpus-{repeat}-{depth}")
                    write_index(layout, spec={"name": "busy"}, spec_hash="busy", package_version="bench",
                                tasks=planned_tasks)
                    config = WorkerConfig(teacher_spec=spec.teacher_spec, out=str(layout.root),
                                          inversion=spec.inversion_config(), method=spec.method,
                                          batch_size=spec.batch_size, image_format=spec.image_format,
                                          num_classes=spec.teacher.num_classes, device="cpu", threads=1)
                    index, results = IndexWriter(layout), []

                    def on_done(task: ShardTask, stats: dict, index=index, results=results) -> None:
                        index.mark_complete(task.shard_id, stats)
                        results.append(stats)

                    start = time.perf_counter()
                    outcome = schedule(ray, lambda config=config: actor_cls.remote(config), workers, tasks,
                                       registry=registry,
                                       on_done=on_done, policy=SchedulePolicy(queue_depth=depth))
                    index.flush()
                    wall = time.perf_counter() - start
                    if outcome.failed:
                        raise RuntimeError(f"busy benchmark: shards failed: {outcome.failed}")
                    runs.append({"repeat": repeat, "queue_depth": depth, "wall_s": wall,
                                 "handed_over": outcome.handed_over, **_idle_figures(results)})
        finally:
            ray.shutdown()
    summary = {}
    for depth in depths:
        mine = [r for r in runs if r["queue_depth"] == depth]
        summary[str(depth)] = {k: statistics.median(r[k] for r in mine)
                               for k in ("idle_gap_ms_median", "idle_gap_ms_mean", "busy_share", "shards_per_s",
                                         "shard_ms_median")}
    return {"shards": shards, "planned_shards": len(planned_tasks), "workers": workers, "iterations": iterations,
            "images_per_shard": per_shard,
            "repeats": repeats, "runs": runs, "median_over_repeats": summary,
            "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.driver", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="4000,40000", help="comma list of planned shard counts ('' for none)")
    parser.add_argument("--dispatch", type=int, default=0, help="also time the scheduler on this many shards")
    parser.add_argument("--depths", default="1,2", help="queue depths to compare (shards held per actor)")
    parser.add_argument("--busy", type=int, default=0, help="also run this many short real shards per depth")
    parser.add_argument("--workers", type=int, default=2, help="actors of --dispatch and --busy")
    parser.add_argument("--repeats", type=int, default=3, help="--busy runs per depth, interleaved")
    parser.add_argument("--iterations", type=int, default=20, help="inversion iterations of a --busy shard")
    parser.add_argument("--planned", type=int, default=0, help="--busy: shards in the manifest (its first --busy run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    depths = tuple(int(x) for x in args.depths.split(","))
    results = []
    for n in (int(x) for x in args.shards.split(",") if x.strip()):
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_driver(Path(tmp) / "corpus", n)
        results.append(r)
        print(f"{n} shards: driver {r['per_shard_ms']:.3f} ms/shard (old refresh {r['old_refresh_per_shard_ms']:.1f} "
              f"ms/shard), status {r['status_s']:.2f} s, resume scan {r['resume_scan_s']:.2f} s")
    dispatch = bench_dispatch(args.dispatch, args.workers, depths) if args.dispatch else None
    for d in dispatch or []:
        print(f"scheduler, queue depth {d['queue_depth']}: {d['dispatch_ms']:.2f} ms per shard over {d['shards']} "
              "instant shards")
    busy = (bench_busy(args.busy, args.workers, depths, args.repeats, args.iterations, planned=args.planned)
            if args.busy else None)
    for depth, m in (busy or {}).get("median_over_repeats", {}).items():
        print(f"queue depth {depth}: idle between shards {m['idle_gap_ms_median']:.1f} ms median "
              f"({m['idle_gap_ms_mean']:.1f} mean), busy share {100 * m['busy_share']:.1f}%, "
              f"{m['shards_per_s']:.2f} shards/s, shard {m['shard_ms_median']:.0f} ms")
    if args.json:
        emit_json({"results": results, "dispatch": dispatch, "busy": busy})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
