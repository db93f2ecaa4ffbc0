"""Fixtures of the run tests: the tiny teacher. The shared Ray fixtures (``local_ray``, ``ray_cluster``) are
in tests/ray_fixtures.py, for every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.run.tiny_run import make_teacher_file


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """The tiny checkpoint teacher of :mod:`tests.run.tiny_run`, once per test module."""
    return make_teacher_file(tmp_path_factory.mktemp("teacher"))
