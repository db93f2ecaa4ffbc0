"""The one tar reader and the one tar writer of the project (WebDataset shard tars).

Reading streams (``r|``: works on any readable file object, seekable or not) and groups members into
samples ``(key, {extension: bytes})``, the key being the name up to the first dot. Writing is
reproducible: the bytes depend only on the members (fixed mtime, uid/gid, mode, USTAR), and the
sink is hashed on the way so the caller gets size and digests without reading the tar again.

A corpus may be someone else's bytes (``hf://``, ``s3://``), so reading is bounded (:class:`ReadLimits`):
no more than the shard's size cap is read from the stream (its recorded ``tar_bytes`` when the stats
give it, else :data:`DEFAULT_SHARD_BYTES`), a member larger than the member cap
(:data:`DEFAULT_MEMBER_BYTES`, or the shard cap when smaller) is refused before it is read, and so is a
long-name or pax header over :data:`HEADER_BYTES`. Each is a :class:`~pipeline.errors.CorpusError` naming
the shard and the member; as are a truncated or malformed tar, and links, devices and names with a
folder. Nothing is extracted to disk: member names are only parsed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from pipeline.corpus.storage import CorpusStorage
from pipeline.errors import CorpusError

TAR_MTIME = 0
TAR_MODE = 0o644
TAR_FORMAT = tarfile.USTAR_FORMAT

DEFAULT_MEMBER_BYTES = 64 << 20  # one image, label or metadata member (a 224 px PNG is ~150 KiB)
DEFAULT_SHARD_BYTES = 8 << 30  # a shard tar whose stats do not record its size
HEADER_BYTES = 1 << 20  # a GNU long-name or pax extended header

Record = tuple[str, dict[str, bytes]]


@dataclass(frozen=True)
class ReadLimits:
    """Byte caps of one shard read: every byte taken from the stream, and each member."""

    shard_bytes: int = DEFAULT_SHARD_BYTES
    member_bytes: int = DEFAULT_MEMBER_BYTES

    @classmethod
    def for_shard(cls, tar_bytes: Any = None) -> ReadLimits:
        """The caps of a shard whose stats record ``tar_bytes`` (``None``: not recorded, the defaults)."""
        if isinstance(tar_bytes, int) and not isinstance(tar_bytes, bool) and tar_bytes > 0:
            return cls(shard_bytes=tar_bytes, member_bytes=min(DEFAULT_MEMBER_BYTES, tar_bytes))
        return cls()


class _TooLarge(Exception):
    """A member or header over its cap (turned into a CorpusError naming the shard)."""


class _Odd(Exception):
    """A link, device or folder member, or a name that is not ``KEY.EXT``, met by a reader."""


class _BoundedInfo(tarfile.TarInfo):
    """Refuses long-name / pax headers over :data:`HEADER_BYTES` before tarfile reads them into memory."""

    _HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._HEADERS and self.size > HEADER_BYTES:
            raise _TooLarge(f"a {self.size}-byte long-name or pax header, over the {HEADER_BYTES}-byte cap")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _BoundedReader:
    """A read-only stream that refuses to hand out more than ``cap`` bytes in all."""

    def __init__(self, f: BinaryIO, cap: int) -> None:
        self.f, self.cap, self.done = f, cap, 0

    def read(self, size: int = -1) -> bytes:
        want = self.cap - self.done + 1 if size is None or size < 0 else min(size, self.cap - self.done + 1)
        data = self.f.read(want)
        self.done += len(data)
        if self.done > self.cap:
            raise _TooLarge(f"the tar goes on past its {self.cap}-byte cap")
        return data


def iter_tar_records(
    f: BinaryIO, problems: list[str] | None = None, *, limits: ReadLimits | None = None, name: str = "tar stream"
) -> Iterator[Record]:
    """``(key, {extension: bytes})`` per sample of one tar stream, in tar order, within ``limits``.

    A member that is not a regular file or not named ``KEY.EXT`` (a link, a device, ``../x.png``) is a
    ``CorpusError``; with ``problems`` (``verify``) it is described there and skipped instead, as is a
    repeated member of a sample (which keeps its last bytes). A key whose members are not contiguous
    comes out as two records with the same key. A member or the stream over its cap, or a truncated or
    malformed tar, raises ``CorpusError`` naming ``name`` (the shard) and the member.
    """
    limits = limits or ReadLimits()
    key: str | None = None
    members: dict[str, bytes] = {}
    where = "at its start"
    try:
        with tarfile.open(fileobj=_BoundedReader(f, limits.shard_bytes), mode="r|",  # type: ignore[call-overload]
                          tarinfo=_BoundedInfo) as tar:
            for info in tar:
                tar.members = []  # stream mode keeps every header otherwise
                where = f"member {info.name[:200]!r}"
                odd = ("not a regular file" if not info.isreg() else
                       "not named KEY.EXT" if "." not in info.name or "/" in info.name else None)
                if odd is not None:
                    if problems is None:  # a reader: the corpus writer never makes such members
                        raise _Odd(odd)
                    problems.append(f"non-file member {info.name!r}" if not info.isreg() else
                                    f"member {info.name!r} is not KEY.EXT")
                    continue
                base, _, ext = info.name.partition(".")
                if info.size > limits.member_bytes:
                    raise _TooLarge(f"{info.size} bytes, over the {limits.member_bytes}-byte member cap")
                if base != key and key is not None:
                    yield key, members
                    members = {}
                key = base
                if ext in members and problems is not None:
                    problems.append(f"duplicate member {info.name!r}")
                members[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]
                where = f"after member {info.name[:200]!r}"
    except (_TooLarge, _Odd) as exc:
        raise CorpusError(f"{name}: {where}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise CorpusError(f"{name}: unreadable tar {where} ({type(exc).__name__}: {exc})") from None
    if key is not None:
        yield key, members


def read_tar(
    storage: CorpusStorage, name: str, problems: list[str] | None = None, *, limits: ReadLimits | None = None
) -> Iterator[Record]:
    """:func:`iter_tar_records` of the tar ``name`` in ``storage``, closed once read."""
    with storage.open(name) as f:
        yield from iter_tar_records(f, problems, limits=limits, name=name)


class _HashingSink:
    """File-like sink counting and hashing what the tar stream writes."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.size = f, 0
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        return len(data)


def write_tar(f: BinaryIO, members: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """Write ``members`` (name, bytes), in the order given, as a reproducible tar to ``f``.

    Returns ``tar_bytes``, ``tar_sha256`` and ``tar_md5`` of what was written.
    """
    sink = _HashingSink(f)
    with tarfile.open(fileobj=sink, mode="w|", format=TAR_FORMAT) as tar:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return {"tar_bytes": sink.size, "tar_sha256": sink.sha256.hexdigest(), "tar_md5": sink.md5.hexdigest()}
