"""The ``autoglm-trt`` Typer app: the command table and the ONE place failures become exit codes.

Commands are thin: options -> a frozen config -> one library call. They never catch errors; the
app's command group (:class:`ErrorHandlingGroup`) does, for every command and sub-command:

- :class:`~trt_pipeline.errors.PipelineError` -> ``error: <message>`` on stderr, the error's exit code;
- a config built in code with a wrong type (pydantic ``ValidationError``) -> ``ConfigError``, exit 2;
- ``PermissionError`` -> the path and what to do, exit 2; disk full (ENOSPC) -> ``DiskSpaceError``, exit 8;
- Ctrl-C -> ``interrupted``, exit 130 (``finally`` blocks and context managers, i.e. lock release and
  removal of temporary outputs, have already run while the interrupt propagated);
- anything else is a bug: one line naming it plus the path of a saved traceback file, exit 1.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from trt_pipeline.cli.commands import bundle, calibration, checkpoint, compare, doctor, engine, export, pipeline, precision, serve
from trt_pipeline.config.base import config_error
from trt_pipeline.errors import INTERRUPTED_EXIT_CODE, PipelineError, from_os_error

#: Exit code of an unexpected failure (a bug): its traceback is saved to a file.
UNEXPECTED_EXIT_CODE = 1


def as_pipeline_error(error: BaseException) -> PipelineError | None:
    """The typed error for a failure the user can act on; None for a bug."""
    if isinstance(error, PipelineError):
        return error
    if isinstance(error, ValidationError):
        return config_error(error)
    if isinstance(error, OSError):
        return from_os_error(error)
    return None


def crash_folder() -> Path:
    """Where tracebacks of unexpected failures go: ``$TMPDIR/autoglm-trt`` (kept across runs, never in OUT)."""
    return Path(tempfile.gettempdir()) / "autoglm-trt"


def save_traceback(error: BaseException) -> Path:
    """Write ``error``'s full traceback to a new file under :func:`crash_folder` and return its path."""
    folder = crash_folder()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"crash-{stamp}-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return Path(name)


#: 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe
BROKEN_PIPE_EXIT_CODE = 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def report_failure(error: BaseException) -> int:
    """Print one message for ``error`` on stderr and return the process exit code."""
    if isinstance(error, KeyboardInterrupt):
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        return INTERRUPTED_EXIT_CODE
    if isinstance(error, BrokenPipeError):  # `autoglm-trt ... | head`: the reader left, as with SIGPIPE
        _silence_stdout()
        return BROKEN_PIPE_EXIT_CODE
    typed = as_pipeline_error(error)
    if typed is not None:
        typer.secho(f"error: {typed.render()}", fg=typer.colors.RED, err=True)
        return typed.exit_code
    summary = (str(error).strip().splitlines() or [""])[0]
    try:
        where = f"traceback saved to {save_traceback(error)}"
    except OSError as failure:  # even the temp folder is unwritable: say so, still one line
        where = f"traceback could not be saved ({failure})"
    typer.secho(f"error: unexpected {type(error).__name__}: {summary} ({where}; please report it)",
                fg=typer.colors.RED, err=True)
    return UNEXPECTED_EXIT_CODE


class ErrorHandlingGroup(TyperGroup):
    """The root command group: every (sub-)command runs inside its ``invoke``, so one handler covers all."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException):  # --help, usage errors, typer.Exit: Typer's own handling
            raise
        except (Exception, KeyboardInterrupt) as error:
            raise Exit(code=report_failure(error)) from None


app = typer.Typer(
    name="autoglm-trt",
    cls=ErrorHandlingGroup,
    help="Turn an AutoGLM-Phone-9B (GLM-4.1V) checkpoint into validated ONNX, FP16/INT8 ONNX and TensorRT engines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """autoglm-trt command line."""
    if version:
        from trt_pipeline import __version__

        typer.echo(__version__)
        raise typer.Exit()


#: The command table: name -> callback, in the order of the flow (checkpoint -> export -> ... -> bench).
COMMANDS = {
    "init-checkpoint": checkpoint.init_checkpoint_command,
    "info": checkpoint.info_command,
    "export": export.export_command,
    "simplify": export.simplify_command,
    "validate": export.validate_command,
    "generate": export.generate_command,
    "calib-import": calibration.calib_import_command,
    "doctor": doctor.doctor_command,
    "build": engine.build_command,
    "inspect": engine.inspect_command,
    "bundle": bundle.bundle_command,
    "compare": compare.compare_command,
    "pipeline": pipeline.pipeline_command,
    "bench": pipeline.bench_command,
    "serve": serve.serve_command,
}
for _name, _callback in COMMANDS.items():
    app.command(_name)(_callback)
app.add_typer(precision.precision_app, name="precision")
