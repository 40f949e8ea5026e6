"""No import cycles inside ``trt_pipeline`` (issue 10), function-local imports included.

A cycle hidden by a function-local import still couples two modules both ways (neither can be
understood, tested or moved without the other), so every ``import`` statement counts, wherever it
stands. The graph is read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trt_pipeline

ROOT = Path(trt_pipeline.__file__).parent
PACKAGE = "trt_pipeline"


def _modules() -> dict[str, Path]:
    modules = {}
    for file in ROOT.rglob("*.py"):
        parts = list(file.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def _imported(node: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the in-package modules it imports (the module itself, not its parent packages)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            for target in _imported(node, name, file.name == "__init__.py", modules):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith(PACKAGE) and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    source = "def f():\n    from trt_pipeline.fixtures import presets\n"
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom))
    assert _imported(node, "trt_pipeline.x", False, _modules()) == ["trt_pipeline.fixtures.presets"]


def test_fixtures_and_model_code_are_apart():
    """Model code never imports the test fixtures; presets no longer import the tokenizer factory."""
    graph = import_graph()
    model_code = [name for name in graph if not name.startswith(("trt_pipeline.fixtures", "trt_pipeline.cli"))
                  and name != "trt_pipeline.pipeline.stages"]  # the pipeline's demo checkpoint stage
    assert [m for m in model_code if any(t.startswith("trt_pipeline.fixtures") for t in graph[m])] == []
    assert "trt_pipeline.fixtures.tokenizer_factory" not in graph["trt_pipeline.fixtures.presets"]


# The one cycle left on main when this test landed; the artifact-layout change (read_export_manifest
# moves out of export/exporter.py) removes it, and then this marker no longer applies (the condition
# is false) and the test must pass. Any other cycle fails it now.
_LAYOUT_PENDING = [["trt_pipeline.export.exporter", "trt_pipeline.export.validate"]]


@pytest.mark.xfail(strongly_connected(import_graph()) == _LAYOUT_PENDING, strict=True,
                   reason="export.exporter <-> export.validate until the artifact layout lands")
def test_no_import_cycles_in_the_package():
    cycles = strongly_connected(import_graph())
    assert cycles == [], "import cycles (each list is a set of modules that import each other): " + str(cycles)
