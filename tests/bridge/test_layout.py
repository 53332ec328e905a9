"""The layout's rules, checked on the source: no part of ``bridge`` depends on
itself through another, and no hand-written module grows past 400 lines.

A part is a module or subpackage directly below ``bridge`` (``bridge.kafka``,
``bridge.flow``); ``bridge.wire`` is generated and left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bridge"
MAX_LINES = 400


def _modules() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if "wire" not in path.relative_to(PACKAGE).parts]


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    """The parts a module imports, wherever the import sits (function-level too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names += [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
    parts = set()
    for name in names:
        pieces = name.split(".")
        if pieces[0] == "bridge" and len(pieces) > 1:
            part = pieces[1]
            if (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").is_file():
                parts.add(part)
    return parts - {"wire"}


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _modules():
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        part = _part(path)
        graph.setdefault(part, set()).update(_imported_parts(path) - {part})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports() -> None:
    graph = part_graph()
    # cli imports the operator commands inside a function, to keep `bridge run` lean.
    assert "app" in graph["cli"]
    assert len(graph) > 10


def test_no_part_of_the_bridge_depends_on_itself() -> None:
    cycle = find_cycle(part_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"
