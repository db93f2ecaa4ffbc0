"""A light Ray actor for the scheduler tests: a shard is a sleep (it imports no torch, so it starts fast)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Superseded(RuntimeError):
    """The attempt no longer owns its shard (the registry names another token)."""


class ScriptedWorker:
    """Shard ``i`` sleeps ``script[i][1]`` seconds (default 0.05); ``script[i][0]`` is ``ok``, or
    ``crash`` (the process dies at the end of the sleep) / ``hang`` (sleeps an hour) on the shard's
    first attempt only (a marker file in ``state_dir`` survives the restart). Like the real worker,
    an attempt checks the registry's token when it starts and before it reports the shard done."""

    def __init__(self, script: dict[int, tuple[str, float]], state_dir: str) -> None:
        # paid here, before ready(): what unpickling a ShardTask and a handle to the registry imports
        import pipeline.corpus.index
        import pipeline.run.attempts  # noqa: F401

        self.script, self.state_dir = script, Path(state_dir)

    def ready(self) -> int:
        return os.getpid()

    def _first_time(self, shard_id: int) -> bool:
        try:
            os.close(os.open(self.state_dir / f"fired-{shard_id}", os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False

    def run_attempt(self, task, token: str, registry, assigned: None = None) -> dict:
        import ray

        started = time.time()
        if ray.get(registry.owner.remote(task.shard_id)) != token:  # handed to another actor meanwhile
            raise Superseded(f"shard {task.shard_id}: attempt {token}")
        action, seconds = self.script.get(task.shard_id, ("ok", 0.05))
        fires = action != "ok" and self._first_time(task.shard_id)
        if fires and action == "hang":
            time.sleep(3600)
        time.sleep(seconds)
        if fires and action == "crash":
            os._exit(17)
        if ray.get(registry.owner.remote(task.shard_id)) != token:
            raise Superseded(f"shard {task.shard_id}: attempt {token}")
        return {"samples": task.count, "pid": os.getpid(), "token": token, "started": started, "ended": time.time()}
