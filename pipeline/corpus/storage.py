"""The storage seam: every byte of a corpus is opened, listed, written, hashed and removed here.

A :class:`CorpusStorage` is bound to one corpus root and addresses files by their relative POSIX name
(``data/train-000000.tar``, see :mod:`pipeline.corpus.layout`). :func:`storage_for` picks the backend
from the root: a local folder (a path or ``file://``) gives :class:`LocalStorage`; any other fsspec URL
(``s3://``, ``gs://``, ``memory://`` ...) gives :class:`FsspecStorage`.

Writes are atomic either way. Locally a :class:`StagedFile` goes to a recognisable temporary name in its
final folder (``.train-000001.tar.tmp-<pid>-<hex>``), is fsynced, and ``commit`` renames it into place and
fsyncs the folder. On object storage the content is staged in a local temporary file and ``commit``
puts the whole object at once (object stores have no partial objects and no renames), so nothing of
an unfinished write is ever visible. Credentials and endpoints come from the backend's usual places
(for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, profiles); nothing here logs them.
:func:`write_file_atomic` is the same local write for files outside a corpus (checkpoints, caches).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import fsspec

from pipeline.checksums import sha256_stream

log = logging.getLogger(__name__)

_TEMP_PATTERN = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)?$")
_URL_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES}


def write_file_atomic(path: str | os.PathLike[str], data: bytes | Callable[[Path], object]) -> Path:
    """Write the local file ``path`` all at once (:meth:`CorpusStorage.write_atomic` in its folder), for
    files outside a corpus: teacher checkpoints and caches, saved students, training states."""
    path = Path(path)
    LocalStorage(path.parent).write_atomic(path.name, data)
    return path


def is_temporary(name: str) -> bool:
    """Whether a file name (last component) is one of the seam's temporaries (``.NAME.tmp-PID[-HEX]``)."""
    return bool(_TEMP_PATTERN.match(PurePosixPath(name).name))


def is_url(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` names object storage (a URL with a scheme other than ``file``)."""
    match = _URL_PATTERN.match(str(root))
    return match is not None and match.group(1).lower() != "file"


def storage_for(root: str | os.PathLike[str]) -> CorpusStorage:
    """The storage of the corpus at ``root``: a local folder or any fsspec URL."""
    text = str(root)
    if is_url(text):
        return FsspecStorage(text)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return LocalStorage(text)


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

    name: str
    temporary_name: str

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary file to write the content to; flushed and fsynced on a clean exit."""
        with open(self._tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def write(self, data: bytes) -> None:
        """Write all of ``data`` durably (not yet visible under its name)."""
        with self.open() as f:
            f.write(data)

    def write_with(self, write: Callable[[Path], object]) -> None:
        """Let ``write(path)`` fill the temporary through its local path (tools that take a file name,
        such as safetensors' ``save_file``), then make it durable (not yet visible under its name)."""
        write(self._tmp)
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())

    def commit(self) -> None:
        """Make the written content visible under its name, atomically."""
        raise NotImplementedError

    def discard(self) -> None:
        """Remove the temporary if it is still there (after a commit this does nothing)."""
        self._tmp.unlink(missing_ok=True)

    _tmp: Path


class CorpusStorage:
    """File access of one corpus root; every name is relative to it (POSIX separators)."""

    root: Path | str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled into DataLoader workers and Ray actors by root only
        return (storage_for, (str(self.root),))

    def url(self, name: str = "") -> str:
        """What a reader outside the seam (webdataset, ``datasets``) opens for ``name``."""
        raise NotImplementedError

    def local_path(self, name: str = "") -> Path:
        """The local path of ``name``, for tools that need a file on disk; object storage has none."""
        raise NotImplementedError(f"{self.url(name)} is on object storage, not a local file")

    # ------------------------------------------------------------------------------ primitives (backend)

    def exists(self, name: str = "") -> bool:
        raise NotImplementedError

    def is_file(self, name: str) -> bool:
        raise NotImplementedError

    def is_dir(self, name: str = "") -> bool:
        raise NotImplementedError

    def listdir(self, folder: str = "") -> list[str]:
        """Sorted names (last component) of the files in ``folder``; empty when it does not exist."""
        raise NotImplementedError

    def is_empty(self, folder: str = "") -> bool:
        """Whether ``folder`` holds nothing at all (files or folders); True when it does not exist."""
        raise NotImplementedError

    def listdir_mtimes(self, folder: str = "") -> dict[str, float]:
        """``{name: modification time}`` of the files in ``folder``, from one listing."""
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def mtime(self, name: str) -> float:
        """Last modification, seconds since the epoch."""
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        """The file opened for binary reading (the caller closes it)."""
        raise NotImplementedError

    def stage(self, name: str) -> StagedFile:
        """A temporary for ``name``; commit it to publish it."""
        raise NotImplementedError

    def remove(self, name: str) -> bool:
        """Delete ``name``; False when it was not there."""
        raise NotImplementedError

    def sync_folder(self, folder: str) -> None:
        """Make earlier removals in ``folder`` durable (where the backend needs it)."""

    def temporaries(self, folders: Iterable[str]) -> list[str]:
        """Names of the seam's temporaries left in ``folders`` by interrupted writes, sorted."""
        found = []
        for folder in folders:
            found += [str(PurePosixPath(folder, n)) for n in self.listdir(folder) if is_temporary(n)]
        return sorted(found)

    # ------------------------------------------------------------------------------ built on them

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def sha256(self, name: str) -> str:
        with self.open(name) as f:
            return sha256_stream(f)

    def write_atomic(self, name: str, data: bytes | Callable[[Path], object]) -> None:
        """Write ``name`` all at once: the bytes ``data``, or what ``data(path)`` writes to a local temporary
        (:meth:`StagedFile.write_with`); the temporary is removed on failure."""
        staged = self.stage(name)
        try:
            if callable(data):
                staged.write_with(data)
            else:
                staged.write(data)
            staged.commit()
        finally:
            staged.discard()


# ---------------------------------------------------------------------------------------------- local


class _LocalStagedFile(StagedFile):
    def __init__(self, storage: LocalStorage, name: str) -> None:
        self.name = name
        self._final = storage.local_path(name)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._final.with_name(f".{self._final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self.temporary_name = str(PurePosixPath(name).with_name(self._tmp.name))

    def commit(self) -> None:
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)


class LocalStorage(CorpusStorage):
    """A corpus in a local (or shared POSIX) folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def local_path(self, name: str = "") -> Path:
        return self.root / name if name else self.root

    def url(self, name: str = "") -> str:
        return str(self.local_path(name))

    def exists(self, name: str = "") -> bool:
        return self.local_path(name).exists()

    def is_file(self, name: str) -> bool:
        return self.local_path(name).is_file()

    def is_dir(self, name: str = "") -> bool:
        return self.local_path(name).is_dir()

    def listdir(self, folder: str = "") -> list[str]:
        try:
            with os.scandir(self.local_path(folder)) as entries:
                return sorted(e.name for e in entries if e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_empty(self, folder: str = "") -> bool:
        path = self.local_path(folder)
        return not path.is_dir() or next(path.iterdir(), None) is None

    def listdir_mtimes(self, folder: str = "") -> dict[str, float]:
        try:
            with os.scandir(self.local_path(folder)) as entries:
                return {e.name: e.stat().st_mtime for e in entries if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return {}

    def size(self, name: str) -> int:
        return self.local_path(name).stat().st_size

    def mtime(self, name: str) -> float:
        return self.local_path(name).stat().st_mtime

    def open(self, name: str) -> BinaryIO:
        return open(self.local_path(name), "rb")

    def stage(self, name: str) -> StagedFile:
        return _LocalStagedFile(self, name)

    def remove(self, name: str) -> bool:
        try:
            self.local_path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def sync_folder(self, folder: str) -> None:
        _fsync_dir(self.local_path(folder))


# ---------------------------------------------------------------------------------------------- fsspec


class _ObjectStagedFile(StagedFile):
    """Content staged in a local temporary file, then put as one whole object."""

    def __init__(self, storage: FsspecStorage, name: str) -> None:
        self.name, self._storage = name, storage
        fd, tmp = tempfile.mkstemp(prefix=".smi-synth-stage-")
        os.close(fd)
        self._tmp = Path(tmp)
        self.temporary_name = str(self._tmp)

    def commit(self) -> None:
        self._storage.put(self._tmp, self.name)


class FsspecStorage(CorpusStorage):
    """A corpus on any fsspec filesystem given by URL (``s3://bucket/corpus``, ``gs://...``, ``memory://...``)."""

    def __init__(self, url: str) -> None:
        self.root = url.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        self._base = self._base.rstrip("/")

    def _path(self, name: str = "") -> str:
        return f"{self._base}/{name}" if name else self._base

    def url(self, name: str = "") -> str:
        return f"{self.root}/{name}" if name else self.root

    def _fresh(self, name: str = "") -> None:
        self.fs.invalidate_cache(self._path(name))

    def exists(self, name: str = "") -> bool:
        self._fresh(name)
        return bool(self.fs.exists(self._path(name)))

    def is_file(self, name: str) -> bool:
        self._fresh(name)
        return bool(self.fs.isfile(self._path(name)))

    def is_dir(self, name: str = "") -> bool:
        self._fresh(name)
        return bool(self.fs.isdir(self._path(name)))

    def _entries(self, folder: str) -> list[dict[str, Any]]:
        self._fresh(folder)
        try:
            return list(self.fs.ls(self._path(folder), detail=True))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def listdir(self, folder: str = "") -> list[str]:
        return sorted(PurePosixPath(e["name"]).name for e in self._entries(folder) if e.get("type") == "file")

    def is_empty(self, folder: str = "") -> bool:
        return not self._entries(folder)

    def listdir_mtimes(self, folder: str = "") -> dict[str, float]:
        found = {}
        for e in self._entries(folder):
            if e.get("type") == "file":
                stamp = e.get("LastModified") or e.get("mtime") or e.get("created")
                when = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0.0)
                found[PurePosixPath(e["name"]).name] = when
        return found

    def size(self, name: str) -> int:
        self._fresh(name)
        return int(self.fs.size(self._path(name)))

    def mtime(self, name: str) -> float:
        self._fresh(name)
        return float(self.fs.modified(self._path(name)).timestamp())

    def open(self, name: str) -> BinaryIO:
        return self.fs.open(self._path(name), "rb")

    def read_bytes(self, name: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(name)))

    def stage(self, name: str) -> StagedFile:
        return _ObjectStagedFile(self, name)

    def put(self, local: Path, name: str) -> None:
        """Upload a local file as the whole object ``name``."""
        self.fs.put_file(str(local), self._path(name))
        self._fresh(name)

    def remove(self, name: str) -> bool:
        if not self.exists(name):
            return False
        try:
            self.fs.rm_file(self._path(name))
        except FileNotFoundError:
            return False
        self._fresh(name)
        return True
