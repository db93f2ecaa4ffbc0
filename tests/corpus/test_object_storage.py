"""Corpora on object storage: the seam's backends behave alike, and a corpus on a real S3 API
(moto's server on 127.0.0.1) is written, indexed, verified, repaired, loaded and previewed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.corpus.card import render_card
from pipeline.corpus.index import read_manifest
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.loader import iter_samples, load_corpus
from pipeline.corpus.status import corpus_status
from pipeline.corpus.storage import FsspecStorage, LocalStorage, storage_for
from pipeline.corpus.verify import verify_corpus
from pipeline.corpus.writer import clean_for_resume
from pipeline.hub.preview import write_previews


@pytest.fixture(params=["local", "memory", "s3"])
def any_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "corpus")
    if request.param == "memory":
        return f"memory://{tmp_path.name}/corpus"
    return request.getfixturevalue("s3_url")


def test_storage_for_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(storage_for(tmp_path), LocalStorage)
    assert storage_for(f"file://{tmp_path}").root == tmp_path
    assert isinstance(storage_for("memory://x/y"), FsspecStorage)
    assert CorpusLayout("memory://x/y/").root == "memory://x/y"


def test_backends_behave_alike(any_root: str) -> None:
    storage = storage_for(any_root)
    assert storage.is_empty() and storage.listdir("data") == [] and not storage.remove("data/x.bin")
    staged = storage.stage("data/x.bin")
    staged.write(b"abc")
    assert not storage.exists("data/x.bin")  # invisible until committed
    staged.commit()
    staged.discard()
    storage.write_atomic("stats/y.json", b"{}")
    assert storage.listdir("data") == ["x.bin"] and storage.read_bytes("data/x.bin") == b"abc"
    assert storage.size("data/x.bin") == 3 and storage.is_file("data/x.bin") and storage.mtime("data/x.bin") > 0
    assert not storage.is_empty() and storage.temporaries(["", "data", "stats"]) == []
    assert storage.remove("data/x.bin") and storage.listdir("data") == []


def test_corpus_on_s3_round_trip(s3_url: str, make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(s3_url, num_classes=2, shards_per_class=2, per_shard=3)
    local = make_corpus(tmp_path / "local", num_classes=2, shards_per_class=2, per_shard=3)
    assert layout.root == s3_url and read_manifest(layout)["complete_shards"] == 4
    for sid in range(4):  # the same bytes as the same corpus in a local folder
        assert layout.storage.read_bytes(layout.tar(sid)) == (local.root / local.tar(sid)).read_bytes()
    assert layout.storage.read_bytes(layout.shardindex) == (local.root / local.shardindex).read_bytes().replace(
        b'"local"', b'"corpus"')
    report = verify_corpus(s3_url)
    assert report.ok and report.checked_shards == 4
    assert corpus_status(s3_url)["images"] == 12
    assert sum(1 for _ in load_corpus(s3_url)) == 12
    assert [r["key"] for r in iter_samples(s3_url)] == [r["key"] for r in iter_samples(local)]
    assert write_previews(layout, per_class=2)[-1] == "preview/overview.png"
    assert "preview/overview.png" in render_card(layout)


def test_damaged_shard_on_s3_is_found_and_repaired(s3_url: str, make_corpus) -> None:
    layout = make_corpus(s3_url, num_classes=2, per_shard=3)
    data = layout.storage.read_bytes(layout.tar(1))
    layout.storage.write_atomic(layout.tar(1), data[:-1024])  # truncated
    report = verify_corpus(s3_url)
    assert not report.ok and report.bad_shards == [1]
    repaired = verify_corpus(s3_url, repair=True)
    assert set(repaired.repaired) == {layout.stats(1), layout.tar(1), layout.parquet(1)}
    assert verify_corpus(s3_url).pending_shards == [1]
    assert clean_for_resume(layout, [1]) == []  # nothing of the shard is left to remove
