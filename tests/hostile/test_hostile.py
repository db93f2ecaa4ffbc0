"""The hostile-input set (tests/hostile/craft.py) through the real CLI, one subprocess per case.

Each case must be refused cleanly: exit 1 or 2, a one-line reason naming what was wrong (verify: a problem
line on the shard, then NOT OK), no traceback, nothing written outside OUT (the sentinel folders are
byte-for-byte as before) and nothing unpickled (the marker file a crafted pickle would write never appears).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.craft import CASES, MARKER, Case, base
from tests.run.tiny_run import ROOT

OUT_FOLDERS = ("corpus", "work/out")  # what a command may write to: the corpus it reads, or the run's --out


def smi_synth(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` outside the OUT folders: (mode, contents of files)."""
    skip = [root / f for f in OUT_FOLDERS]
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if path.is_file() else None)
    return found


def test_the_untouched_layout_is_accepted(tmp_path: Path) -> None:
    """The control: without the crafted part, the same commands succeed (the refusals are the crafting's)."""
    base(tmp_path)
    for argv in (["verify", str(tmp_path / "corpus")],
                 ["distill", str(tmp_path / "corpus"), "--student", "toy-student", "--steps", "1", "--batch-size", "2"]):
        done = smi_synth(argv, tmp_path / "work")
        assert done.returncode == 0, done.stderr


# one case of each kind in `make test` (a subprocess each); the whole set in `make test-all`
QUICK = {"tar-traversal-name", "png-decompression-bomb", "manifest-teacher-dotdot", "config-json-checkpoint-path",
         "pickle-teacher"}
SET = [pytest.param(c, id=f"{c.name}-{c.argv(Path('R'))[0]}",
                    marks=() if c.name in QUICK and c is next(d for d in CASES if d.name == c.name) else pytest.mark.slow)
       for c in CASES]


@pytest.mark.parametrize("case", SET)
def test_hostile_input_is_refused_cleanly(tmp_path: Path, case: Case) -> None:
    base(tmp_path)
    case.build(tmp_path)
    before = snapshot(tmp_path)
    argv = case.argv(tmp_path)
    done = smi_synth(argv, tmp_path / case.cwd)
    command = argv[0]
    assert done.returncode in (1, 2), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout
    if command == "verify":
        assert done.returncode == 1 and done.stdout.strip().endswith("NOT OK")
        lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip().startswith("shard 0 (train-000000)")]
        assert any(case.reason in ln for ln in lines), done.stdout
    else:
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"smi-synth {command}: ") and case.reason in last, done.stderr
    assert not (tmp_path / "outside" / MARKER).exists()
    assert snapshot(tmp_path) == before
