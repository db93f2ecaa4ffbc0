"""Reading a corpus back: a webdataset pipeline for training and a plain record iterator for tools.

The training pipeline is webdataset's stage model (``DataPipeline``) over the corpus's storage seam::

    shard list (seeded shuffle, same on every rank)  or  wds.ResampledShards (with replacement)
      -> wds.split_by_node -> wds.split_by_worker
      -> several shards open at once, raw samples interleaved (tar_io reads what storage opens)
      -> wds.shuffle over RAW samples (encoded bytes, ~20x smaller than decoded tensors)
      -> wds.map(decode) -> an epoch cut so every rank and worker yields the same count

A corpus is made of class shards (one class each), so mixing is done before decoding: each worker
reads ``open_shards`` shards at once, picking the next sample from a shard with probability
proportional to what it has left (so they run out together), and a shuffle buffer of raw samples
mixes further. The corpus may be a folder or any fsspec URL the storage seam takes (``s3://``,
``hf://datasets/...``); each DataLoader worker opens its own storage client. Only complete shards
(stats present) of the manifest are read. Nothing is unpickled:
images via Pillow, labels from ASCII, soft labels via ``numpy.lib.format.read_array(allow_pickle=False)``.
A corpus may be someone else's: each shard is read within :class:`~pipeline.corpus.tar_io.ReadLimits`
(its recorded size), images within Pillow's decompression-bomb limit, and a member that cannot be
decoded is a ``CorpusError`` naming the shard and the member.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
from pipeline.corpus.storage import CorpusStorage, storage_for
from pipeline.corpus.tar_io import ReadLimits, iter_tar_records, read_tar
from pipeline.errors import CorpusError

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 1000  # raw samples (~0.1 KiB-150 KiB each); used when shuffle_shards is on
DEFAULT_OPEN_SHARDS = 8  # shards each worker reads at once when shuffle_shards is on


@dataclass(frozen=True)
class ShardRef:
    """A complete shard: its tar name (relative to the corpus root), sample count and class (a class shard)."""

    name: str
    samples: int
    label: int | None = None
    tar_bytes: int | None = None  # the size its stats record: the cap of what is read from it


class _ToTensors:
    """Raw webdataset sample -> (image CHW float in [0,1], label[, soft_label, kept_mask])."""

    def __init__(self, soft_labels: bool, kept_mask: bool) -> None:
        self.soft_labels, self.kept_mask = soft_labels, kept_mask

    def __call__(self, sample: dict[str, Any]) -> tuple:
        with _decoding(str(sample.get("__url__")), str(sample.get("__key__"))):
            pixels = decode_image(sample[image_member(sample)])
            image = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format)
            image.div_(255.0)
            label = int(sample["cls"])
            if not (self.soft_labels or self.kept_mask):
                return image, label
            soft = torch.from_numpy(decode_soft_label(sample[SOFT_LABEL_MEMBER]))
            mask = torch.from_numpy(kept_mask_from_meta(json.loads(sample["json"])))
        return image, label, soft, mask


def _check_count(shard: str, count: int, recorded: int) -> None:
    """A shard that ends before its recorded sample count (a tar cut at a member boundary reads as a
    shorter, valid tar) or holds more is a ``CorpusError``."""
    if recorded and count != recorded:
        raise CorpusError(f"{shard}: holds {count} samples, its stats say {recorded} (truncated or altered)")


@contextlib.contextmanager
def _decoding(shard: str, key: str) -> Iterator[None]:
    """Any failure to decode a sample's members -> a one-line ``CorpusError`` naming shard and sample."""
    try:
        yield
    except CorpusError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow, numpy and json fail in many types on hostile bytes
        why = " ".join(str(exc).split())[:300]
        raise CorpusError(f"{shard}: sample {key[:100]!r}: cannot decode its members ({type(exc).__name__}: {why})") \
            from None


# ---------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class _Slot:
    """Where this iterator runs: its index among the ``count`` (rank, worker) readers, and the epoch."""

    index: int
    count: int
    rank: int
    worker: int
    epoch: int


def _slot(epoch: int, split_by_node: bool, split_by_worker: bool) -> _Slot:
    """This process/worker's reader slot, numbered the way split_by_node then split_by_worker deal shards."""
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    rank, world = (rank, world) if split_by_node else (0, 1)
    worker, workers = (worker, workers) if split_by_worker else (0, 1)
    return _Slot(rank + world * worker, world * workers, rank, worker, epoch)


class _ShardCycle(wds.PipelineStage):
    """``{"name", "url", "samples", "cycle"}`` per shard: the shard list, shuffled by (seed, epoch, cycle) when
    ``shuffle``, identical on every rank and worker; ``cycles=None`` repeats it without end (each pass
    reshuffled) so readers that run out of shards keep going until the epoch cut."""

    def __init__(self, storage: CorpusStorage, shards: list[ShardRef], shuffle: bool, seed: int) -> None:
        self.storage, self.shards, self.shuffle, self.seed = storage, list(shards), shuffle, seed
        self.epoch, self.cycles = 0, 1

    def order(self, epoch: int, cycle: int) -> list[ShardRef]:
        shards = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}:{cycle}").shuffle(shards)
        return shards

    def run(self) -> Iterator[dict[str, Any]]:
        for cycle in itertools.count() if self.cycles is None else range(self.cycles):
            for ref in self.order(self.epoch, cycle):
                yield {"name": ref.name, "url": self.storage.url(ref.name), "samples": ref.samples, "cycle": cycle,
                       "tar_bytes": ref.tar_bytes}


class _Resampled(wds.PipelineStage):
    """webdataset's ``ResampledShards`` (shards drawn with replacement, seeded by rank, worker, epoch and
    seed) with the corpus's shard names and counts attached."""

    def __init__(self, storage: CorpusStorage, shards: list[ShardRef], seed: int) -> None:
        self.storage, self.counts, self.seed, self.epoch = storage, {r.name: r.samples for r in shards}, seed, 0
        self.sizes = {r.name: r.tar_bytes for r in shards}
        self.source = wds.ResampledShards([r.name for r in shards], seed=seed, deterministic=True)

    def run(self) -> Iterator[dict[str, Any]]:
        self.source.epoch = self.epoch - 1  # ResampledShards counts up before drawing
        for item in self.source:
            name = item["url"]
            yield {"name": name, "url": self.storage.url(name), "samples": self.counts[name], "cycle": 0,
                   "tar_bytes": self.sizes[name]}


def _all_nodes(src: Iterable[Any], group: Any = None) -> Iterator[Any]:
    """Node splitter that gives every node every shard."""
    yield from src


class _InterleavedShards(wds.PipelineStage):
    """Shard dicts -> raw webdataset samples ``{"__key__", "__url__", ext: bytes}`` read through the corpus's
    storage with the project's tar reader, ``open_shards`` shards at a time.

    The next sample comes from an open shard chosen with probability proportional to its samples left,
    so the open shards run out together. A shard of a later cycle (see :class:`_ShardCycle`) is opened
    only once the current cycle's shards are done, so an epoch cut never drops a first-pass sample.
    """

    def __init__(
        self, storage: CorpusStorage, num_shards: int, open_shards: int, seed: int, handler: Callable[[Exception], bool]
    ) -> None:
        self.storage, self.open_shards, self.seed, self.handler = storage, max(1, open_shards), seed, handler
        self.num_shards = num_shards
        self.slot = _Slot(0, 1, 0, 0, 0)
        self.limit: int | None = None  # the epoch cut: raw samples this reader yields (None: until the shards end)
        self._pid = os.getpid()

    def _storage(self) -> CorpusStorage:
        """The storage, opened afresh in a forked DataLoader worker (object-storage clients such as s3fs
        refuse to be used across a fork)."""
        if self._pid != os.getpid():
            self.storage, self._pid = storage_for(str(self.storage.root)), os.getpid()
        return self.storage

    def _records(self, shard: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url, count = shard["url"], 0
        with self._storage().open(shard["name"]) as f:
            for key, members in iter_tar_records(f, limits=ReadLimits.for_shard(shard.get("tar_bytes")), name=url):
                count += 1
                yield {"__key__": key, "__url__": url, **members}
        _check_count(url, count, shard["samples"])

    def run(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        samples = self._interleave(src)
        return samples if self.limit is None else itertools.islice(samples, self.limit)

    def _interleave(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        s = self.slot
        rng = random.Random(f"{self.seed}:{s.epoch}:{s.rank}:{s.worker}:interleave")
        shards = iter(src)
        waiting: dict[str, Any] | None = None
        open_: list[list[Any]] = []  # [records iterator, samples left, shard dict]
        cycle: int | None = None
        barren = 0  # shards opened since the last sample: an endless source of empty/unreadable shards stops
        try:
            while True:
                while len(open_) < self.open_shards:
                    shard = waiting if waiting is not None else next(shards, None)
                    waiting = None
                    if shard is None:
                        break
                    if open_ and shard["cycle"] != cycle:
                        waiting = shard  # the current cycle first
                        break
                    cycle = shard["cycle"]
                    open_.append([self._records(shard), int(shard["samples"]), shard])
                    barren += 1
                if not open_:
                    return
                if barren > 2 * self.num_shards + self.open_shards:
                    log.warning("no sample in %d shards in a row; stopping this reader", barren)
                    return
                i = rng.choices(range(len(open_)), weights=[max(1, o[1]) for o in open_])[0] if len(open_) > 1 else 0
                entry = open_[i]
                try:
                    sample = next(entry[0])
                except StopIteration:
                    open_.pop(i)
                    continue
                except Exception as exn:  # noqa: BLE001 - webdataset handler protocol
                    entry[0].close()
                    open_.pop(i)
                    if not isinstance(exn, CorpusError):  # a CorpusError names its shard already
                        exn.args = exn.args + (entry[2]["url"],)
                    if self.handler(exn):
                        continue
                    raise
                entry[1] -= 1
                barren = 0
                yield sample
        finally:
            for entry in open_:
                entry[0].close()


class _RawShuffle(wds.PipelineStage):
    """webdataset's ``shuffle`` over raw samples, with a generator seeded by (seed, epoch, rank, worker);
    the buffer fills completely before the first sample leaves."""

    def __init__(self, bufsize: int, seed: int) -> None:
        self.bufsize, self.seed = bufsize, seed
        self.slot = _Slot(0, 1, 0, 0, 0)

    def run(self, src: Iterable[Any]) -> Iterator[Any]:
        s = self.slot
        rng = random.Random(f"{self.seed}:{s.epoch}:{s.rank}:{s.worker}:shuffle")
        return wds.shuffle(self.bufsize, self.bufsize, rng=rng)(iter(src))


# ---------------------------------------------------------------------------------------------- pipeline


class CorpusDataset(wds.DataPipeline, wds.FluidInterface):
    """The webdataset pipeline returned by :func:`load_corpus` (an IterableDataset with ``.batched`` etc.).

    ``num_samples`` is the corpus's sample count; :meth:`epoch_samples` what one reader yields per epoch.
    """

    def __init__(
        self,
        stages: list[Any],
        shards: list[ShardRef],
        urls: list[str],
        *,
        equal_epochs: bool,
        resample: bool,
        epoch_length: int | None,
        split_by_node: bool,
        split_by_worker: bool,
    ) -> None:
        super().__init__(stages)
        self.shards, self.urls = shards, urls
        self.num_samples = sum(r.samples for r in shards)
        self.equal_epochs, self.resample, self.epoch_length = equal_epochs, resample, epoch_length
        self.split_by_node, self.split_by_worker = split_by_node, split_by_worker
        self.epoch, self._runs = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Base epoch for shard/sample shuffling (call before each epoch, like DistributedSampler)."""
        self.epoch, self._runs = int(epoch), 0

    def epoch_samples(self, readers: int = 1, epoch: int | None = None) -> int | None:
        """Samples each of ``readers`` (ranks x DataLoader workers) yields in ``epoch`` (default: the one
        set); ``None`` when readers differ (``equal_epochs=False``). With equal epochs the count depends
        on the epoch's shard order only when shards differ in size."""
        if self.resample:
            return self.epoch_length or math.ceil(self.num_samples / readers)
        if readers == 1:
            return self.num_samples
        if not self.equal_epochs:
            return None
        return self._first_pass_max(readers, self.epoch if epoch is None else epoch)

    def _first_pass_max(self, readers: int, epoch: int) -> int:
        source = self.pipeline[0]
        order = source.order(epoch, 0)
        per = [0] * readers
        for i, ref in enumerate(order):
            per[i % readers] += ref.samples
        return max(per)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch + self._runs
        self._runs += 1
        slot = _slot(epoch, self.split_by_node, self.split_by_worker)
        source = self.pipeline[0]
        source.epoch = epoch
        limit: int | None = None
        if self.resample:
            limit = self.epoch_samples(slot.count)
        elif slot.count == 1 or not self.equal_epochs:
            source.cycles = 1
        else:  # endless, cut at the largest first-pass share: every sample at least once
            source.cycles = None
            limit = self._first_pass_max(slot.count, epoch)
        for stage in self.pipeline:
            if isinstance(stage, (_InterleavedShards, _RawShuffle)):
                stage.slot = slot
            if isinstance(stage, _InterleavedShards):
                stage.limit = limit  # cut raw samples, before the shuffle buffer, so no first-pass sample is lost
        return self.iterator1()


def corpus_shard_refs(root: CorpusLayout | str | Path) -> list[ShardRef]:
    """The complete shards in manifest order, with their sample counts."""
    layout = as_layout(root)
    manifest = read_manifest(layout)
    done = set(complete_shard_ids(layout, manifest))
    entries = [e for e in manifest["shards"] if int(e["shard_id"]) in done]
    if not entries:
        raise CorpusError(f"{layout.root} has no complete shard yet ({len(manifest['shards'])} planned)")
    return [
        ShardRef(layout.tar(int(e["shard_id"])), int(e.get("samples", e.get("count", 0))),
                 int(e["label"]) if e.get("label") is not None else None,
                 e["tar_bytes"] if isinstance(e.get("tar_bytes"), int) else None)
        for e in entries
    ]


def corpus_shards(root: CorpusLayout | str | Path) -> tuple[list[str], int]:
    """Tar names of the complete shards (manifest order) and their total sample count."""
    refs = corpus_shard_refs(root)
    return [r.name for r in refs], sum(r.samples for r in refs)


def load_corpus(
    root: CorpusLayout | str | Path,
    *,
    soft_labels: bool = False,
    kept_mask: bool = False,
    shuffle_shards: bool = False,
    shuffle_buffer: int | None = None,
    open_shards: int | None = None,
    seed: int = 0,
    handler: Callable[[Exception], bool] = wds.reraise_exception,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    equal_epochs: bool = True,
    resample: bool = False,
    epoch_length: int | None = None,
) -> CorpusDataset:
    """A webdataset pipeline over the complete shards yielding ``(image, label)``.

    ``image`` is a float32 (3, H, W) tensor in [0, 1], ``label`` an int. With ``soft_labels`` or
    ``kept_mask`` samples are ``(image, label, soft_label (num_classes,) float32, kept_mask (Gh, Gw) bool)``.

    ``shuffle_shards`` shuffles the shard order (seeded by ``seed`` and the epoch, identical on every rank)
    and mixes classes: each reader keeps ``open_shards`` shards open (default 8) and passes raw samples
    through a shuffle buffer of ``shuffle_buffer`` samples (default 1000; 0 turns it off), so batches mix
    classes even though every shard holds one. Without it the order is the manifest's.

    Shards are dealt to torch.distributed ranks (``split_by_node``) and DataLoader workers
    (``split_by_worker``). With ``equal_epochs`` (default) every rank and worker yields the same number of
    samples per epoch, as DDP needs: readers whose shards run out continue into the next (reshuffled)
    pass of the shard list until they reach the largest reader's count, so every sample is seen at least
    once and at most one shard per reader is repeated. ``resample`` instead draws shards with replacement
    (webdataset's ``ResampledShards``) for ``epoch_length`` samples per reader (default: the corpus size
    divided among the readers). ``handler`` is a webdataset error handler (reraise by default). With
    non-persistent DataLoader workers call ``ds.set_epoch(epoch)`` each epoch to vary the order.
    """
    layout = as_layout(root)
    refs = corpus_shard_refs(layout)
    if shuffle_buffer is None:
        shuffle_buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_shards or resample else 0
    if open_shards is None:
        open_shards = DEFAULT_OPEN_SHARDS if shuffle_shards or resample else 1
    if shuffle_buffer < 0 or open_shards < 1:
        raise ValueError(f"shuffle_buffer must be >= 0 and open_shards >= 1, got {shuffle_buffer}, {open_shards}")
    if epoch_length is not None and epoch_length < 1:
        raise ValueError(f"epoch_length must be >= 1, got {epoch_length}")
    storage = layout.storage
    if resample:
        stages: list[Any] = [_Resampled(storage, refs, seed)]
    else:
        stages = [
            _ShardCycle(storage, refs, shuffle_shards, seed),
            wds.split_by_node if split_by_node else _all_nodes,
            wds.split_by_worker if split_by_worker else None,
        ]
    stages += [
        _InterleavedShards(storage, len(refs), open_shards, seed, handler),
        _RawShuffle(shuffle_buffer, seed) if shuffle_buffer > 0 else None,
        wds.map(_ToTensors(soft_labels, kept_mask), handler=handler),
    ]
    return CorpusDataset(
        [s for s in stages if s is not None], refs, [storage.url(r.name) for r in refs],
        equal_epochs=equal_epochs, resample=resample, epoch_length=epoch_length,
        split_by_node=split_by_node, split_by_worker=split_by_worker,
    )


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
    wanted = None if shard_ids is None else {int(s) for s in shard_ids}
    for ref in corpus_shard_refs(layout):
        shard = int(ref.name.rpartition("-")[2].partition(".")[0])
        if wanted is not None and shard not in wanted:
            continue
        count = 0
        for key, members in read_tar(layout.storage, ref.name, limits=ReadLimits.for_shard(ref.tar_bytes)):
            count += 1
            with _decoding(ref.name, key):
                ext = image_member(members)
                meta = json.loads(members["json"])
                record = {
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
            yield record
        _check_count(ref.name, count, ref.samples)
