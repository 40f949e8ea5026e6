"""No function in the package grows past 80 lines (the structure issue's bound).

Long functions were where the review found mixed concerns (export, compare, int8 quantization);
this keeps them from coming back. The five longest are printed on failure.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "trt_pipeline"
MAX_LINES = 80


def function_lengths() -> list[tuple[int, str]]:
    rows = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def test_longest_function_is_under_the_bound() -> None:
    rows = function_lengths()
    assert rows, "no functions found"
    longest = rows[:5]
    assert longest[0][0] < MAX_LINES, "functions over the bound:\n" + "\n".join(f"{n:4d} {where}" for n, where in longest)
