"""The one tar reader and writer: reproducible bytes, grouping by key, problems reported."""

from __future__ import annotations

import io
import tarfile

from pipeline.corpus.tar_io import iter_tar_records, write_tar

MEMBERS = [("k1.cls", b"1"), ("k1.png", b"img1"), ("k2.cls", b"2"), ("k2.png", b"img2")]


def test_round_trip_and_reproducible_bytes() -> None:
    a, b = io.BytesIO(), io.BytesIO()
    info = write_tar(a, MEMBERS)
    write_tar(b, MEMBERS)
    assert a.getvalue() == b.getvalue() and info["tar_bytes"] == len(a.getvalue())
    with tarfile.open(fileobj=io.BytesIO(a.getvalue())) as tar:
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in tar} == {(0, 0, 0, 0o644)}
    records = list(iter_tar_records(io.BytesIO(a.getvalue())))
    assert records == [("k1", {"cls": b"1", "png": b"img1"}), ("k2", {"cls": b"2", "png": b"img2"})]


def test_malformed_members_are_skipped_and_reported() -> None:
    buf = io.BytesIO()
    write_tar(buf, [("k1.cls", b"1"), ("noext", b"x"), ("k1.cls", b"again"), ("d/k2.cls", b"2"), ("k3.cls", b"3")])
    problems: list[str] = []
    records = list(iter_tar_records(io.BytesIO(buf.getvalue()), problems))
    assert records == [("k1", {"cls": b"again"}), ("k3", {"cls": b"3"})]
    assert problems == ["member 'noext' is not KEY.EXT", "duplicate member 'k1.cls'", "member 'd/k2.cls' is not KEY.EXT"]
