"""Terminal output owned by the CLI: the one-line JSON result and progress bars."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(obj: dict[str, Any]) -> None:
    """Print ``obj`` as one JSON line on stdout (the contract: the last stdout line of ``--json``)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def progress(total: int | None, desc: str, unit: str = "it", disable: bool = False):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal and ``disable`` is set)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)
