"""The import graph of ``pipeline`` and ``smi_core`` has no cycle, counting every import statement.

Imports inside functions and ``TYPE_CHECKING`` blocks count, and so does a string constant naming a
module of the two packages (``importlib.import_module`` tables such as the CLI's command map).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "smi_core")


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


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_smi_core_imports_nothing_of_pipeline() -> None:
    graph = import_graph()
    leaks = sorted((m, d) for m, deps in graph.items() if m.startswith("smi_core") for d in deps if d.startswith("pipeline"))
    assert leaks == []


def test_toy_teacher_does_not_import_distillation() -> None:
    graph = import_graph()
    assert not {d for d in graph["pipeline.teachers.toy"] if d.startswith("pipeline.evaluate")}


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


def test_corpus_imports_no_other_subpackage() -> None:
    graph = import_graph()
    others = ("pipeline.run", "pipeline.teachers", "pipeline.evaluate", "pipeline.hub", "pipeline.bench")
    leaks = sorted((m, d) for m, deps in graph.items() if m.startswith("pipeline.corpus")
                   for d in deps if d.startswith(others))
    assert leaks == []
