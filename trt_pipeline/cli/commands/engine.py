"""``build`` and ``inspect``: TensorRT engines from the ONNX variants (needs TensorRT and a GPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trt_pipeline.cli.options import (
    AsJson,
    ExportDir,
    HardwareCompat,
    HardwareCompatChoice,
    LegacyPrecisionFlags,
    MaxShapes,
    MinShapes,
    OptLevel,
    OptShapes,
    TimingCache,
    VersionCompatible,
    Workspace,
)
from trt_pipeline.config.build import DEFAULT_OPT_LEVEL, BuildOptions


def build_command(
    src: ExportDir,
    fp16: Annotated[bool, typer.Option("--fp16", help="Compile the fp16 ONNX variant (strongly typed).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Compile the int8 (Q/DQ) ONNX variant (strongly typed).")] = False,
    int4: Annotated[bool, typer.Option("--int4", help="Compile the int4 weight-only ONNX variant (TensorRT >= 10, strongly typed).")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="Compile the fp32 ONNX (the default, as trtexec).")] = False,
    workspace: Workspace = None,
    opt_level: OptLevel = DEFAULT_OPT_LEVEL,
    timing_cache: TimingCache = None,
    min_shapes: MinShapes = None,
    opt_shapes: OptShapes = None,
    max_shapes: MaxShapes = None,
    hardware_compat: HardwareCompat = HardwareCompatChoice.none,
    version_compatible: VersionCompatible = False,
    legacy_precision_flags: LegacyPrecisionFlags = False,
    print_trtexec: Annotated[bool, typer.Option(
        "--print-trtexec", help="Print the equivalent trtexec commands (same profiles) instead of building; "
        "needs no TensorRT or GPU.")] = False,
    trtexec_tensorrt: Annotated[int | None, typer.Option(
        "--trtexec-tensorrt", help="TensorRT major the printed trtexec is from (10 adds --stronglyTyped); "
        "default: the installed TensorRT, else 10.")] = None,
) -> None:
    """Build TensorRT engines DIR/engines/COMPONENT.PRECISION.engine (+ .engine.json manifests). Needs TensorRT and a GPU."""
    from trt_pipeline.config.build import resolve_precision
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.engine.tensorrt_import import require_tensorrt

    options = BuildOptions(
        workspace=workspace, opt_level=opt_level, timing_cache=timing_cache, min_shapes=min_shapes,
        opt_shapes=opt_shapes, max_shapes=max_shapes, hardware_compat=HardwareCompatChoice(hardware_compat).value,
        version_compatible=version_compatible, legacy_precision_flags=legacy_precision_flags,
    )
    cfg = BuildConfig.from_build_options(src, resolve_precision(fp16=fp16, int8=int8, fp32=fp32, int4=int4), options)
    if print_trtexec:
        from trt_pipeline.bundle.trtexec import print_trtexec as trtexec_text

        typer.echo(trtexec_text(cfg, trtexec_tensorrt))
        return
    ctx = require_tensorrt(cfg.device_index)
    for result in build_engines(cfg, ctx=ctx):
        typer.echo(str(result.engine_path))


def inspect_command(
    engine: Annotated[Path, typer.Argument(metavar="ENGINE", help="A COMPONENT.PRECISION.engine file (its .engine.json beside it).")],
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only read the manifest (works without TensorRT).")] = False,
    as_json: AsJson = False,
    max_layers: Annotated[int, typer.Option("--max-layers", help="Layers to list (0 = all).")] = 50,
) -> None:
    """Show an engine's manifest and, with TensorRT + GPU, its I/O, profiles and layers (engine inspector)."""
    from trt_pipeline.engine.inspect import inspect_engine
    from trt_pipeline.engine.manifest import summarize

    report = inspect_engine(engine, manifest_only=manifest_only)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    from trt_pipeline.cli.render import print_engine_report

    print_engine_report(engine, report, list(summarize(report.manifest)), max_layers)
