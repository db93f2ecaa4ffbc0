"""Corpus I/O benchmark: writer seconds per image, and load_corpus vs a plain tarfile+PIL loop.

``python -m pipeline.bench.loader [--sizes 32,224] [--images N] [--json]`` prints one JSON line last.
Images are uniform noise (PNG's worst case) and noise blurred with sigma 2 (closer to TV-regularised
inversion output); real corpora fall in between.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.console import emit_json
from pipeline.corpus.index import ShardTask, refresh_index, write_manifest
from pipeline.corpus.layout import CorpusLayout, as_layout, sample_key
from pipeline.corpus.loader import corpus_shards, load_corpus
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
    tasks = [ShardTask(s, s % num_classes, f"class{s % num_classes}", 0, per, s) for s in range(shards)]
    write_manifest(layout, spec={"name": "bench"}, spec_hash="bench", package_version="bench", tasks=tasks)
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
    """Images/s of ``load_corpus`` (one process, no workers) vs the plain loop, interleaved, best of ``repeats``.

    Reports wall-clock and process-CPU-time rates; on a shared machine the CPU-time ratio is the steadier one.
    """
    torch.set_num_threads(1)
    layout = as_layout(root)
    names, n = corpus_shards(layout)
    runs = {"load_corpus": lambda: sum(1 for _ in load_corpus(layout)), "plain": lambda: _plain_loop(layout, names)}
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
        "plain_images_per_s": n / wall["plain"],
        "ratio": wall["plain"] / wall["load_corpus"],
        "load_corpus_images_per_cpu_s": n / cpu["load_corpus"],
        "plain_images_per_cpu_s": n / cpu["plain"],
        "cpu_ratio": cpu["plain"] / cpu["load_corpus"],
    }


def run(sizes: list[int], images: int, repeats: int = 3, contents: tuple[str, ...] = ("noise", "smooth")) -> dict:
    """Writer and loader figures for each image size and image content."""
    results: dict[str, Any] = {}
    for size in sizes:
        for content in contents:
            with tempfile.TemporaryDirectory(prefix="smi-corpus-bench-") as tmp:
                writer = bench_writer(Path(tmp) / "corpus", images=images, size=size, content=content)
                loader = bench_loader(Path(tmp) / "corpus", repeats=repeats)
            results[f"{size}-{content}"] = {"writer": writer, "loader": loader}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.loader", description=__doc__)
    parser.add_argument("--sizes", default="32,224", help="comma list of image sizes")
    parser.add_argument("--images", type=int, default=512, help="images per size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contents", default="noise,smooth", help="comma list of noise, smooth")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    contents = tuple(c.strip() for c in args.contents.split(","))
    if not set(contents) <= {"noise", "smooth"}:
        parser.error("--contents takes noise and/or smooth")
    results = run([int(s) for s in args.sizes.split(",")], args.images, args.repeats, contents)
    for name, r in results.items():
        w, lo = r["writer"], r["loader"]
        print(
            f"{name}: writer {w['seconds_per_image'] * 1e3:.2f} ms/image "
            f"(encode {w['encode_seconds_per_image'] * 1e3:.2f}, tar {w['tar_seconds_per_image'] * 1e3:.2f}, "
            f"parquet {w['parquet_seconds_per_image'] * 1e3:.2f}), {w['tar_bytes_per_image'] / 1024:.1f} KiB/image; "
            f"loader {lo['load_corpus_images_per_s']:.0f} img/s vs plain {lo['plain_images_per_s']:.0f} img/s "
            f"(ratio {lo['ratio']:.3f}, CPU-time ratio {lo['cpu_ratio']:.3f})"
        )
    if args.json:
        emit_json({"png_compress_level": PNG_COMPRESS_LEVEL, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
