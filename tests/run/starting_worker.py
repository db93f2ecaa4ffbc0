"""A light Ray actor for the start-up tests: its constructor is a script of progress reports (no torch)."""

from __future__ import annotations

import os
import time


class StartingWorker:
    """Reports to the registry ``reports`` times, ``every_s`` apart, as a worker loading its teacher does,
    then is ready; with ``hang`` it hangs after its reports instead (a frozen or stuck start-up). A
    shard is a sleep of ``shard_s``."""

    def __init__(self, registry, reports: int, every_s: float, hang: bool = False, shard_s: float = 0.0) -> None:
        import ray

        self.shard_s = shard_s
        key = ray.get_runtime_context().get_actor_id()
        for i in range(reports):
            registry.report_start.remote(key, f"loading teacher, {i * every_s:.0f} s in", os.getpid(), "test-node")
            time.sleep(every_s)
        if hang:
            time.sleep(3600)

    def ready(self) -> int:
        return os.getpid()

    def run_attempt(self, task, token: str, registry, assigned: None = None) -> dict:
        time.sleep(self.shard_s)
        return {"samples": task.count, "pid": os.getpid()}
