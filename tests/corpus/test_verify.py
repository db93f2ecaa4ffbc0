"""verify: corruption detection, pending shards, repair and the CLI contract."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from argparse import Namespace
from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from pipeline.corpus.index import read_manifest, refresh_index
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.verify import cmd_verify, verify_corpus
from pipeline.corpus.writer import write_shard
from pipeline.errors import CorpusError


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_tar(path: Path, edit) -> None:
    """Rewrite a tar with ``edit(list of (TarInfo, bytes)) -> list``."""
    with tarfile.open(path) as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for info, data in edit(members):
            out.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def restamp_stats(layout: CorpusLayout, sid: int) -> None:
    """Make stats agree with the (tampered) tar's size and hash, so only structural checks can catch it."""
    stats = json.loads((layout.root / layout.stats(sid)).read_text())
    stats.update(tar_bytes=(layout.root / layout.tar(sid)).stat().st_size, tar_sha256=sha256((layout.root / layout.tar(sid))))
    (layout.root / layout.stats(sid)).write_text(json.dumps(stats))


def truncate(layout: CorpusLayout) -> str:
    data = (layout.root / layout.tar(1)).read_bytes()
    (layout.root / layout.tar(1)).write_bytes(data[: len(data) // 2])
    return "truncated"


def flip_byte(layout: CorpusLayout) -> str:
    data = bytearray((layout.root / layout.tar(1)).read_bytes())
    data[1500] ^= 0x01
    (layout.root / layout.tar(1)).write_bytes(bytes(data))
    return "altered"


def delete_member(layout: CorpusLayout) -> str:
    rewrite_tar((layout.root / layout.tar(1)), lambda ms: [m for m in ms if not m[0].name.endswith("i0000002.logits.npy")])
    return "members"


def delete_member_restamped(layout: CorpusLayout) -> str:
    delete_member(layout)
    restamp_stats(layout, 1)
    return "expected ['cls', 'json', 'logits.npy', 'png']"


def delete_tar(layout: CorpusLayout) -> str:
    (layout.root / layout.tar(1)).unlink()
    return "missing tar"


def duplicate_keys(layout: CorpusLayout) -> str:
    rewrite_tar((layout.root / layout.tar(1)), lambda ms: ms + ms[:4])  # first sample's members again at the end
    restamp_stats(layout, 1)
    return "duplicate key"


def parquet_mismatch(layout: CorpusLayout) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table((layout.root / layout.parquet(1)))
    pq.write_table(table.slice(0, 3), (layout.root / layout.parquet(1)))
    return "parquet"


CORRUPTIONS = [
    truncate, flip_byte, delete_member, delete_member_restamped, delete_tar, duplicate_keys, parquet_mismatch,
]


def test_clean_corpus_verifies(corpus, capsys: pytest.CaptureFixture) -> None:
    report = verify_corpus(corpus.root)
    assert report.ok and report.checked_shards == 3 and report.bad_shards == [] and report.problems == []
    assert cmd_verify(Namespace(out=str(corpus.root), repair=False, json=True)) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] is True and out["checked_shards"] == 3 and out["pending_shards"] == [] and out["bad_shards"] == []


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_detects_and_repairs(corpus, corrupt, make_samples, corpus_tasks, capsys: pytest.CaptureFixture) -> None:
    original = {name: sha256(path) for name, path in (("tar", (corpus.root / corpus.tar(1))), ("pq", (corpus.root / corpus.parquet(1))))}
    needle = corrupt(corpus)
    report = verify_corpus(corpus.root)
    assert not report.ok and report.bad_shards == [1], report.problems
    assert any(needle in p for p in report.problems), report.problems
    assert all(p.startswith("shard 1 ") for p in report.problems)

    assert cmd_verify(Namespace(out=str(corpus.root), repair=True, json=True)) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bad_shards"] == [1] and "stats/train-000001.json" in out["repaired"]
    assert not (corpus.root / corpus.stats(1)).exists() and not (corpus.root / corpus.tar(1)).exists() and not (corpus.root / corpus.parquet(1)).exists()
    after = verify_corpus(corpus.root)
    assert after.ok and after.pending_shards == [1] and after.checked_shards == 2
    assert [e["complete"] for e in read_manifest(corpus)["shards"]] == [True, False, True]
    assert len(json.loads((corpus.root / corpus.shardindex).read_text())["shardlist"]) == 2

    task = corpus_tasks(corpus)[1]  # the next run regenerates the shard: identical bytes
    write_shard(corpus, 1, make_samples(task), num_classes=3)
    refresh_index(corpus, shard_ids=[1])
    assert sha256((corpus.root / corpus.tar(1))) == original["tar"] and sha256((corpus.root / corpus.parquet(1))) == original["pq"]
    assert verify_corpus(corpus.root).ok


def test_pending_strays_and_unexpected_files(make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(tmp_path / "c", pending=[2])
    (layout.root / layout.tar(2)).write_bytes(b"leftover of an interrupted write")  # tar without stats: pending, not bad
    report = verify_corpus(layout.root)
    assert report.ok and report.pending_shards == [2] and report.bad_shards == [] and report.checked_shards == 2

    stray = (layout.root / layout.data_dir) / ".train-000002.tar.tmp-4242-00ff"
    stray.write_bytes(b"partial")
    ((layout.root / layout.data_dir) / "notes.txt").write_text("hi")
    report = verify_corpus(layout.root)
    assert not report.ok and report.bad_shards == []
    assert report.stray_temporaries == ["data/.train-000002.tar.tmp-4242-00ff"]
    assert report.unexpected_files == ["data/notes.txt"]

    report = verify_corpus(layout.root, repair=True)
    assert not stray.exists() and not (layout.root / layout.tar(2)).exists() and ((layout.root / layout.data_dir) / "notes.txt").exists()
    assert set(report.repaired) == {"data/.train-000002.tar.tmp-4242-00ff", "data/train-000002.tar"}
    ((layout.root / layout.data_dir) / "notes.txt").unlink()
    assert verify_corpus(layout.root).ok


def test_manifest_count_mismatch(corpus) -> None:
    manifest = json.loads((corpus.root / corpus.manifest).read_text())
    manifest["shards"][0]["count"] = 5
    (corpus.root / corpus.manifest).write_text(json.dumps(manifest))
    report = verify_corpus(corpus.root)
    assert report.bad_shards == [0] and "manifest task has 5" in report.problems[0]


def test_not_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(CorpusError, match="not an smi-synth corpus"):
        verify_corpus(tmp_path)
    assert cli_main(["verify", str(tmp_path), "--json"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_cli_exit_codes(corpus, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["verify", str(corpus.root)]) == 0
    assert "OK" in capsys.readouterr().out
    flip_byte(corpus)
    assert cli_main(["verify", str(corpus.root), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["bad_shards"] == [1] and "NOT OK" in captured.err
