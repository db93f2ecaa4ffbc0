"""Shard writer, cleanup helpers and corpus index."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.corpus import storage
from pipeline.corpus import writer as shard_writer
from pipeline.corpus.index import (
    ShardTask,
    read_manifest,
    refresh_index,
    write_manifest,
)
from pipeline.corpus.layout import CorpusLayout, sample_key
from pipeline.corpus.loader import iter_samples
from pipeline.corpus.writer import (
    WRITE_STEPS,
    ShardSample,
    clean_for_resume,
    member_names,
    remove_shard,
    remove_stray_temporaries,
    write_shard,
)
from pipeline.errors import CorpusError

TASK = ShardTask(shard_id=1, label=2, class_name="class2", first_index=8, count=4, seed=77)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def write_task(make_samples):
    """``write_task(root, **write_shard_kwargs)`` -> (layout, stats, samples) of TASK written under root."""

    def write(root: Path, **kw) -> tuple[CorpusLayout, dict, list[ShardSample]]:
        layout = CorpusLayout(root)
        samples = make_samples(TASK)
        return layout, write_shard(layout, TASK.shard_id, samples, num_classes=3, **kw), samples

    return write


def test_round_trip_and_stats(tmp_path: Path, write_task) -> None:
    layout, stats, samples = write_task(tmp_path / "c")
    write_manifest(layout, spec={}, spec_hash="h", package_version="v", tasks=[TASK])
    assert stats["samples"] == 4 and stats["members"] == member_names("png") == ["cls", "json", "logits.npy", "png"]
    assert stats["tar_sha256"] == sha256((layout.root / layout.tar(1))) and stats["tar_bytes"] == (layout.root / layout.tar(1)).stat().st_size
    assert stats["parquet_sha256"] == sha256((layout.root / layout.parquet(1)))
    assert json.loads((layout.root / layout.stats(1)).read_text()) == stats
    records = list(iter_samples(layout.root))
    assert [r["key"] for r in records] == [sample_key(2, 8 + i) for i in range(4)]
    for rec, s in zip(records, samples):
        np.testing.assert_array_equal(rec["image"], s.image)
        np.testing.assert_allclose(rec["soft_label"], s.soft_label, rtol=1e-3, atol=1e-3)
        assert rec["label"] == 2 and rec["meta"]["seed"] == 77 and rec["meta"]["kept_patches"] == s.kept_patches
        assert rec["kept_mask"].sum() == len(s.kept_patches) and rec["kept_mask"].shape == s.patch_grid
    import pyarrow.parquet as pq

    table = pq.read_table((layout.root / layout.parquet(1))).to_pylist()
    assert [r["key"] for r in table] == stats["keys"]
    with tarfile.open((layout.root / layout.tar(1))) as tar:
        png = tar.extractfile(f"{stats['keys'][0]}.png").read()
    assert table[0]["image_sha256"] == hashlib.sha256(png).hexdigest()
    assert table[0]["width"] == 16 and table[0]["kept_patches"] == len(samples[0].kept_patches)


def test_tar_headers_are_normalised(tmp_path: Path, write_task) -> None:
    layout, stats, _ = write_task(tmp_path / "c")
    with tarfile.open((layout.root / layout.tar(1))) as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert names == sorted(names) and len(names) == 16
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode, i.type) for i in infos} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    }


@pytest.mark.parametrize("image_format", ["png", "webp"])
def test_identical_inputs_identical_bytes(tmp_path: Path, write_task, image_format: str) -> None:
    a, sa, samples = write_task(tmp_path / "a", image_format=image_format)
    b = CorpusLayout(tmp_path / "b")
    sb = write_shard(b, 1, list(reversed(samples)), num_classes=3, image_format=image_format)  # order-independent
    assert sha256((a.root / a.tar(1))) == sha256((b.root / b.tar(1))) == sa["tar_sha256"] == sb["tar_sha256"]
    assert sha256((a.root / a.parquet(1))) == sha256((b.root / b.parquet(1)))
    if image_format == "webp":  # lossless
        rec = next(iter_samples_of(a))
        np.testing.assert_array_equal(rec, samples[0].image)


def iter_samples_of(layout: CorpusLayout):
    write_manifest(layout, spec={}, spec_hash="h", package_version="v", tasks=[TASK])
    return (r["image"] for r in iter_samples(layout.root))


class Boom(RuntimeError):
    pass


def assert_nothing_visible(layout: CorpusLayout) -> None:
    assert not (layout.root / layout.stats(1)).exists()
    assert not (layout.root / layout.data_dir).exists() or list((layout.root / layout.data_dir).iterdir()) == []
    assert [p for p in all_files(layout.root) if ".tmp-" in p] == []
    assert not (layout.root / layout.parquet(1)).exists()


@pytest.mark.parametrize("overwrite", [False, True], ids=["fresh", "overwrite"])
@pytest.mark.parametrize("step", WRITE_STEPS)
def test_failure_at_each_step_leaves_no_complete_or_partial_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_task, make_samples, step: str, overwrite: bool
) -> None:
    layout = CorpusLayout(tmp_path / "c")
    if overwrite:
        layout, before, _ = write_task(layout.root)

    def checkpoint(name: str) -> None:
        if name == step:
            raise Boom(name)

    monkeypatch.setattr(shard_writer, "_checkpoint", checkpoint)
    with pytest.raises(Boom):
        write_shard(layout, 1, make_samples(TASK), num_classes=3)
    if overwrite and step == "encode":  # failed before touching anything: the old shard is intact
        assert json.loads((layout.root / layout.stats(1)).read_text()) == before and sha256((layout.root / layout.tar(1))) == before["tar_sha256"]
    else:
        assert_nothing_visible(layout)


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_failing_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_samples, nth: int) -> None:
    layout = CorpusLayout(tmp_path / "c")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == nth:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_shard(layout, 1, make_samples(TASK), num_classes=3)
    assert_nothing_visible(layout)


# fsyncs in order: tar file, parquet file, data/ (tar rename), metadata/, stats file, stats/ (stats rename)
@pytest.mark.parametrize("nth", range(1, 7))
def test_failing_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_samples, nth: int) -> None:
    layout = CorpusLayout(tmp_path / "c")
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == nth:
            raise OSError(errno.EIO, "io error")
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    with pytest.raises(OSError, match="io error"):
        write_shard(layout, 1, make_samples(TASK), num_classes=3)
    assert_nothing_visible(layout)
    calls.clear()
    nth = 0  # no more failures: a clean write fsyncs exactly the 6 times parametrized above
    write_shard(layout, 1, make_samples(TASK), num_classes=3)
    assert len(calls) == 6 and (layout.root / layout.stats(1)).exists()


def _bad(field: str, value):
    def mutate(samples: list[ShardSample]) -> list[ShardSample]:
        samples[1] = dataclasses.replace(samples[1], **{field: value})
        return samples

    return mutate


INVALID = {
    "shape": (_bad("image", np.zeros((16, 16), np.uint8)), "image shape"),
    "channels": (_bad("image", np.zeros((16, 16, 4), np.uint8)), "image shape"),
    "dtype": (_bad("image", np.zeros((16, 16, 3), np.float32)), "uint8"),
    "nan_soft_label": (_bad("soft_label", np.array([np.nan, 0, 0], np.float32)), "soft_label"),
    "soft_label_length": (_bad("soft_label", np.zeros(4, np.float32)), "soft_label shape"),
    "inf_loss": (_bad("final_loss", float("inf")), "final_loss"),
    "nan_confidence": (_bad("confidence", float("nan")), "confidence"),
    "label_range": (_bad("label", 3), "label"),
    "negative_label": (_bad("label", -1), "label"),
    "key_dots": (_bad("key", "c00002-i0000009.x"), "dots"),
    "key_format": (_bad("key", "sample9"), "does not look like"),
    "key_class": (_bad("key", sample_key(1, 9)), "key names class"),
    "shard_id": (_bad("shard_id", 5), "shard_id"),
    "kept_range": (_bad("kept_patches", [0, 99]), "kept_patches"),
    "duplicate": (lambda s: s + [s[0]], "duplicate key"),
    "empty": (lambda s: [], "no samples"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_inputs_raise_and_write_nothing(tmp_path: Path, make_samples, case: str) -> None:
    mutate, message = INVALID[case]
    layout = CorpusLayout(tmp_path / "c")
    samples = mutate(make_samples(TASK))
    with pytest.raises(ValueError, match=message) as info:
        write_shard(layout, 1, samples, num_classes=3)
    if case not in ("empty",):
        assert "c0000" in str(info.value) or case == "key_format"  # names the sample key
    assert not layout.root.exists() or all_files(layout.root) == []


def test_unsupported_format_and_extra_stats(tmp_path: Path, make_samples) -> None:
    layout = CorpusLayout(tmp_path / "c")
    with pytest.raises(ValueError, match="image_format"):
        write_shard(layout, 1, make_samples(TASK), num_classes=3, image_format="jpeg")
    with pytest.raises(ValueError, match="override"):
        write_shard(layout, 1, make_samples(TASK), num_classes=3, extra_stats={"samples": 1})
    assert not layout.root.exists()
    stats = write_shard(layout, 1, make_samples(TASK), num_classes=3, extra_stats={"worker": "w0"})
    assert stats["worker"] == "w0"


def test_clean_for_resume_keeps_complete_shards_and_removes_what_incomplete_ones_left(tmp_path: Path,
                                                                                       write_task) -> None:
    layout, _, _ = write_task(tmp_path / "c")
    complete = all_files(layout.root)
    assert clean_for_resume(layout, [1]) == [] and all_files(layout.root) == complete  # complete: untouched
    (layout.root / layout.data_dir / ".train-000001.tar.tmp-123-abcd").write_bytes(b"x")
    (layout.root / ".manifest.json.tmp-9").write_bytes(b"{}")
    (layout.root / layout.stats(1)).unlink()
    removed = clean_for_resume(layout, [1])
    assert set(removed) == {layout.tar(1), layout.parquet(1), "data/.train-000001.tar.tmp-123-abcd",
                            ".manifest.json.tmp-9"}
    assert all_files(layout.root) == []


def test_remove_shard_then_stray_temporaries(tmp_path: Path, write_task) -> None:
    layout, _, _ = write_task(tmp_path / "c")
    (layout.root / layout.data_dir / ".train-000001.tar.tmp-123-abcd").write_bytes(b"x")
    (layout.root / ".manifest.json.tmp-9").write_bytes(b"{}")
    removed = remove_shard(layout, 1)
    assert removed[0] == layout.stats(1)  # unmarked first
    assert set(removed) == {layout.stats(1), layout.tar(1), layout.parquet(1), "data/.train-000001.tar.tmp-123-abcd"}
    assert remove_stray_temporaries(layout) == [".manifest.json.tmp-9"]
    assert all_files(layout.root) == []


def test_manifest_and_shardindex(tmp_path: Path, make_samples, make_tasks) -> None:
    tasks = make_tasks(2, 2, 3)
    layout = CorpusLayout(tmp_path / "c")
    m = write_manifest(layout, spec={"name": "toy"}, spec_hash="abc", package_version="0.1", tasks=tasks)
    assert m["spec_hash"] == "abc" and m["num_images"] == 12 and not any(e["complete"] for e in m["shards"])
    for t in tasks[:3]:
        write_shard(layout, t.shard_id, make_samples(t, num_classes=2), num_classes=2)
    m = refresh_index(layout, shard_ids=[0])
    assert [e["complete"] for e in m["shards"]] == [True, True, True, False]
    stats = json.loads((layout.root / layout.stats(2)).read_text())
    assert m["shards"][2]["tar_sha256"] == stats["tar_sha256"] and m["shards"][2]["samples"] == 3
    index = json.loads((layout.root / layout.shardindex).read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    assert [s["url"] for s in index["shardlist"]] == [f"data/train-00000{i}.tar" for i in range(3)]
    assert index["shardlist"][0]["filesize"] == (layout.root / layout.tar(0)).stat().st_size and index["shardlist"][0]["nsamples"] == 3
    (layout.root / layout.stats(1)).unlink()
    m = refresh_index(layout)
    assert [e["complete"] for e in m["shards"]] == [True, False, True, False] and "tar_sha256" not in m["shards"][1]
    assert len(json.loads((layout.root / layout.shardindex).read_text())["shardlist"]) == 2
    assert read_manifest(layout) == m
    assert [p for p in all_files(layout.root) if ".tmp-" in p] == []


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_manifest(CorpusLayout(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="no manifest.json"):
        read_manifest(CorpusLayout(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorpusError, match="unreadable"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"shards": []}')
    with pytest.raises(CorpusError, match="not an smi-synth corpus"):
        read_manifest(tmp_path)


def test_shard_bytes_do_not_depend_on_timings(tmp_path: Path, make_samples) -> None:
    """Tar and parquet bytes are a function of the samples' content; timings live in the stats only."""
    a, b = CorpusLayout(tmp_path / "a"), CorpusLayout(tmp_path / "b")
    fast = make_samples(TASK)
    slow = [dataclasses.replace(s, generation_seconds=s.generation_seconds * 7 + 3) for s in fast]
    stats_a = write_shard(a, 1, fast, num_classes=3)
    stats_b = write_shard(b, 1, slow, num_classes=3)
    for name in (a.tar(1), a.parquet(1)):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    assert stats_a["generation_seconds"] != stats_b["generation_seconds"]
