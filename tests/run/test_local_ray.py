"""The local Ray instance the runner starts: its workers run at normal priority, not Ray's niceness 15
(beside busy processes, niced actors were never ready within the scheduler's 120 s)."""

from __future__ import annotations

import os

from pipeline.run import runner


def _niceness() -> int:
    return os.nice(0)


def test_local_workers_run_at_the_drivers_priority() -> None:
    ray = runner._ray_init(None)
    try:
        assert ray.get(ray.remote(_niceness).remote()) == os.nice(0)  # Ray adds 15 to the driver's by default
    finally:
        ray.shutdown()
