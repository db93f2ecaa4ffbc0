"""The Ray a run uses: a local instance started at normal priority (not Ray's niceness 15: beside busy
processes, niced actors were never ready within the scheduler's 120 s), or the one this process already
has, which the run leaves running with its own actors gone."""

from __future__ import annotations

import os

import pytest

from pipeline.errors import UserError
from pipeline.run import runner


def _niceness() -> int:
    return os.nice(0)


def test_local_workers_run_at_the_drivers_priority(local_ray) -> None:
    # local_ray is started by runner._ray_init, as `smi-synth run` starts one
    assert local_ray.get(local_ray.remote(_niceness).remote()) == os.nice(0)  # Ray adds 15 to the driver's by default


def test_an_initialised_ray_is_used_and_another_address_refused(local_ray) -> None:
    ray, owned = runner._ray_init(None)
    assert ray is local_ray and not owned  # run_corpus neither starts nor shuts it down
    with pytest.raises(UserError, match="--address 10.9.8.7:6379: this process is already connected"):
        runner._ray_init("10.9.8.7:6379")
