"""One writer per corpus: the lease refuses a live holder, takes over a stale or dead one, and is released."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.lease import LEASE_NAME, CorpusLease, LeaseHeld, LeaseLost, check_fence, read_lease
from pipeline.corpus.verify import verify_corpus
from pipeline.corpus.writer import write_shard


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


def test_a_commit_is_fenced_by_the_lease_it_holds(tmp_path) -> None:
    layout = CorpusLayout(tmp_path / "c")
    lease = CorpusLease.acquire(layout, "mine", ttl_s=30, settle_s=0)
    try:
        check_fence(layout, lease.token)  # held and fresh: commits go ahead
        lease.check()
        with pytest.raises(LeaseLost, match="lost the corpus lease: it is now held by"):
            check_fence(layout, "another-token")
        _foreign(layout, age=0, host="node-b", pid=4242)  # taken over
        with pytest.raises(LeaseLost, match=r"held by smi-synth run x \(host node-b, pid 4242"):
            check_fence(layout, lease.token)
        with pytest.raises(LeaseLost, match=r"held by smi-synth run x \(host node-b, pid 4242"):
            lease.check()
        assert lease.lost and "pid 4242" in lease.lost_reason
    finally:
        lease.release()
    assert read_lease(layout)["token"] == "t0"  # the holder's lease is left alone
    layout.storage.remove(LEASE_NAME)
    with pytest.raises(LeaseLost, match="no writer holds it"):
        check_fence(layout, "t0")


def test_a_lease_older_than_its_time_fences_even_its_own_holder(tmp_path) -> None:
    """A holder stopped past its lease (a paused VM) may have been taken over: it commits nothing more."""
    layout = CorpusLayout(tmp_path / "c")
    _foreign(layout, age=3, ttl=2)
    with pytest.raises(LeaseLost, match=r"it expired: last heartbeat 3 s ago, lease time 2 s"):
        check_fence(layout, "t0")


def test_a_stale_writer_leaves_the_holders_shard_alone(tmp_path, make_samples, make_tasks) -> None:
    layout = CorpusLayout(tmp_path / "c")
    task = make_tasks(3, 1, 4)[1]
    _foreign(layout, age=0)
    with pytest.raises(LeaseLost):
        write_shard(layout, 1, make_samples(task), num_classes=3, guard=lambda: check_fence(layout, "mine"))
    assert not layout.storage.exists(layout.tar(1)) and not layout.storage.exists(layout.stats(1))
    assert layout.storage.listdir(layout.data_dir) == []  # no temporary left either


def test_the_heartbeat_never_renews_an_expired_lease(tmp_path) -> None:
    """Stopped (SIGSTOP) past its lease time, the holder's heartbeat finds it expired and gives it up."""
    code = ("import sys, time\nfrom pipeline.corpus.layout import CorpusLayout\n"
            "from pipeline.corpus.lease import CorpusLease\n"
            "lease = CorpusLease.acquire(CorpusLayout(sys.argv[1]), 'paused', ttl_s=1.0, settle_s=0)\n"
            "print('held', flush=True)\n"
            "deadline = time.time() + 60\n"
            "while not lease.lost and time.time() < deadline:\n    time.sleep(0.05)\n"
            "print(lease.lost_reason, flush=True)\n")
    layout = CorpusLayout(tmp_path / "c")
    proc = subprocess.Popen([sys.executable, "-c", code, str(layout.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGSTOP)
        while read_lease(layout) is None or time.time() - read_lease(layout)["heartbeat"] < 1.5:
            time.sleep(0.1)  # its heartbeat stopped with it
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
    assert "lost the corpus lease: it expired" in out
    assert time.time() - read_lease(layout)["heartbeat"] >= 1.5  # not renewed
