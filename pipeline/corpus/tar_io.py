"""The one tar reader and the one tar writer of the project (WebDataset shard tars).

Reading streams (``r|``: works on any readable file object, seekable or not) and groups members into
samples ``(key, {extension: bytes})``, the key being the name up to the first dot. Writing is
reproducible: the bytes depend only on the members (fixed mtime, uid/gid, mode, USTAR), and the
sink is hashed on the way so the caller gets size and digests without reading the tar again.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from pipeline.corpus.storage import CorpusStorage

TAR_MTIME = 0
TAR_MODE = 0o644
TAR_FORMAT = tarfile.USTAR_FORMAT

Record = tuple[str, dict[str, bytes]]


def iter_tar_records(f: BinaryIO, problems: list[str] | None = None) -> Iterator[Record]:
    """``(key, {extension: bytes})`` per sample of one tar stream, in tar order.

    Members that are not regular files or not named ``KEY.EXT`` are skipped; a repeated member of a
    sample keeps its last bytes. With ``problems`` each of these is also described there (``verify``
    uses that). A key whose members are not contiguous comes out as two records with the same key.
    """
    key: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for info in tar:
            if not info.isreg():
                if problems is not None:
                    problems.append(f"non-file member {info.name!r}")
                continue
            base, dot, ext = info.name.partition(".")
            if not dot or "/" in info.name:
                if problems is not None:
                    problems.append(f"member {info.name!r} is not KEY.EXT")
                continue
            if base != key and key is not None:
                yield key, members
                members = {}
            key = base
            if ext in members and problems is not None:
                problems.append(f"duplicate member {info.name!r}")
            members[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]
            tar.members = []  # stream mode keeps every header otherwise
    if key is not None:
        yield key, members


def read_tar(storage: CorpusStorage, name: str, problems: list[str] | None = None) -> Iterator[Record]:
    """:func:`iter_tar_records` of the tar ``name`` in ``storage``, closed once read."""
    with storage.open(name) as f:
        yield from iter_tar_records(f, problems)


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
