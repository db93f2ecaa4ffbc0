"""The CLI's own stderr lines, without the lines Ray's log monitor streams into this process.

The run tests share one Ray (tests/run/conftest.py) and it streams its workers' output to the driver
(``log_to_driver``, as ``smi-synth run`` wants for its users). A worker of an earlier test that died (an
injected start-up fault) can be reported seconds later, inside a later test's captured stderr. Ray's own
daemons speak there too (``(raylet) ... is over 95% full`` on a crowded disk). Those lines carry Ray's
``(ActorName pid=N)`` or ``(raylet)`` prefix, which the CLI never writes."""

from __future__ import annotations

import re

RAY_WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\((raylet|gcs_server|\w+ pid=\d+)(, ip=[\d.]+)?\)")


def cli_lines(err: str) -> list[str]:
    """The non-empty lines of ``err`` that are not Ray worker output streamed to the driver."""
    return [line for line in err.splitlines() if line.strip() and not RAY_WORKER_LINE.match(line)]
