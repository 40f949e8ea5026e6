"""Typer command-line interface.

Thin by design: each command turns options into a frozen config, makes one library call and
maps :class:`~trt_pipeline.errors.PipelineError` to a one-line message and an exit code. All
imports of heavy modules happen inside the commands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from trt_pipeline.errors import PipelineError

app = typer.Typer(
    name="autoglm-trt",
    help="Turn an AutoGLM-Phone-9B (GLM-4.1V) checkpoint into validated ONNX, FP16/INT8 ONNX and TensorRT engines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn PipelineErrors into a red message on stderr and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PipelineError as error:
            typer.secho(f"error: {error.render()}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=error.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """autoglm-trt command line."""
    if version:
        from trt_pipeline import __version__

        typer.echo(__version__)
        raise typer.Exit()


# --- commands are registered below, one block per stage -------------------------------------
