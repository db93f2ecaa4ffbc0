"""Tests of the scripts under benchmarks/ (loaded from their files: benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def assert_usage_error(module: ModuleType, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``module.parse_args(argv)`` exits 2 with a message naming ``flag``."""
    with pytest.raises(SystemExit) as exc:
        module.parse_args(argv)
    assert exc.value.code == 2 and flag in capsys.readouterr().err
