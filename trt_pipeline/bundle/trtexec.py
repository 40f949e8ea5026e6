"""``trtexec`` commands equivalent to ``autoglm-trt build``, generated from the same build plan.

Flags used, all from trtexec's documented option list (NVIDIA TensorRT documentation, "Command-Line
Programs" / trtexec, https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/command-line-programs.html,
and ``trtexec --help`` / ``samples/common/sampleOptions.cpp`` of NVIDIA/TensorRT):
``--onnx``, ``--saveEngine``, ``--minShapes/--optShapes/--maxShapes`` (one triple per optimization
profile, in profile order), ``--memPoolSize=workspace:<N>M``, ``--timingCacheFile``,
``--builderOptimizationLevel``, ``--profilingVerbosity=detailed``, ``--skipInference`` and, on
TensorRT 10.x, ``--stronglyTyped`` (or ``--fp16``/``--int8 --calib`` on the legacy flag path).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from trt_pipeline.engine.builder import BuildPlan  # noqa: F401 - type of trtexec_commands' plan
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.engine.profiles import Profile

#: Every flag :func:`trtexec_commands` may emit (checked by the tests against the documented list).
TRTEXEC_FLAGS = frozenset({
    "--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--memPoolSize", "--timingCacheFile",
    "--builderOptimizationLevel", "--profilingVerbosity", "--skipInference", "--stronglyTyped", "--fp16", "--int8",
    "--calib",
})


def shape_spec(profile: Profile, kind: str) -> str:
    """``name:1x2x3,other:4x5`` for the ``kind`` (min/opt/max) shapes of ``profile``."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(rng, kind))}" for name, rng in profile.shapes.items())


def _rel(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def trtexec_commands(plan: BuildPlan, cfg: BuildConfig, *, strongly_typed_flag: bool,
                     root: Path | None = None, trtexec: str = "trtexec") -> list[list[str]]:
    """One argv per engine of ``plan`` (paths relative to ``root`` when given)."""
    commands = []
    for component in plan.components:
        argv = [trtexec, f"--onnx={_rel(component.source.onnx_path, root)}",
                f"--saveEngine={_rel(component.engine_path, root)}"]
        for profile in component.profiles:
            argv += [f"--{kind}Shapes={shape_spec(profile, kind)}" for kind in ("min", "opt", "max")]
        if cfg.workspace is not None:
            argv.append(f"--memPoolSize=workspace:{max(1, cfg.workspace >> 20)}M")
        argv += [f"--timingCacheFile={_rel(cfg.timing_cache_path, root)}", f"--builderOptimizationLevel={cfg.opt_level}",
                 "--profilingVerbosity=detailed", "--skipInference"]
        if cfg.legacy_precision_flags:  # TensorRT 10.x weakly typed path from the fp32 ONNX
            argv.append("--fp16")
            if cfg.precision == "int8" and plan.inputs.calibration_cache is not None:
                argv += ["--int8", f"--calib={_rel(plan.inputs.calibration_cache, root)}"]
        elif strongly_typed_flag:
            argv.append("--stronglyTyped")
        commands.append(argv)
    return commands


def format_commands(commands: Sequence[Sequence[str]]) -> str:
    """Shell text, one command per line (quoted)."""
    return "\n".join(shlex.join(argv) for argv in commands)


def installed_tensorrt_major(default: int = 10) -> int:
    """Major of the importable TensorRT, else ``default`` (trtexec flags for a machine without it)."""
    from trt_pipeline.engine.tensorrt_import import TensorRTVersion, import_tensorrt
    from trt_pipeline.errors import TensorRTUnavailableError

    try:
        return TensorRTVersion.parse(import_tensorrt().__version__).major
    except (TensorRTUnavailableError, ValueError):
        return default


def print_trtexec(cfg: BuildConfig, tensorrt_major: int | None = None) -> str:
    """``autoglm-trt build --print-trtexec``: the commands for ``cfg`` (no TensorRT or GPU needed)."""
    from trt_pipeline.engine.builder import plan_build

    major = tensorrt_major if tensorrt_major is not None else installed_tensorrt_major()
    return format_commands(trtexec_commands(plan_build(cfg), cfg, strongly_typed_flag=major < 11))
