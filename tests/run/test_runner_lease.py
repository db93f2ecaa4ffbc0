"""Fencing: two ``smi-synth run`` drivers on one corpus, the first stopped (SIGSTOP) past its lease.

The second takes the corpus over; the first, continued (SIGCONT), commits nothing more and exits 1
naming the holder. Real processes, real signals, each driver with its own local Ray; `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import read_lease
from pipeline.corpus.verify import verify_corpus
from pipeline.run.provenance import LOCAL_HOSTS
from tests.run.tiny_run import ROOT, last_json, write_manifest

pytestmark = pytest.mark.slow

LEASE_S = 3.0
SHARDS = 20  # 4 classes x 10 images, 2 per shard: the first driver is stopped long before its last one


def start_driver(manifest: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each driver starts its own Ray
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


def wait_until(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)


def stats_files(out: Path) -> dict[str, int]:
    """``{stats file name: inode}``: a shard committed again gets a new file (a rename), a new inode."""
    return {p.name: p.stat().st_ino for p in (out / "stats").glob("*.json")}


@pytest.mark.timeout(600)
def test_a_driver_paused_past_its_lease_commits_nothing_more_and_names_the_holder(tmp_path, teacher_file) -> None:
    manifest = write_manifest(tmp_path, teacher_file, images_per_class=10, resources={
        "workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "lease_ttl_s": LEASE_S})
    out = tmp_path / "out"
    layout = CorpusLayout(out)
    first = start_driver(manifest, out, tmp_path / "first.log")
    second = None
    try:
        wait_until(lambda: (out / "stats").is_dir() and stats_files(out), "the first driver's first shard")
        os.kill(first.pid, signal.SIGSTOP)  # a paused VM: its heartbeat stops; its worker finishes what it holds
        paused_token = read_lease(layout)["token"]
        wait_until(lambda: time.time() - read_lease(layout)["heartbeat"] > LEASE_S + 0.5, "the lease to expire")
        second = start_driver(manifest, out, tmp_path / "second.log")
        wait_until(lambda: (read_lease(layout) or {}).get("pid") == second.pid, "the takeover")
        before = stats_files(out)  # complete when the second driver took the corpus
        assert 0 < len(before) < SHARDS and read_lease(layout)["token"] != paused_token
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=300) == 1
        first_err = (tmp_path / "first.log").read_text()
        assert "this run lost the corpus lease: it is now held by smi-synth run tiny" in first_err
        assert f"pid {second.pid}," in first_err and "stopped before its next commit" in first_err
        second_out, _ = second.communicate(timeout=400)
        assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    report = last_json(second_out)
    assert report["ok"] and report["shards"] == SHARDS
    assert report["skipped_shards"] == len(before) and report["completed_shards"] == SHARDS - len(before)
    after = stats_files(out)
    assert len(after) == SHARDS and all(after[name] == inode for name, inode in before.items())
    commits = Counter(json.loads(line)["shard"] for line in (out / LOCAL_HOSTS).read_text().splitlines())
    assert sorted(commits) == list(range(SHARDS)) and set(commits.values()) == {1}  # no shard committed twice
    assert verify_corpus(out).ok
    assert read_lease(layout) is None  # released by the second driver; the first left it alone
