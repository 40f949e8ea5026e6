"""Only the layout module spells artifact paths (issue 10: one artifact layout).

Every string literal in ``trt_pipeline/`` (f-string pieces included) is scanned with ``ast``;
docstrings and CLI ``help=`` texts are documentation for people and are not scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

import trt_pipeline

PACKAGE = Path(trt_pipeline.__file__).parent
PIECES = ("onnx/", "export.json", ".engine")
ALLOWED = {PACKAGE / "artifacts" / "layout.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _help_texts(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "help":
            found.update(id(n) for n in ast.walk(node.value))
    return found


def spelled_paths(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every non-documentation string literal holding an artifact path piece."""
    tree = ast.parse(source)
    skip = _docstrings(tree) | _help_texts(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if any(piece in node.value for piece in PIECES):
                hits.append((node.lineno, node.value))
    return hits


def test_the_scanner_finds_spelled_paths():
    code = 'x = out / "export.json"\ny = f"{out}/onnx/{p}"\nz = f"{c}.{p}.engine"\n'
    assert [line for line, _ in spelled_paths(code)] == [1, 2, 3]
    assert spelled_paths('"""export.json in a docstring"""\nopt(help="has export.json")\n') == []


def test_no_module_but_the_layout_spells_artifact_paths():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in ALLOWED:
            continue
        for line, literal in spelled_paths(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {literal!r}")
    assert offenders == [], "use trt_pipeline.artifacts.layout instead of spelling paths:\n" + "\n".join(offenders)
