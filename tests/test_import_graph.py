"""The import graph of ``pipeline`` and ``smi_core``: no cycle, and every import runs down the layers.

Imports inside functions and ``TYPE_CHECKING`` blocks count, and so does a string constant naming a
module of the two packages (``importlib.import_module`` tables such as the CLI's command map).

The layers, lowest first (a module may import its own unit and the units of lower layers only):

0. ``smi_core``: the algorithm, pure PyTorch;
1. the shared helpers ``pipeline.errors``, ``checks``, ``checksums``, ``console``;
2. ``pipeline.corpus``: the corpus format, storage seam and dataset card;
3. ``pipeline.teachers``;
4. ``pipeline.evaluate``: what a corpus teaches (distill, quantize);
5. ``pipeline.run``: spec, plan, workers, the Ray runner and the demo (which evaluates its corpus);
6. ``pipeline.hub`` (publish, previews) and ``pipeline.bench``, side by side;
7. ``pipeline.cli``;
8. ``pipeline`` itself: the package's lazy public API, naming modules of every layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "smi_core")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("smi_core",),
    ("pipeline.errors", "pipeline.checks", "pipeline.checksums", "pipeline.console"),
    ("pipeline.corpus",),
    ("pipeline.teachers",),
    ("pipeline.evaluate",),
    ("pipeline.run",),
    ("pipeline.hub", "pipeline.bench"),
    ("pipeline.cli",),
    ("pipeline",),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            out.add(node.value)
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def unit(module: str) -> str:
    """The layered unit of a module: ``smi_core``, ``pipeline`` itself, or ``pipeline.<first part>``."""
    parts = module.split(".")
    return "smi_core" if parts[0] == "smi_core" else ".".join(parts[:2])


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """``importer -> imported`` for each import of another unit that is not in a strictly lower layer, and
    ``importer: no layer`` for a module whose unit no layer names."""
    rank = {u: i for i, units in enumerate(layers) for u in units}
    bad = sorted(f"{m}: no layer" for m in graph if unit(m) not in rank)
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            if unit(m) in rank and unit(d) in rank and unit(d) != unit(m) and rank[unit(d)] >= rank[unit(m)]:
                bad.append(f"{m} -> {d}")
    return bad


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_runs_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_an_import_up_the_layers_is_found() -> None:
    graph = {"pipeline.run.runner": {"pipeline.hub.card", "pipeline.corpus.index", "pipeline.run.spec"},
             "pipeline.hub.card": {"pipeline.run.spec"}, "pipeline.hub.preview": {"pipeline.bench.loader"},
             "pipeline.corpus.index": {"pipeline.errors"}, "pipeline.run.spec": set(), "pipeline.errors": set(),
             "pipeline.bench.loader": set(), "pipeline.extra": set()}
    assert upward_imports(graph) == ["pipeline.extra: no layer", "pipeline.hub.preview -> pipeline.bench.loader",
                                     "pipeline.run.runner -> pipeline.hub.card"]


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, None),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_find_cycle_finds_what_is_there(graph, cycle) -> None:
    assert find_cycle(graph) == cycle


def test_function_local_import_counts(tmp_path: Path) -> None:
    src = tmp_path / "pipeline" / "x.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from pipeline.y import g\n    return g\n")
    assert _edges("pipeline.x", src, {"pipeline.x": src, "pipeline.y": src}) == {"pipeline.y"}
