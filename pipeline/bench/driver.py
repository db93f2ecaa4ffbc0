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
  actors that answer at once (token registration, dispatch, result, bookkeeping).

    .venv/bin/python -m pipeline.bench.driver --shards 4000,40000 --json
"""

from __future__ import annotations

import argparse
import json
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


def bench_dispatch(shards: int, workers: int = 2) -> dict[str, Any]:
    import ray

    from pipeline.run.scheduler import AttemptRegistry, schedule

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    try:
        actor_cls = ray.remote(_InstantWorker).options(num_cpus=1)
        registry = ray.remote(AttemptRegistry).options(num_cpus=0).remote()
        tasks = [ShardTask(i, i // 4, f"class{i // 4}", 0, PER_SHARD, i) for i in range(shards)]
        with tempfile.TemporaryDirectory() as tmp:
            layout, _ = build(Path(tmp) / "corpus", shards, complete_fraction=0.0)
            index = IndexWriter(layout)
            start = time.perf_counter()
            outcome = schedule(ray, actor_cls.remote, workers, tasks, registry=registry,
                               on_done=lambda t, st: index.mark_complete(t.shard_id, st))
            index.flush()
            seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    assert not outcome.failed
    return {"shards": shards, "workers": workers, "dispatch_ms": 1000 * seconds / shards}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.driver", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="4000,40000", help="comma list of planned shard counts")
    parser.add_argument("--dispatch", type=int, default=0, help="also time the scheduler on this many shards")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    results = []
    for n in (int(x) for x in args.shards.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_driver(Path(tmp) / "corpus", n)
        results.append(r)
        print(f"{n} shards: driver {r['per_shard_ms']:.3f} ms/shard (old refresh {r['old_refresh_per_shard_ms']:.1f} "
              f"ms/shard), status {r['status_s']:.2f} s, resume scan {r['resume_scan_s']:.2f} s")
    dispatch = bench_dispatch(args.dispatch) if args.dispatch else None
    if dispatch:
        print(f"scheduler: {dispatch['dispatch_ms']:.2f} ms per shard over {dispatch['shards']} instant shards")
    if args.json:
        emit_json({"results": results, "dispatch": dispatch})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
