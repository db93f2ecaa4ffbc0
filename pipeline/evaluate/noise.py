"""A Gaussian-noise corpus shaped like another: the baseline that says what a corpus teaches beyond noise.

Same classes, shard table and image size as the source corpus; every image is ``0.5 + 0.25 N(0, 1)``
per pixel (clipped to [0, 1]) and carries the teacher's logits as its soft label. Written through the
corpus writer, so it loads (and distils) like any corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.corpus.index import (
    ShardTask,
    read_manifest,
    refresh_index,
    write_manifest,
)
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.sample import ShardSample
from pipeline.corpus.writer import write_shard
from pipeline.errors import CorpusError
from pipeline.evaluate.common import CorpusInfo, corpus_info
from pipeline.teachers.classify import normalize

NOISE_MEAN, NOISE_STD = 0.5, 0.25


def noise_images(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` noise images ``0.5 + 0.25 N(0, 1)`` per pixel, clipped to [0, 1]: ``(count, 3, H, W)``."""
    return (NOISE_MEAN + NOISE_STD * torch.randn(count, 3, height, width, generator=generator)).clamp(0, 1)


@torch.no_grad()
def labelled_samples(task: ShardTask, images: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor],
                     grid: tuple[int, int], *, teacher_name: str, method: str) -> list[ShardSample]:
    """Shard samples of ``images`` in [0, 1] (stored as 8-bit PNG pixels), each labelled with the teacher's
    logits on its stored pixels (``logits_of`` takes images in [0, 1]); every patch counts as kept."""
    pixels = (images * 255).round().to(torch.uint8)
    logits = logits_of(pixels.float() / 255).float()
    probs = logits.softmax(-1)
    hwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    return [
        ShardSample(key=sample_key(task.label, task.first_index + i), image=hwc[i], label=task.label,
                    class_name=task.class_name, seed=task.seed, shard_id=task.shard_id, teacher=teacher_name,
                    method=method, kept_patches=list(range(grid[0] * grid[1])), patch_grid=grid,
                    final_loss=0.0, confidence=float(probs[i, task.label]),
                    soft_label=logits[i].numpy().astype("float32"), generation_seconds=0.0)
        for i in range(len(images))
    ]


@torch.no_grad()
def write_noise_corpus(like: CorpusInfo, out: str | Path, teacher: torch.nn.Module, *,
                       mean: tuple[float, ...], std: tuple[float, ...], seed: int = 0) -> CorpusInfo:
    """Write a noise corpus with ``like``'s shard table into the empty (or new) folder ``out``.

    ``teacher`` labels each image (its logits, with the images normalised by ``mean``/``std``). The images
    of a shard depend only on ``seed`` and the shard id.
    """
    source = read_manifest(like.root)
    spec = dict(source.get("spec") or {})
    rows = source.get("shards") or []
    if not rows:
        raise CorpusError(f"{like.root}: the corpus has no shard table to copy")
    layout = CorpusLayout(out)
    if not layout.storage.is_empty():
        raise CorpusError(f"{layout.root}: not empty; a noise corpus is written into an empty folder")
    tasks = [ShardTask(int(r["shard_id"]), int(r["label"]), str(r["class_name"]), int(r["first_index"]),
                       int(r["count"]), seed * 1_000_003 + int(r["shard_id"])) for r in rows]
    shape = {k: spec[k] for k in ("teacher", "classes", "class_names", "num_classes", "image_size", "img_size")
             if k in spec}  # what corpus_info reads: the teacher, its classes and image size
    noise_spec = {**shape, "name": f"noise-like-{spec.get('name', 'corpus')}", "method": "noise", "seed": seed,
                  "noise": {"mean": NOISE_MEAN, "std": NOISE_STD}}
    write_manifest(layout, spec=noise_spec, spec_hash=f"noise-{seed}", package_version="noise", tasks=tasks)
    size, patch = like.img_size, like.patch_size or like.img_size
    grid = (size // patch, size // patch)
    for task in tasks:
        images = noise_images(task.count, size, size, torch.Generator().manual_seed(task.seed))
        samples = labelled_samples(task, images, lambda x: teacher(normalize(x, mean, std)), grid,
                                   teacher_name="noise", method="noise")
        write_shard(layout, task.shard_id, samples, num_classes=like.num_classes)
    refresh_index(layout)
    return corpus_info(layout.root)
