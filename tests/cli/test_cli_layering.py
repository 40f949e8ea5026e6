"""The CLI is a layer on top: tables are rendered only in ``trt_pipeline/cli``, and no library module imports it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "trt_pipeline"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _library_modules() -> list[Path]:
    modules = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]]
    assert len(modules) > 50  # the walk really sees the package
    return modules


def test_no_library_module_imports_the_cli():
    offenders = [str(p.relative_to(PACKAGE)) for p in _library_modules()
                 if any(name == "trt_pipeline.cli" or name.startswith("trt_pipeline.cli.") for name in _imports(p))]
    assert offenders == []


def test_rich_tables_are_rendered_only_by_the_cli():
    offenders = [str(p.relative_to(PACKAGE)) for p in _library_modules() if "rich.table" in _imports(p)]
    assert offenders == []
    assert "rich.table" in _imports(PACKAGE / "cli" / "render.py")


def test_every_command_is_registered_once_by_name():
    from trt_pipeline.cli.app import COMMANDS, app

    registered = [info.name for info in app.registered_commands]
    assert registered == list(COMMANDS) and len(set(registered)) == len(registered)
    assert [group.name for group in app.registered_groups] == ["precision"]
