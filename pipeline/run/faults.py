"""Deliberate failures for testing fault tolerance (``SMI_SYNTH_INJECT_FAULT``); inert unless set.

Format: ``MODE:SHARD:TIMES:STATE_DIR`` with MODE ``crash`` (the worker process dies mid-shard),
``raise`` (the shard raises), ``hang`` (the shard never finishes), ``start`` (the worker's
constructor raises; SHARD is ignored), ``stall`` (the worker's start-up hangs without reporting
progress; SHARD is ignored) or ``slow`` (the worker's teacher load takes SHARD seconds longer, reporting
progress as a slow download does), TIMES a count or ``always``. Firing is counted with files in
STATE_DIR, so it works across the worker restarts it causes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "SMI_SYNTH_INJECT_FAULT"
MODES = ("crash", "raise", "hang", "start", "stall", "slow")
HANG_SECONDS = 3600.0
log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """The failure a ``raise`` fault produces."""


@dataclass(frozen=True)
class FaultPlan:
    mode: str
    shard_id: int
    times: int  # -1: always
    state_dir: str

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            return None
        try:
            mode, shard, times, state_dir = raw.split(":", 3)
            plan = cls(mode, int(shard), -1 if times == "always" else int(times), state_dir)
        except ValueError:
            raise ValueError(f"{ENV_VAR}: expected MODE:SHARD:TIMES:STATE_DIR, got {raw!r}") from None
        if plan.mode not in MODES:
            raise ValueError(f"{ENV_VAR}: mode must be one of {', '.join(MODES)}, got {plan.mode!r}")
        return plan

    def _claim(self) -> bool:
        """Count one firing; False once ``times`` firings have happened."""
        if self.times < 0:
            return True
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        for n in range(self.times):
            try:
                os.close(os.open(Path(self.state_dir) / f"fired-{self.shard_id}-{n}", os.O_CREAT | os.O_EXCL))
                return True
            except FileExistsError:
                continue
        return False

    def maybe_fire(self, shard_id: int) -> None:
        """Fail here if this plan targets ``shard_id`` and has firings left."""
        if self.mode in ("start", "stall", "slow") or shard_id != self.shard_id or not self._claim():
            return
        log.warning("injected %s fault in shard %d", self.mode, shard_id)
        if self.mode == "crash":
            os._exit(17)
        if self.mode == "hang":
            time.sleep(HANG_SECONDS)
        raise InjectedFault(f"injected fault in shard {shard_id}")

    def maybe_fire_at_start(self) -> None:
        """The ``start`` mode: the worker's constructor fails (e.g. a teacher that cannot be downloaded);
        ``stall``: it hangs, reporting nothing (a frozen process)."""
        if self.mode == "start" and self._claim():
            raise InjectedFault("injected start-up fault: the teacher could not be loaded")
        if self.mode == "stall" and self._claim():
            log.warning("injected start-up stall")
            time.sleep(HANG_SECONDS)

    def teacher_load_delay(self) -> float:
        """The ``slow`` mode: seconds the teacher load is to take longer (0 for other modes)."""
        return float(self.shard_id) if self.mode == "slow" and self._claim() else 0.0
