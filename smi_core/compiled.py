"""The compiled path of one inversion step: ``torch.compile`` of a step function, one graph per shape.

A step's shapes change only at the schedule's stops (and between batch sizes), so the step is compiled
with ``dynamic=False``: each (batch, kept-token count, saliency) key gets its own static graph, which is
what CUDA graphs need, and nothing recompiles between stops. Dynamo's recompile limit (8 graphs per
function by default) would silently send the ninth key back to eager, so calls run with a limit of
:data:`MAX_GRAPHS`. ``"reduce-overhead"`` replays CUDA graphs on CUDA: each step marks a new
cudagraph step and its outputs are cloned, since the next replay overwrites the graph's own buffers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from smi_core.config import CompileMode

MAX_GRAPHS = 64  # compiled graphs one step function may hold (per process): 2 batch sizes x 9 keys, many teachers


class CompiledStep:
    """``fn`` under ``torch.compile(mode=mode, dynamic=False, fullgraph=True)``; call it like ``fn``.

    ``backend`` other than Inductor (a name or a dynamo backend callable) ignores ``mode``: tests use it
    to check the capture (one graph per shape, no graph break) without compiling C++ kernels.
    """

    def __init__(self, fn: Callable[..., Any], mode: CompileMode, backend: str | Callable[..., Any] = "inductor") -> None:
        if mode == "off":
            raise ValueError("compile: 'off' is the eager step; call the step function itself")
        self.mode = mode
        self._backend_inductor = backend == "inductor"
        options: dict[str, Any] = {"mode": mode} if backend == "inductor" else {}
        self._fn = torch.compile(fn, backend=backend, dynamic=False, fullgraph=True, **options)
        config = torch._dynamo.config  # imported here, not with smi_core: only the compiled path pays for it
        self._limit = {"recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit": MAX_GRAPHS}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = _distinct(args)
        cudagraphs = self.mode == "reduce-overhead" and self._backend_inductor and torch.cuda.is_available()
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch._dynamo.config.patch(**self._limit):  # cache_size_limit before torch 2.6
            out = self._fn(*args, **kwargs)
        if cudagraphs:  # the next replay overwrites the graph's output buffers
            out = tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in out)
        return out


def _distinct(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with a repeated tensor replaced by a (differentiable) clone: dynamo compiles a separate graph
    for aliased inputs (the roll/flip view IS the pixels when the draw is the identity), which would add a
    compile mid-run at every kept-token count."""
    seen: set[int] = set()
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.clone() if id(a) in seen else a
            seen.add(id(a))
        out.append(a)
    return tuple(out)


@functools.cache
def compiled_step(fn: Callable[..., Any], mode: CompileMode) -> CompiledStep:
    """One :class:`CompiledStep` per (function, mode) per process, so graphs compile once and are reused."""
    return CompiledStep(fn, mode)
