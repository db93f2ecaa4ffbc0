"""What a Ray cluster can place: workers per node from each alive node's CPUs and GPUs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pipeline.errors import UserError


def workers_that_fit(nodes: Iterable[dict[str, Any]], cpus_per_worker: float, gpus_per_worker: float) -> int:
    """How many actors of ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs the alive nodes hold."""
    total = 0
    for node in nodes:
        if not node.get("Alive", node.get("alive", True)):
            continue
        res = node.get("Resources", {})
        fits = math.floor(float(res.get("CPU", 0)) / cpus_per_worker + 1e-9) if cpus_per_worker > 0 else math.inf
        if gpus_per_worker > 0:
            fits = min(fits, math.floor(float(res.get("GPU", 0)) / gpus_per_worker + 1e-9))
        total += 0 if fits == math.inf else int(fits)
    return total


def describe_nodes(nodes: Iterable[dict[str, Any]]) -> str:
    """``2 nodes: 2 CPU; 4 CPU + 1 GPU``."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", True))]
    parts = []
    for res in alive:
        text = f"{int(res.get('CPU', 0))} CPU"
        if res.get("GPU"):
            text += f" + {int(res['GPU'])} GPU"
        parts.append(text)
    return f"{len(alive)} node{'s' if len(alive) != 1 else ''}: " + "; ".join(parts)


def check_fit(wanted: int | None, fits: int, cpus_per_worker: float, gpus_per_worker: float,
              nodes: list[dict[str, Any]], label: str = "--workers") -> int:
    """The number of workers to start: ``wanted`` when it fits, else all that fit; UserError when none
    fits or an explicit ``wanted`` is more than fits (a request that would wait for ever)."""
    need = f"{cpus_per_worker:g} CPU" + (f" + {gpus_per_worker:g} GPU" if gpus_per_worker else "")
    if fits < 1:
        raise UserError(f"resources: no node of the Ray cluster can hold one worker of {need} "
                        f"({describe_nodes(nodes)}); lower cpus_per_worker/gpus_per_worker or add nodes")
    if wanted is not None and wanted > fits:
        raise UserError(f"{label} {wanted}: the Ray cluster holds {fits} worker(s) of {need} "
                        f"({describe_nodes(nodes)}); ask for at most {fits}")
    return wanted or fits
