"""Typer command-line interface (``autoglm-trt``): :mod:`.app` (commands, error handling),
:mod:`.options` (shared option types), :mod:`.commands` (one module per command group) and
:mod:`.render` (every table printed). ``[project.scripts] autoglm-trt = "trt_pipeline.cli:app"``.
"""

from trt_pipeline.cli.app import app

__all__ = ["app"]
