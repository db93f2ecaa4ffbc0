"""Reading a corpus back: a webdataset pipeline for training and a plain record iterator for tools.

Only complete shards (stats present) of the manifest are read. Nothing is unpickled: images via
Pillow, labels from ASCII, soft labels via ``numpy.lib.format.read_array(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import webdataset as wds

from pipeline.corpus.index import complete_shard_ids, read_manifest
from pipeline.corpus.layout import CorpusLayout, as_layout
from pipeline.corpus.sample import (
    SOFT_LABEL_MEMBER,
    decode_image,
    decode_soft_label,
    image_member,
    kept_mask_from_meta,
)
from pipeline.corpus.storage import CorpusStorage
from pipeline.corpus.tar_io import iter_tar_records, read_tar
from pipeline.errors import CorpusError

log = logging.getLogger(__name__)


class _ToTensors:
    """Raw webdataset sample -> (image CHW float in [0,1], label[, soft_label, kept_mask])."""

    def __init__(self, soft_labels: bool, kept_mask: bool) -> None:
        self.soft_labels, self.kept_mask = soft_labels, kept_mask

    def __call__(self, sample: dict[str, Any]) -> tuple:
        pixels = decode_image(sample[image_member(sample)])
        image = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format)
        image.div_(255.0)
        label = int(sample["cls"])
        if not (self.soft_labels or self.kept_mask):
            return image, label
        soft = torch.from_numpy(decode_soft_label(sample[SOFT_LABEL_MEMBER]))
        mask = torch.from_numpy(kept_mask_from_meta(json.loads(sample["json"])))
        return image, label, soft, mask


# ---------------------------------------------------------------------------------------------- pipeline


class _ShardList(wds.PipelineStage):
    """Yields ``{"url": ..., "name": ...}`` per shard; optionally shuffled, in the same order on every node/worker."""

    def __init__(self, storage: CorpusStorage, names: list[str], shuffle: bool, seed: int) -> None:
        self.storage, self.names, self.shuffle, self.seed, self.epoch = storage, list(names), shuffle, seed, 0
        self._runs = 0

    def run(self) -> Iterator[dict[str, str]]:
        names = list(self.names)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch + self._runs}").shuffle(names)
        self._runs += 1
        for name in names:
            yield {"url": self.storage.url(name), "name": name}


class _SampleShuffle(wds.PipelineStage):
    """Buffered sample shuffle seeded by (seed, epoch, rank, worker)."""

    def __init__(self, bufsize: int, seed: int) -> None:
        self.bufsize, self.seed, self.epoch, self._runs = bufsize, seed, 0, 0

    def run(self, src: Iterable[Any]) -> Iterator[Any]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(f"{self.seed}:{self.epoch + self._runs}:{rank}:{worker}")
        self._runs += 1
        buf: list[Any] = []
        for item in src:
            if len(buf) < self.bufsize:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            buf[i], item = item, buf[i]
            yield item
        rng.shuffle(buf)
        yield from buf


class _TarSamples:
    """``{"url", "name"}`` -> webdataset samples ``{"__key__", "__url__", ext: bytes, ...}``, read through the
    corpus's storage with the project's one tar reader; each shard is closed as soon as it is read."""

    def __init__(self, storage: CorpusStorage, handler: Callable[[Exception], bool]) -> None:
        self.storage, self.handler = storage, handler

    def __call__(self, src: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
        for item in src:
            url = item["url"]
            try:
                with self.storage.open(item["name"]) as f:
                    for key, members in iter_tar_records(f):
                        yield {"__key__": key, "__url__": url, **members}
            except Exception as exn:
                exn.args = exn.args + (url,)
                if self.handler(exn):
                    continue
                break


def _all_nodes(src: Iterable[Any], group: Any = None) -> Iterator[Any]:
    """Node splitter that gives every node every shard."""
    yield from src


class CorpusDataset(wds.DataPipeline, wds.FluidInterface):
    """The webdataset pipeline returned by :func:`load_corpus` (an IterableDataset with ``.batched`` etc.)."""

    def __init__(self, stages: list[Any], urls: list[str], num_samples: int) -> None:
        super().__init__(stages)
        self.urls, self.num_samples = urls, num_samples

    def set_epoch(self, epoch: int) -> None:
        """Base epoch for shard/sample shuffling (call before each epoch, like DistributedSampler)."""
        for stage in self.pipeline:
            if isinstance(stage, (_ShardList, _SampleShuffle)):
                stage.epoch, stage._runs = int(epoch), 0


def corpus_shards(root: CorpusLayout | str | Path) -> tuple[list[str], int]:
    """Tar names of the complete shards (manifest order) and their total sample count."""
    layout = as_layout(root)
    manifest = read_manifest(layout)
    done = set(complete_shard_ids(layout, manifest))
    entries = [e for e in manifest["shards"] if int(e["shard_id"]) in done]
    if not entries:
        raise CorpusError(f"{layout.root} has no complete shard yet ({len(manifest['shards'])} planned)")
    names = [layout.tar(int(e["shard_id"])) for e in entries]
    return names, sum(int(e.get("samples", e.get("count", 0))) for e in entries)


def load_corpus(
    root: CorpusLayout | str | Path,
    *,
    soft_labels: bool = False,
    kept_mask: bool = False,
    shuffle_shards: bool = False,
    shuffle_buffer: int = 0,
    seed: int = 0,
    handler: Callable[[Exception], bool] = wds.reraise_exception,
    split_by_node: bool = True,
    split_by_worker: bool = True,
) -> CorpusDataset:
    """A webdataset pipeline over the complete shards yielding ``(image, label)``.

    ``image`` is a float32 (3, H, W) tensor in [0, 1], ``label`` an int. With ``soft_labels`` or
    ``kept_mask`` samples are ``(image, label, soft_label (num_classes,) float32, kept_mask (Gh, Gw) bool)``.
    Shards are split across torch.distributed ranks and DataLoader workers (after an optional shuffle
    that is identical on every rank); ``handler`` is a webdataset error handler (reraise by default).
    With non-persistent DataLoader workers call ``ds.set_epoch(epoch)`` each epoch to vary the order.
    Returns a :class:`CorpusDataset` (webdataset ``DataPipeline`` + ``FluidInterface``: ``.batched`` etc.).
    """
    layout = as_layout(root)
    names, num_samples = corpus_shards(layout)
    stages: list[Any] = [
        _ShardList(layout.storage, names, shuffle_shards, seed),
        wds.split_by_node if split_by_node else _all_nodes,
        wds.split_by_worker if split_by_worker else None,
        _TarSamples(layout.storage, handler),
        wds.map(_ToTensors(soft_labels, kept_mask), handler=handler),
        _SampleShuffle(shuffle_buffer, seed) if shuffle_buffer > 0 else None,
    ]
    urls = [layout.storage.url(n) for n in names]
    return CorpusDataset([s for s in stages if s is not None], urls, num_samples)


# ---------------------------------------------------------------------------------------------- plain


def iter_samples(
    root: CorpusLayout | str | Path, *, shard_ids: Iterable[int] | None = None, decode: bool = True
) -> Iterator[dict[str, Any]]:
    """Plain decoded records of the complete shards, in order (for preview, verify, tests).

    Each record: ``key``, ``shard``, ``label``, ``class_name``, ``image_format``, ``image`` ((H, W, 3)
    uint8, or the encoded bytes when ``decode=False``), ``soft_label`` (float32), ``kept_mask`` ((Gh, Gw)
    bool) and ``meta`` (the ``.json`` member).
    """
    layout = as_layout(root)
    names, _ = corpus_shards(layout)
    wanted = None if shard_ids is None else {int(s) for s in shard_ids}
    for name in names:
        shard = int(name.rpartition("-")[2].partition(".")[0])
        if wanted is not None and shard not in wanted:
            continue
        for key, members in read_tar(layout.storage, name):
            ext = image_member(members)
            meta = json.loads(members["json"])
            yield {
                "key": key,
                "shard": shard,
                "label": int(members["cls"]),
                "class_name": meta.get("class_name"),
                "image_format": ext,
                "image": decode_image(members[ext]) if decode else members[ext],
                "soft_label": decode_soft_label(members[SOFT_LABEL_MEMBER]),
                "kept_mask": kept_mask_from_meta(meta),
                "meta": meta,
            }
