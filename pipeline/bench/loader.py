"""Corpus I/O benchmark: writer seconds per image, ``load_corpus`` against a plain decode loop of the
same bytes, the shuffle buffer's memory, and distillation images/s with and without DataLoader workers.

``python -m pipeline.bench.loader [--sizes 32,224] [--images N] [--memory] [--distill-workers 0,4] [--json]``
prints one JSON line last. Images are uniform noise (PNG's worst case) and noise blurred with sigma 2
(closer to TV-regularised inversion output); real corpora fall in between.

- loader: ``load_corpus`` plain (manifest order, one shard open) and mixing (``shuffle_shards=True``:
  8 shards open, 1,000 raw samples buffered) against the plain tar_io + PIL loop, one process.
- memory (``--memory``): peak RSS of a fresh process iterating the mixing loader, minus the same
  with ``shuffle_buffer=0``, and the raw bytes a full buffer holds (against the decoded float32 tensors
  a buffer of decoded samples would hold).
- distill (``--distill-workers``): one epoch of ``toy-student`` distillation from the stored soft labels,
  images/s, per DataLoader worker count.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.console import emit_json
from pipeline.corpus.index import ShardTask, refresh_index, write_manifest
from pipeline.corpus.layout import CorpusLayout, as_layout, sample_key
from pipeline.corpus.loader import DEFAULT_SHUFFLE_BUFFER, corpus_shards, load_corpus
from pipeline.corpus.sample import PNG_COMPRESS_LEVEL, ShardSample, decode_image
from pipeline.corpus.tar_io import read_tar
from pipeline.corpus.writer import write_shard

log = logging.getLogger(__name__)


def _image(rng: np.random.Generator, size: int, content: str) -> np.ndarray:
    noise = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    if content == "noise":
        return noise
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2)))


def synthetic_samples(
    task: ShardTask, *, size: int, num_classes: int, content: str = "noise", patch: int = 16
) -> list[ShardSample]:
    """``task.count`` images (``noise`` or ``smooth`` = noise blurred with sigma 2) with plausible metadata."""
    rng = np.random.default_rng(task.seed)
    grid = (max(1, size // patch),) * 2
    n = grid[0] * grid[1]
    return [
        ShardSample(
            key=sample_key(task.label, task.first_index + i),
            image=_image(rng, size, content),
            label=task.label, class_name=f"class{task.label}", seed=task.seed, shard_id=task.shard_id,
            teacher="bench", method="smi", kept_patches=sorted(rng.choice(n, n // 2, replace=False).tolist()),
            patch_grid=grid, final_loss=0.5, confidence=0.9,
            soft_label=rng.normal(size=num_classes).astype(np.float32), generation_seconds=1.0,
        )
        for i in range(task.count)
    ]


def bench_writer(
    root: Path, *, images: int, size: int, content: str = "noise", shards: int = 2, num_classes: int = 10
) -> dict[str, Any]:
    """Write ``shards`` shards of ``images // shards`` images; per-image seconds of encode/tar/parquet.

    A one-image warm-up shard (imports, first-call costs) is written elsewhere first and not counted.
    """
    warm = ShardTask(0, 0, "class0", 0, 1, 0)
    write_shard(CorpusLayout(root.with_name(root.name + "-warmup")), 0,
                synthetic_samples(warm, size=size, num_classes=num_classes), num_classes=num_classes)
    layout = CorpusLayout(root)
    per = max(1, images // shards)
    tasks = [ShardTask(s, s % num_classes, f"class{s % num_classes}", (s // num_classes) * per, per, s)
             for s in range(shards)]
    teacher = {"spec": "bench", "num_classes": num_classes, "img_size": size, "patch_size": 16,
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    write_manifest(layout, spec={"name": "bench", "teacher": teacher}, spec_hash="bench", package_version="bench",
                   tasks=tasks)
    totals = {"encode_s": 0.0, "tar_s": 0.0, "parquet_s": 0.0, "total_s": 0.0}
    tar_bytes = 0
    for task in tasks:
        samples = synthetic_samples(task, size=size, num_classes=num_classes, content=content)
        t0 = time.perf_counter()
        stats = write_shard(layout, task.shard_id, samples, num_classes=num_classes)
        wall = time.perf_counter() - t0
        for k in ("encode_s", "tar_s", "parquet_s"):
            totals[k] += stats["timing"][k]
        totals["total_s"] += wall
        tar_bytes += stats["tar_bytes"]
    refresh_index(layout)
    n = per * shards
    return {
        "images": n,
        "size": size,
        "content": content,
        "seconds_per_image": totals["total_s"] / n,
        "encode_seconds_per_image": totals["encode_s"] / n,
        "tar_seconds_per_image": totals["tar_s"] / n,
        "parquet_seconds_per_image": totals["parquet_s"] / n,
        "tar_bytes_per_image": tar_bytes / n,
    }


def _plain_loop(layout: CorpusLayout, names: list[str]) -> int:
    """Read the same tars with the plain tar reader, decode the same PNG bytes into the same tensors."""
    count = 0
    for name in names:
        for _, members in read_tar(layout.storage, name):
            label = int(members["cls"])
            image = torch.from_numpy(decode_image(members["png"])).permute(2, 0, 1)
            image = image.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
            count += label >= 0 and image.numel() > 0
    return count


def bench_loader(root: Path, *, repeats: int = 3) -> dict[str, Any]:
    """Images/s of ``load_corpus`` (one process, no workers; plain and mixing) vs the plain loop, interleaved,
    best of ``repeats``. Reports wall-clock and process-CPU-time rates; on a shared machine the CPU-time
    ratio is the steadier one."""
    torch.set_num_threads(1)
    layout = as_layout(root)
    names, n = corpus_shards(layout)
    runs = {
        "load_corpus": lambda: sum(1 for _ in load_corpus(layout)),
        "mixing": lambda: sum(1 for _ in load_corpus(layout, shuffle_shards=True)),
        "plain": lambda: _plain_loop(layout, names),
    }
    wall = {k: float("inf") for k in runs}
    cpu = {k: float("inf") for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            got = fn()
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
            if got != n:
                raise RuntimeError(f"expected {n} images, {name} gave {got}")
    return {
        "images": n,
        "load_corpus_images_per_s": n / wall["load_corpus"],
        "mixing_images_per_s": n / wall["mixing"],
        "plain_images_per_s": n / wall["plain"],
        "ratio": wall["plain"] / wall["load_corpus"],
        "mixing_ratio": wall["plain"] / wall["mixing"],
        "load_corpus_images_per_cpu_s": n / cpu["load_corpus"],
        "mixing_images_per_cpu_s": n / cpu["mixing"],
        "plain_images_per_cpu_s": n / cpu["plain"],
        "cpu_ratio": cpu["plain"] / cpu["load_corpus"],
        "mixing_cpu_ratio": cpu["plain"] / cpu["mixing"],
    }


def _peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM (Linux; ru_maxrss would carry the parent's peak over exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss_child(root: str, shuffle_buffer: int, queue: Any) -> None:
    """In a fresh process: iterate the mixing loader once; report peak RSS (bytes) and the largest raw
    bytes the shuffle buffer held."""
    torch.set_num_threads(1)
    ds = load_corpus(root, shuffle_shards=True, shuffle_buffer=shuffle_buffer)
    sizes: list[int] = []
    if shuffle_buffer > 0:  # measure what enters the buffer: a raw sample's bytes
        inner = next(stage for stage in ds.pipeline if hasattr(stage, "_interleave"))
        original = inner._interleave

        def counting(src: Any) -> Any:
            for sample in original(src):
                sizes.append(sum(len(v) for v in sample.values() if isinstance(v, bytes)))
                yield sample

        inner._interleave = counting
    count = sum(1 for _ in ds)
    peak = _peak_rss_bytes()
    held = 0
    if sizes:  # the buffer holds shuffle_buffer samples at its fullest; the largest such window
        window = sum(sizes[:shuffle_buffer])
        held = window
        for i in range(shuffle_buffer, len(sizes)):
            window += sizes[i] - sizes[i - shuffle_buffer]
            held = max(held, window)
    queue.put({"images": count, "peak_rss_bytes": peak, "raw_bytes_held_max": held})


def bench_memory(root: Path, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> dict[str, Any]:
    """Peak RSS of a fresh process iterating the mixing loader, with the buffer and without (``spawn``)."""
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for buf in (0, shuffle_buffer):
        queue = ctx.Queue()
        proc = ctx.Process(target=_peak_rss_child, args=(str(root), buf, queue))
        proc.start()
        out[buf] = queue.get(timeout=600)
        proc.join()
    first = next(iter_first_image(root))
    decoded = 4 * first.numel() * shuffle_buffer
    return {
        "shuffle_buffer": shuffle_buffer,
        "images": out[shuffle_buffer]["images"],
        "peak_rss_no_buffer_mib": out[0]["peak_rss_bytes"] / 2**20,
        "peak_rss_buffer_mib": out[shuffle_buffer]["peak_rss_bytes"] / 2**20,
        "buffer_rss_mib": (out[shuffle_buffer]["peak_rss_bytes"] - out[0]["peak_rss_bytes"]) / 2**20,
        "raw_bytes_held_max_mib": out[shuffle_buffer]["raw_bytes_held_max"] / 2**20,
        "decoded_float32_buffer_mib": decoded / 2**20,
    }


def iter_first_image(root: Path) -> Any:
    for image, _ in load_corpus(root):
        yield image
        return


def bench_distill(root: Path, workers: list[int], *, epochs: int = 1, batch_size: int = 64) -> dict[str, Any]:
    """Images/s of ``epochs`` of toy-student distillation (stored soft labels, CPU) per DataLoader worker count,
    after a one-batch warm-up each."""
    from pipeline.evaluate.common import corpus_info
    from pipeline.evaluate.distill import DistillConfig, build_student, distill

    torch.set_num_threads(1)
    info = corpus_info(root)
    out: dict[str, Any] = {}
    for w in workers:
        torch.manual_seed(0)
        student = build_student("toy-student", num_classes=info.num_classes, img_size=info.img_size, patch_size=16)
        cfg = DistillConfig(epochs=epochs, batch_size=batch_size, workers=w, show_progress=False)
        result = distill(student, info, cfg, mean=info.mean or (0.5,) * 3, std=info.std or (0.25,) * 3)
        out[str(w)] = {"images": result.images_seen, "seconds": result.seconds,
                       "images_per_s": result.images_seen / result.seconds}
    return out


def run(
    sizes: list[int],
    images: int,
    repeats: int = 3,
    contents: tuple[str, ...] = ("noise", "smooth"),
    *,
    shards: int = 20,
    memory: bool = False,
    distill_workers: list[int] | None = None,
) -> dict:
    """Writer and loader figures (and optionally memory and distillation) for each image size and content."""
    results: dict[str, Any] = {}
    for size in sizes:
        for content in contents:
            with tempfile.TemporaryDirectory(prefix="smi-corpus-bench-") as tmp:
                root = Path(tmp) / "corpus"
                r: dict[str, Any] = {"writer": bench_writer(root, images=images, size=size, content=content,
                                                             shards=shards)}
                r["loader"] = bench_loader(root, repeats=repeats)
                if memory:
                    r["memory"] = bench_memory(root)
                if distill_workers:
                    r["distill"] = bench_distill(root, distill_workers)
            results[f"{size}-{content}"] = r
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.loader", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", default="32,224", help="comma list of image sizes")
    parser.add_argument("--images", type=int, default=512, help="images per size")
    parser.add_argument("--shards", type=int, default=20, help="one-class shards the images are split into")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per loader; the best counts")
    parser.add_argument("--contents", default="noise,smooth", help="comma list of noise, smooth")
    parser.add_argument("--memory", action="store_true", help="measure the shuffle buffer's peak memory")
    parser.add_argument("--distill-workers", default="", help="comma list of DataLoader worker counts to time "
                        "one epoch of toy-student distillation with (empty: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    contents = tuple(c.strip() for c in args.contents.split(","))
    if not set(contents) <= {"noise", "smooth"}:
        parser.error("--contents takes noise and/or smooth")
    workers = [int(w) for w in args.distill_workers.split(",") if w.strip()]
    results = run([int(s) for s in args.sizes.split(",")], args.images, args.repeats, contents, shards=args.shards,
                  memory=args.memory, distill_workers=workers)
    for name, r in results.items():
        w, lo = r["writer"], r["loader"]
        print(
            f"{name}: writer {w['seconds_per_image'] * 1e3:.2f} ms/image "
            f"(encode {w['encode_seconds_per_image'] * 1e3:.2f}, tar {w['tar_seconds_per_image'] * 1e3:.2f}, "
            f"parquet {w['parquet_seconds_per_image'] * 1e3:.2f}), {w['tar_bytes_per_image'] / 1024:.1f} KiB/image; "
            f"loader {lo['load_corpus_images_per_s']:.0f} img/s, mixing {lo['mixing_images_per_s']:.0f} img/s "
            f"vs plain {lo['plain_images_per_s']:.0f} img/s (ratio {lo['ratio']:.3f} / {lo['mixing_ratio']:.3f}, "
            f"CPU-time ratio {lo['cpu_ratio']:.3f} / {lo['mixing_cpu_ratio']:.3f})"
        )
        if "memory" in r:
            m = r["memory"]
            print(f"{name}: shuffle buffer of {m['shuffle_buffer']} raw samples: peak RSS +{m['buffer_rss_mib']:.0f} MiB "
                  f"(raw bytes held at most {m['raw_bytes_held_max_mib']:.0f} MiB; decoded float32 would be "
                  f"{m['decoded_float32_buffer_mib']:.0f} MiB)")
        for w, d in r.get("distill", {}).items():
            print(f"{name}: distill toy-student, {w} loader workers: {d['images_per_s']:.1f} img/s")
    if args.json:
        emit_json({"png_compress_level": PNG_COMPRESS_LEVEL, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
