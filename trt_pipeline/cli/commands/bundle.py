"""``bundle``: the folder (+ .tar) a Jetson / edge host needs to build its engines; ``bundle verify``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trt_pipeline.bundle.targets import BUNDLE_PRECISIONS, TARGETS

TargetChoice = Enum("TargetChoice", {name.replace("-", "_"): name for name in TARGETS}, type=str)


#: ``--precision`` choices: the bundle's precisions (every registered one but fp32).
BundlePrecision = Enum("BundlePrecision", {p: p for p in BUNDLE_PRECISIONS}, type=str)


def bundle_command(
    source: Annotated[str, typer.Argument(metavar="OUT|verify", help="The export folder, or `verify`.")],
    bundle: Annotated[Path | None, typer.Argument(metavar="[BUNDLE]", help="With `verify`: the bundle folder.")] = None,
    target: Annotated[TargetChoice | None, typer.Option("--target", help="Board / host family.")] = None,
    precision: Annotated[BundlePrecision, typer.Option("--precision", help="ONNX variant to ship.")] = BundlePrecision.fp16,
    out: Annotated[Path | None, typer.Option("--out", help="Bundle folder to create (a .tar is written beside it).")] = None,
) -> None:
    """`bundle OUT --target T [--precision P] --out BUNDLE` makes a bundle; `bundle verify BUNDLE` checks it."""
    from trt_pipeline.errors import ConfigError

    if source == "verify":
        from trt_pipeline.bundle.verify import verify_bundle

        if bundle is None:
            raise ConfigError("usage: autoglm-trt bundle verify BUNDLE")
        typer.echo(f"{bundle}: {verify_bundle(bundle)} files match SHA256SUMS")
        return
    if target is None or out is None:
        raise ConfigError("`autoglm-trt bundle OUT` needs --target and --out", hint=f"targets: {', '.join(TARGETS)}")
    from trt_pipeline.bundle.make import make_bundle

    made = make_bundle(Path(source), target.value, out, precision=precision.value)
    typer.echo(f"{made.path} ({len(made.files)} files, target {made.target.name}, {made.precision}); {made.tar_path}")
