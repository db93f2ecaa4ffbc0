"""sha256 of streams and local files: the one digest helper (corpus files, teacher weights, caches)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

_BLOCK = 1 << 20


def sha256_stream(f: BinaryIO) -> str:
    """sha256 hex digest of a readable binary stream, read in 1 MiB blocks."""
    h = hashlib.sha256()
    while chunk := f.read(_BLOCK):
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a local file."""
    with open(path, "rb") as f:
        return sha256_stream(f)
