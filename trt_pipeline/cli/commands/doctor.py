"""``doctor``: what this machine can do with TensorRT (pass/fail lines with what to do)."""

from __future__ import annotations

import json

import typer

from trt_pipeline.cli.options import AsJson


def doctor_command(as_json: AsJson = False) -> None:
    """Check TensorRT, CUDA, the driver and the GPU; say whether build / run / CUDA graphs are possible.

    Exit code 0 when engines can be built and run here, 6 when not (each FAIL line says what to do).
    """
    from trt_pipeline.engine.doctor import diagnose

    report = diagnose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.secho(line, fg=typer.colors.GREEN if line.startswith("PASS") else typer.colors.RED)
        typer.secho(report.verdict(), fg=typer.colors.RED if report.exit_code else typer.colors.GREEN)
    raise typer.Exit(report.exit_code)
