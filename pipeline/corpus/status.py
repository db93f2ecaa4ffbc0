"""``smi-synth status``: complete and pending shards of a corpus, images, and throughput so far."""

from __future__ import annotations

import argparse
import sys

from pipeline.console import emit_json
from pipeline.corpus.index import read_manifest, read_stats
from pipeline.corpus.layout import as_layout


def corpus_status(root) -> dict:
    """Counts from manifest.json and the stats files (the completion markers).

    One listing of stats/ decides completion; sample counts and inversion time come from the
    manifest's mirror of each complete shard's stats, and only stats the mirror lacks are read.
    """
    layout = as_layout(root)
    manifest = read_manifest(layout)
    finished_at = layout.storage.listdir_mtimes(layout.stats_dir)
    entries = manifest["shards"]
    images, generation, finished, pending = 0, 0.0, [], []
    for entry in entries:
        shard_id = int(entry["shard_id"])
        stamp = finished_at.get(layout.stats(shard_id).rpartition("/")[2])
        if stamp is None:
            pending.append(shard_id)
            continue
        mirrored = entry.get("complete") and "samples" in entry and "inversion_seconds" in entry
        stats = entry if mirrored else read_stats(layout, shard_id)
        images += int(stats["samples"])
        generation += float(stats.get("inversion_seconds", stats.get("generation_seconds", 0.0)))
        finished.append(stamp)
    span = max(finished) - min(finished) if len(finished) > 1 else 0.0
    return {
        "out": str(layout.root),
        "spec_hash": manifest.get("spec_hash"),
        "total_shards": len(entries),
        "complete_shards": len(finished),
        "pending_shards": len(pending),
        "pending_shard_ids": pending,
        "images": images,
        "total_images": sum(int(e["count"]) for e in entries),
        "inversion_seconds": generation,
        "images_per_worker_second": images / generation if generation else 0.0,
        "images_per_second_wall": (images - images / max(len(finished), 1)) / span if span else None,
    }


def cmd_status(args: argparse.Namespace) -> int:
    s = corpus_status(args.out)
    done = 100 * s["complete_shards"] / s["total_shards"] if s["total_shards"] else 100.0
    lines = [
        f"{s['out']}: {s['complete_shards']}/{s['total_shards']} shards complete ({done:.0f}%), "
        f"{s['pending_shards']} pending; {s['images']}/{s['total_images']} images",
    ]
    if s["images"]:
        lines.append(f"throughput: {s['images_per_worker_second']:.2f} img/s per worker"
                     + (f", {s['images_per_second_wall']:.2f} img/s overall" if s["images_per_second_wall"] else ""))
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(s)
    return 0
