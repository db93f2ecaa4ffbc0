"""One writer per corpus: the lease refuses a live holder, takes over a stale or dead one, and is released."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import LEASE_NAME, CorpusLease, LeaseHeld, read_lease
from pipeline.corpus.verify import verify_corpus


def _foreign(layout: CorpusLayout, *, age: float, host: str = "other-host", pid: int = 1, ttl: float = 60.0) -> None:
    record = {"token": "t0", "host": host, "pid": pid, "command": "smi-synth run x", "heartbeat": time.time() - age,
              "ttl_s": ttl}
    layout.storage.write_atomic(LEASE_NAME, json.dumps(record).encode())


def test_acquire_release_and_a_second_writer_is_refused(tmp_path) -> None:
    layout = CorpusLayout(tmp_path / "c")
    with CorpusLease.acquire(layout, "first", settle_s=0) as lease:
        assert read_lease(layout)["token"] == lease.token
        with pytest.raises(LeaseHeld, match="first .*host"):
            CorpusLease.acquire(layout, "second", settle_s=0)
    assert read_lease(layout) is None


def test_live_foreign_holder_is_named(tmp_path) -> None:
    layout = CorpusLayout(tmp_path / "c")
    _foreign(layout, age=5)
    with pytest.raises(LeaseHeld, match=r"smi-synth run x \(host other-host, pid 1"):
        CorpusLease.acquire(layout, "mine", settle_s=0)


def test_stale_lease_is_taken_over(tmp_path) -> None:
    layout = CorpusLayout(tmp_path / "c")
    _foreign(layout, age=120)
    with CorpusLease.acquire(layout, "mine", settle_s=0) as lease:
        assert read_lease(layout)["token"] == lease.token


def test_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    layout = CorpusLayout(tmp_path / "c")
    _foreign(layout, age=1, host=socket.gethostname(), pid=proc.pid)  # fresh, but its process is gone
    with CorpusLease.acquire(layout, "mine", settle_s=0) as lease:
        held = read_lease(layout)
        assert held["token"] == lease.token and held["pid"] != proc.pid and held["command"] == "mine"
    assert read_lease(layout) is None


def test_heartbeat_keeps_it_fresh_and_notices_a_takeover(tmp_path) -> None:
    layout = CorpusLayout(tmp_path / "c")
    lease = CorpusLease.acquire(layout, "beating", ttl_s=0.4, settle_s=0)
    try:
        first = read_lease(layout)["heartbeat"]
        deadline = time.time() + 10
        while read_lease(layout)["heartbeat"] == first:
            assert time.time() < deadline, "no heartbeat within 10 s"
            time.sleep(0.02)
        while not lease.lost:  # someone else takes it (a beat in flight may overwrite it once: write again)
            assert time.time() < deadline, "the takeover went unnoticed for 10 s"
            _foreign(layout, age=0)
            time.sleep(0.05)
    finally:
        lease.release()
    assert read_lease(layout)["token"] == "t0"  # not ours: left alone


def test_verify_repair_refuses_a_live_run(corpus) -> None:
    _foreign(corpus, age=1)
    with pytest.raises(LeaseHeld, match="is being written by"):
        verify_corpus(corpus, repair=True)
    assert verify_corpus(corpus).ok  # read-only verification needs no lease
