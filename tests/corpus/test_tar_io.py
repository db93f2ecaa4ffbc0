"""The one tar reader and writer: reproducible bytes, grouping by key, problems reported."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from pipeline.corpus.tar_io import HEADER_BYTES, ReadLimits, iter_tar_records, write_tar
from pipeline.errors import CorpusError

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


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data[info.name]) if info.name in data else None)
    return buf.getvalue()


def _member(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info


def test_a_member_over_its_cap_is_refused_before_it_is_read() -> None:
    good = io.BytesIO()
    write_tar(good, [("k1.cls", b"1"), ("k1.png", b"x" * 5000)])
    limits = ReadLimits(shard_bytes=1 << 20, member_bytes=4096)
    with pytest.raises(CorpusError, match=r"^data/s\.tar: member 'k1\.png': 5000 bytes, over the 4096-byte member cap"):
        list(iter_tar_records(io.BytesIO(good.getvalue()), limits=limits, name="data/s.tar"))
    assert list(iter_tar_records(io.BytesIO(good.getvalue()), limits=ReadLimits.for_shard(len(good.getvalue()))))


def test_a_stream_longer_than_its_recorded_size_stops_at_the_cap() -> None:
    members = [(f"k{i}.png", bytes([i]) * 3000) for i in range(8)]
    good = io.BytesIO()
    info = write_tar(good, members)
    exact = ReadLimits.for_shard(info["tar_bytes"])
    assert len(list(iter_tar_records(io.BytesIO(good.getvalue()), limits=exact))) == 8
    with pytest.raises(CorpusError, match=r"^data/s\.tar: (after )?member 'k\d\.png': the tar goes on past its 20000-byte"):
        list(iter_tar_records(io.BytesIO(good.getvalue()), limits=ReadLimits.for_shard(20000), name="data/s.tar"))
    assert ReadLimits.for_shard(None) == ReadLimits() == ReadLimits.for_shard(True)


def test_a_huge_pax_header_is_refused_before_it_is_read() -> None:
    info = _member("k1.cls", 1)
    info.pax_headers = {"comment": "x" * (HEADER_BYTES + 10)}
    data = _tar([info], {"k1.cls": b"1"}, fmt=tarfile.PAX_FORMAT)
    with pytest.raises(CorpusError, match="pax header, over the"):
        list(iter_tar_records(io.BytesIO(data), name="data/p.tar"))


def test_links_devices_and_climbing_names_are_refused_never_followed() -> None:
    link = _member("k1.png", kind=tarfile.SYMTYPE)
    link.linkname = "/etc/passwd"
    hard = _member("k1.json", kind=tarfile.LNKTYPE)
    hard.linkname = "../../etc/shadow"
    device = _member("k1.npy", kind=tarfile.CHRTYPE)
    fifo = _member("k1.txt", kind=tarfile.FIFOTYPE)
    data = _tar([link, hard, device, fifo, _member("../k2.cls", 1), _member("/abs.cls", 1), _member("k3.cls", 1)],
                {"../k2.cls": b"2", "/abs.cls": b"9", "k3.cls": b"3"})
    problems: list[str] = []
    assert list(iter_tar_records(io.BytesIO(data), problems)) == [("k3", {"cls": b"3"})]  # verify: reported
    assert len(problems) == 6 and sum("non-file member" in p for p in problems) == 4
    with pytest.raises(CorpusError, match=r"^data/l\.tar: member 'k1\.png': not a regular file"):
        list(iter_tar_records(io.BytesIO(data), name="data/l.tar"))  # a reader: refused
    with pytest.raises(CorpusError, match=r"member '\.\./k2\.cls': not named KEY\.EXT"):
        list(iter_tar_records(io.BytesIO(_tar([_member("../k2.cls", 1)], {"../k2.cls": b"2"}))))


@pytest.mark.parametrize("cut", [100, 600, 4000])
def test_truncated_or_compressed_tars_are_corpus_errors(cut: int) -> None:
    buf = io.BytesIO()
    write_tar(buf, [("k1.cls", b"1"), ("k1.png", b"x" * 3000)])
    with pytest.raises(CorpusError, match=r"^data/t\.tar: unreadable tar"):
        list(iter_tar_records(io.BytesIO(buf.getvalue()[:cut]), name="data/t.tar"))
    squeezed = gzip.compress(buf.getvalue())
    with pytest.raises(CorpusError, match=r"^data/t\.tar: unreadable tar"):
        list(iter_tar_records(io.BytesIO(squeezed[: len(squeezed) // 2]), name="data/t.tar"))
