"""Provenance: what made a shard besides its spec (teacher weights, engine, packages, device, host).

A worker collects one record when its teacher is loaded (:func:`collect`) and writes it into every
shard's stats; the run records the first one in manifest.json. Bytes depend on everything in a record
but the host (and the Python build), so a resume, or a cluster whose nodes differ, compares records
with :func:`mismatches` and refuses to mix them unless told to.
"""

from __future__ import annotations

import platform
import socket
from importlib import metadata
from typing import Any

PACKAGES = ("smi-synth", "torch", "timm", "numpy", "pillow", "pyarrow", "safetensors")
NOT_COMPARED = ("host", "python")  # recorded only: neither changes a byte


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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


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
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
    if kind == "cuda":
        index = torch.device(device).index or 0
        record["gpu"] = torch.cuda.get_device_name(index)
        record["cuda"] = torch.version.cuda
        record["cudnn"] = torch.backends.cudnn.version()
    else:
        record["cpu"] = _cpu_model()
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
        if key.split(".", 1)[0] in NOT_COMPARED or a.get(key) == b.get(key):
            continue
        out.append(f"{key}: {a.get(key, 'not recorded')} -> {b.get(key, 'not recorded')}")
    return out

