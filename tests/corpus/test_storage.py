"""The storage seam: atomic writes, staged files, listings, hashing, removal, temporaries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.corpus.storage import LocalStorage, is_temporary, write_file_atomic


def test_write_atomic_read_hash_remove(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "c")
    assert not storage.exists() and storage.is_empty() and storage.listdir("data") == []
    storage.write_atomic("data/a.bin", b"hello")
    assert storage.read_bytes("data/a.bin") == b"hello" and storage.size("data/a.bin") == 5
    assert storage.sha256("data/a.bin") == hashlib.sha256(b"hello").hexdigest()
    assert storage.listdir("data") == ["a.bin"] and not storage.is_empty()
    assert storage.remove("data/a.bin") and not storage.remove("data/a.bin")
    assert storage.local_path("data/a.bin") == tmp_path / "c" / "data" / "a.bin"


def test_staged_file_is_invisible_until_committed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    staged = storage.stage("stats/x.json")
    staged.write(b"{}")
    assert not storage.exists("stats/x.json")
    assert storage.temporaries(["stats"]) == [staged.temporary_name] and is_temporary(staged.temporary_name)
    staged.commit()
    staged.discard()  # after a commit: nothing to remove, the file stays
    assert storage.read_text("stats/x.json") == "{}" and storage.temporaries(["stats"]) == []


def test_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    staged = storage.stage("data/t.tar")
    with pytest.raises(RuntimeError), staged.open() as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    staged.discard()
    assert storage.listdir("data") == [] and storage.temporaries(["data"]) == []


def test_write_file_atomic_takes_bytes_or_a_path_writer_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    seen: list[Path] = []

    def writer(path: Path) -> None:  # a tool that wants a file name (safetensors' save_file)
        seen.append(path)
        path.write_bytes(b"weights")

    assert write_file_atomic(tmp_path / "m" / "w.bin", writer).read_bytes() == b"weights"
    assert seen[0].parent == tmp_path / "m" and is_temporary(seen[0].name) and not seen[0].exists()
    write_file_atomic(tmp_path / "m" / "meta.json", b"{}")

    def failing(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_file_atomic(tmp_path / "m" / "w.bin", failing)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json", "w.bin"]
    assert (tmp_path / "m" / "w.bin").read_bytes() == b"weights"  # the old content stays


def test_is_temporary_names() -> None:
    assert is_temporary(".train-000001.tar.tmp-12-ab12cd34") and is_temporary("data/.manifest.json.tmp-9")
    assert not is_temporary("train-000001.tar") and not is_temporary(".hidden")
