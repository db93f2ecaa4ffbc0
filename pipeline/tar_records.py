"""Plain, streaming reading of a shard tar: one ``(key, {extension: bytes})`` per sample.

No webdataset or torch import, so light tools (verify, preview, card) start fast.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path


def iter_tar_records(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` per sample of one tar, in tar order (key = name up to the first dot)."""
    with tarfile.open(path, mode="r:") as tar:
        key, members = None, {}
        for info in tar:
            if not info.isfile():
                continue
            base, _, ext = info.name.partition(".")
            if base != key and members:
                yield key, members  # type: ignore[misc]
                members = {}
            key = base
            f = tar.extractfile(info)
            members[ext] = f.read() if f is not None else b""
        if members:
            yield key, members  # type: ignore[misc]
