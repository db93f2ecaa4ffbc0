"""Provenance: what made a shard besides its spec (teacher weights, engine, packages, device, GPU model).

A worker collects one record when its teacher is loaded (:func:`collect`) and writes it into every
shard's stats; the run records the first one in manifest.json. Both are published, so a record holds
only what determines the bytes (and the Python version): no host or user name, no local path. A CPU
worker records the instruction set torch dispatches its kernels for (``cpu_capability``: AVX2, AVX512
..), not the CPU's model name. A resume, or a cluster whose nodes differ, compares records with
:func:`mismatches` and refuses to mix them unless told to. Which host made which shard is kept, for
debugging, in OUT's :data:`LOCAL_HOSTS` (:func:`note_local_commit`), which publish never sends.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
from importlib import metadata
from typing import Any

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.storage import LocalStorage

log = logging.getLogger(__name__)

PACKAGES = ("smi-synth", "torch", "timm", "numpy", "pillow", "pyarrow", "safetensors")
# recorded only, neither changes a byte ("host" and the CPU model "cpu": corpora made before they were dropped)
NOT_COMPARED = ("host", "python", "cpu")
IF_BOTH = ("cpu_capability",)  # compared where both records have it (older records lack it)
LOCAL_DIR = "local"  # under OUT: the run's own notes, never published (publish sends data/, metadata/, ...)
LOCAL_HOSTS = f"{LOCAL_DIR}/hosts.jsonl"  # one line per shard commit: shard, host, pid, time


def package_version() -> str:
    """The installed smi-synth version ("0+unknown" when run from a source tree that is not installed)."""
    try:
        return metadata.version("smi-synth")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose code computes or encodes corpus bytes."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions



def collect(
    *,
    teacher_id: str,
    weights_sha256: str,
    engine_version: int,
    device: str,
    dtype: str,
    threads: int | None,
    determinism: dict[str, Any],
) -> dict[str, Any]:
    """One worker's provenance record (JSON-able). ``device`` is ``cpu`` or ``cuda`` (``cuda:N`` accepted)."""
    import torch

    kind = device.split(":", 1)[0]
    record: dict[str, Any] = {
        "teacher": {"id": teacher_id, "weights_sha256": weights_sha256},
        "engine_version": engine_version,
        "packages": {**package_versions(), "torch": torch.__version__},  # with its build tag (+cpu, +cu130)
        "device": kind,
        "dtype": dtype,
        "determinism": dict(determinism),
        "python": platform.python_version(),
    }
    if kind == "cuda":
        index = torch.device(device).index or 0
        record["gpu"] = torch.cuda.get_device_name(index)
        record["cuda"] = torch.version.cuda
        record["cudnn"] = torch.backends.cudnn.version()
    else:
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["threads"] = threads if threads is not None else torch.get_num_threads()
    return record


def _flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(record, dict):
        return {prefix: record}
    out: dict[str, Any] = {}
    for key, value in record.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def mismatches(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: recorded -> current`` for every compared field that differs (dotted paths), sorted."""
    a, b = _flatten(recorded), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".", 1)[0] in NOT_COMPARED or a.get(key) == b.get(key) or (
                key in IF_BOTH and (key not in a or key not in b)):
            continue
        out.append(f"{key}: {a.get(key, 'not recorded')} -> {b.get(key, 'not recorded')}")
    return out



def host_name() -> str:
    """This machine's name (for the local notes and the corpus lease only; never in a published file)."""
    return socket.gethostname()


def note_local_commit(layout: CorpusLayout, shard_id: int) -> None:
    """Append ``{shard, host, pid, time}`` to OUT's :data:`LOCAL_HOSTS` (a local OUT only: object stores
    cannot append). A debugging aid: a failure to write it is ignored."""
    if not isinstance(layout.storage, LocalStorage):
        return
    line = json.dumps({"shard": shard_id, "host": host_name(), "pid": os.getpid(), "time": round(time.time(), 3)})
    path = layout.storage.local_path(LOCAL_HOSTS)
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())  # one write per line: O_APPEND keeps lines whole
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("%s: cannot note shard %d's host (%s)", path, shard_id, exc)
