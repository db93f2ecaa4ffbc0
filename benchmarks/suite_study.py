"""What the studies built on ``quality_suite.run_one`` share (``class_count.py``, ``budget_study.py``): their
common flags, the part of the suite's command line those flags give, the results folder, and writing the
study's document."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import quality_suite  # benchmarks/quality_suite.py: the commit and time every result records
from pipeline.console import emit_json


def add_common_arguments(p: argparse.ArgumentParser, study: str) -> None:
    """The flags every suite study takes; ``study`` names its result files in the help."""
    p.add_argument("--recipe", default="project", help="inversion recipe, as quality_suite's --recipe")
    p.add_argument("--eval-images", type=int, default=0, help="cap on held-out images per teacher (0: all)")
    p.add_argument("--out", type=Path, help="results folder (default: a temporary folder, removed)")
    p.add_argument("--cache", type=Path, help="teacher cache root (default: the suite's; --quick: OUT/teachers-quick)")
    p.add_argument("--teacher-steps", type=int, default=0, help="train the teachers for this many steps (0: their recipe)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel-students", action="store_true", help="distil the corpora of a suite run at once")
    p.add_argument("--json", type=Path, help=f"write the study here (e.g. benchmarks/results/{study}.json)")
    p.add_argument("--plot", type=Path, help=f"write the plot here (e.g. docs/{study}.png)")
    p.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} cores",
                   help="the machine, in words, for the JSON record")
    p.add_argument("--note", action="append", default=[], help="a line added to the document's notes (repeatable)")


def suite_flags(args: argparse.Namespace) -> list[str]:
    """``quality_suite``'s flags that the common arguments give (the study adds its sizes and ``--out``)."""
    argv = ["--no-quant", "--eval-images", str(args.eval_images), "--threads", str(args.threads),
            "--recipe", args.recipe]
    if args.cache is not None:
        argv += ["--cache", str(args.cache)]
    if args.teacher_steps:
        argv += ["--teacher-steps", str(args.teacher_steps)]
    if args.parallel_students:
        argv.append("--parallel-students")
    return argv


def open_out(args: argparse.Namespace, prefix: str) -> tempfile.TemporaryDirectory[str] | None:
    """Make ``args.out`` (a temporary folder, returned for cleanup, when none was given); with ``--quick`` the
    tiny teachers get their own cache under it, so they never replace the real cached ones."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix) if args.out is None else None
    args.out = Path(args.out or tmp.name)  # type: ignore[union-attr]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick and args.cache is None:
        args.cache = args.out / "teachers-quick"
    return tmp


def record(fmt: str, script: str, argv: list[str] | None, args: argparse.Namespace) -> dict[str, Any]:
    """The fields every study document opens with: format, the command line of ``benchmarks/<script>.py``
    (``argv``, or this process's), commit, date, machine and plot."""
    return {"format": fmt, "command": shlex.join(["python", f"benchmarks/{script}.py",
                                                  *(argv if argv is not None else sys.argv[1:])]),
            "commit": quality_suite.git_commit(), "date": quality_suite.utc_now(), "machine": args.machine,
            "plot": str(args.plot) if args.plot is not None else None}


def publish(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """Write ``doc``, with the ``--note`` lines added to its notes, to ``--json`` (when given) and print it as the
    last stdout line."""
    if args.note:
        doc["notes"] = [*doc.get("notes", []), *args.note]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    emit_json(doc)
