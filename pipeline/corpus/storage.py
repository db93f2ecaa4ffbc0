"""The storage seam: every byte of a corpus is opened, listed, written, hashed and removed here.

A :class:`CorpusStorage` is bound to one corpus root and addresses files by their relative POSIX name
(``data/train-000000.tar``, see :mod:`pipeline.corpus.layout`). Today it is the local filesystem;
object storage plugs in behind the same methods. Writes are atomic: a :class:`StagedFile` goes to a
recognisable temporary name in its final folder (``.train-000001.tar.tmp-<pid>-<hex>``), is fsynced,
and :meth:`StagedFile.commit` renames it into place and fsyncs the folder.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pipeline.checksums import sha256_stream

log = logging.getLogger(__name__)

_TEMP_PATTERN = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)?$")
_FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES}


def is_temporary(name: str) -> bool:
    """Whether a file name (last component) is one of the seam's temporaries (``.NAME.tmp-PID[-HEX]``)."""
    return bool(_TEMP_PATTERN.match(PurePosixPath(name).name))


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


class StagedFile:
    """A file written under a temporary name, published by :meth:`commit`, dropped by :meth:`discard`."""

    def __init__(self, storage: CorpusStorage, name: str) -> None:
        self.name = name
        self._final = storage.local_path(name)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._final.with_name(f".{self._final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self.temporary_name = str(PurePosixPath(name).with_name(self._tmp.name))

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary file to write the content to; flushed and fsynced on a clean exit."""
        with open(self._tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def write(self, data: bytes) -> None:
        """Write all of ``data`` durably (no rename yet)."""
        with self.open() as f:
            f.write(data)

    def commit(self) -> None:
        """Atomically move the written temporary onto its final name and make the rename durable."""
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)

    def discard(self) -> None:
        """Remove the temporary if it is still there (after a commit this does nothing)."""
        self._tmp.unlink(missing_ok=True)


class CorpusStorage:
    """File access of one corpus root; every name is relative to it (POSIX separators)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"CorpusStorage({str(self.root)!r})"

    def local_path(self, name: str = "") -> Path:
        """The local path of ``name`` (for tools that hand a path to another library)."""
        return self.root / name if name else self.root

    def url(self, name: str) -> str:
        """What a reader outside the seam (webdataset, ``datasets``) opens for ``name``."""
        return str(self.local_path(name))

    # ------------------------------------------------------------------------------------------ reading

    def exists(self, name: str = "") -> bool:
        return self.local_path(name).exists()

    def is_file(self, name: str) -> bool:
        return self.local_path(name).is_file()

    def is_dir(self, name: str = "") -> bool:
        return self.local_path(name).is_dir()

    def listdir(self, folder: str = "") -> list[str]:
        """Sorted names (last component) of the files in ``folder``; empty when it does not exist."""
        path = self.local_path(folder)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_file())

    def is_empty(self, folder: str = "") -> bool:
        """Whether ``folder`` holds no entry at all (files or folders); True when it does not exist."""
        path = self.local_path(folder)
        return not path.is_dir() or next(path.iterdir(), None) is None

    def size(self, name: str) -> int:
        return self.local_path(name).stat().st_size

    def mtime(self, name: str) -> float:
        return self.local_path(name).stat().st_mtime

    def open(self, name: str) -> BinaryIO:
        """The file opened for binary reading (the caller closes it)."""
        return open(self.local_path(name), "rb")

    def read_bytes(self, name: str) -> bytes:
        return self.local_path(name).read_bytes()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def sha256(self, name: str) -> str:
        with self.open(name) as f:
            return sha256_stream(f)

    # ------------------------------------------------------------------------------------------ writing

    def stage(self, name: str) -> StagedFile:
        """A temporary for ``name`` (its folder is created); commit it to publish it."""
        return StagedFile(self, name)

    def write_atomic(self, name: str, data: bytes) -> None:
        """Temporary + fsync + rename + folder fsync; the temporary is removed on failure."""
        staged = self.stage(name)
        try:
            staged.write(data)
            staged.commit()
        finally:
            staged.discard()

    def remove(self, name: str) -> bool:
        """Delete ``name``; False when it was not there."""
        try:
            self.local_path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def sync_folder(self, folder: str) -> None:
        """Make earlier removals in ``folder`` durable."""
        _fsync_dir(self.local_path(folder))

    def temporaries(self, folders: Iterable[str]) -> list[str]:
        """Names of the seam's temporaries left in ``folders`` (by interrupted writes), sorted."""
        found = []
        for folder in folders:
            found += [str(PurePosixPath(folder, n)) for n in self.listdir(folder) if is_temporary(n)]
        return sorted(found)
