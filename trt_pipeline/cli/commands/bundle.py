"""``bundle``: the folder (+ .tar) a Jetson / edge host needs to build its engines, or an Android app needs to
run the graphs on ONNX Runtime; ``bundle verify`` (``--run``: replay an ONNX Runtime bundle's reference calls)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.bundle.targets import TARGET_NAMES
from trt_pipeline.precisions import PRECISIONS

TargetChoice = Enum("TargetChoice", {name.replace("-", "_"): name for name in TARGET_NAMES}, type=str)


#: ``--precision`` choices: every registered precision (each target refuses the ones it does not run).
BundlePrecision = Enum("BundlePrecision", {p: p for p in PRECISIONS}, type=str)


def bundle_command(
    source: Annotated[str, typer.Argument(metavar="OUT|verify", help="The export folder, or `verify`.")],
    bundle: Annotated[Path | None, typer.Argument(metavar="[BUNDLE]", help="With `verify`: the bundle folder.")] = None,
    target: Annotated[TargetChoice | None, typer.Option("--target", help="Board / phone / host family.")] = None,
    precision: Annotated[Optional[BundlePrecision], typer.Option(
        "--precision", help="ONNX variant to ship [default: fp16 for TensorRT targets (fp16, int8, int4), int4 for "
                            "android-arm64 (int4, fp16, fp32)]."
    )] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Bundle folder to create.")] = None,
    tar: Annotated[bool, typer.Option("--tar/--no-tar", help="Also write BUNDLE.tar beside the folder.")] = True,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="ONNX Runtime intra-op threads for an ONNX Runtime bundle's reference calls.")] = None,
    run: Annotated[bool, typer.Option(
        "--run", help="With `verify` on an ONNX Runtime bundle: also replay its reference calls on this host's ONNX Runtime.")] = False,
) -> None:
    """`bundle OUT --target T [--precision P] --out BUNDLE` makes a bundle; `bundle verify BUNDLE [--run]` checks it."""
    from trt_pipeline.errors import ConfigError

    if source == "verify":
        _verify(bundle, run, threads)
        return
    if target is None or out is None:
        raise ConfigError("`autoglm-trt bundle OUT` needs --target and --out", hint=f"targets: {', '.join(TARGET_NAMES)}")
    from trt_pipeline.bundle.make import make_bundle

    made = make_bundle(Path(source), target.value, out, precision=precision.value if precision else None, tar=tar, threads=threads)
    tar_note = f"; {made.tar_path}" if made.tar_path is not None else ""
    typer.echo(f"{made.path} ({len(made.files)} files, target {made.target.name}, {made.precision}){tar_note}")


def _verify(bundle: Path | None, run: bool, threads: int | None) -> None:
    from trt_pipeline.bundle.verify import verify_bundle
    from trt_pipeline.errors import ConfigError

    if bundle is None:
        raise ConfigError("usage: autoglm-trt bundle verify BUNDLE [--run]")
    typer.echo(f"{bundle}: {verify_bundle(bundle)} files match SHA256SUMS")
    if run:
        from trt_pipeline.bundle.onnxruntime_bundle import replay_bundle
        from rich.console import Console

        from trt_pipeline.cli.render import replay_table

        report = replay_bundle(bundle, threads=threads, verify=False)  # verify_bundle just hashed every file
        Console().print(replay_table(report.checks))
        report.raise_for_failures()
        typer.echo(f"{bundle}: {len(report.checks)} outputs of {report.calls} reference calls match "
                   f"(cosine >= {report.floor}, onnxruntime {report.onnxruntime})")
