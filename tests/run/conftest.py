"""Fixtures of the run tests: the tiny teacher and the tiny corpus. The shared Ray fixtures (``local_ray``,
``ray_cluster``) are in tests/ray_fixtures.py, for every test folder."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.run.tiny_run import TinyCorpus, last_json, make_teacher_file, released_by, write_manifest

_made: dict[str, TinyCorpus] = {}  # the tiny corpus, once made: it lives as long as the test run


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """The tiny checkpoint teacher of :mod:`tests.run.tiny_run`, once per test module."""
    return make_teacher_file(tmp_path_factory.mktemp("teacher"))


@pytest.fixture
def tiny_corpus(local_ray, tmp_path_factory) -> TinyCorpus:
    """The default manifest's corpus (:class:`~tests.run.tiny_run.TinyCorpus`), run through the CLI on the
    shared local Ray by the first test that asks for it; that run leaves the Ray without its workers."""
    if "default" not in _made:
        folder = tmp_path_factory.mktemp("tiny-corpus")
        teacher = make_teacher_file(folder)
        manifest, out = write_manifest(folder, teacher), folder / "out"
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert main(["run", str(manifest), "--out", str(out), "--json"]) == 0
        released_by(local_ray)  # the run left the shared Ray running, without its workers
        _made["default"] = TinyCorpus(manifest, teacher, out, last_json(stdout.getvalue()))
    return _made["default"]
