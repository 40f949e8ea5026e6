"""``trtexec`` commands equivalent to ``autoglm-trt build``, generated from the same build plan.

Every flag emitted here is checked against the flags trtexec documents in the release a target runs.
Source of the table below: the help text (``BaseModelOptions``/``ModelOptions``/``BuildOptions``/
``SystemOptions``/``InferenceOptions::help``, not the safety builder's) in ``samples/common/sampleOptions.cpp``
of https://github.com/NVIDIA/TensorRT at

* ``v10.3.0`` = c5b9de37f7ef9034e2efc621c664145c7c12436e (JetPack 6 ships TensorRT 10.3),
* ``v10.16`` = 52399f555c2f80cb690a4a558b604e1a5f227e7c (newest 10.x tag),
* ``v11.0`` = 771d8efdf7f9d7b1eeb0864eb05d4dd8a7755bb5,
* ``main`` = a892d22267d9cd2dedc1a0893e6892ac901f6d3d (TensorRT 11.1, the newest published; JetPack 7's
  11.4 has no tag in that repository, so ``11.4`` is held to what both 11.0 and 11.1 document).

``tools/trtexec_flags.py --repo TensorRT v10.3.0 v10.16 v11.0 main`` regenerates the lists. A TensorRT
line (``BundleTarget.tensorrt``) is held to the flags documented by every release that bounds it.

Value syntax, from the same help text and parser: shapes ``name:1x2x3[,name:...]``; several profiles need
``--profile=N`` before each ``--minShapes/--optShapes/--maxShapes`` triple ("Multiple --minShapes/
--optShapes/--maxShapes without --profile are not allowed"); ``--memPoolSize=workspace:<size>`` with the
base-2 suffixes K/M/G (MiB without one, decimals allowed); ``--hardwareCompatibilityLevel=none|ampere+``
(``sameComputeCapability`` from 10.16 and in 11.x); ``--profilingVerbosity=layer_names_only|detailed|none``.

``--noTF32`` matches the Python build (Polygraphy's ``CreateConfig`` clears TF32); ``--stronglyTyped`` is
emitted on 10.x only (11.x documents it as a deprecated no-op: every network is strongly typed).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trt_pipeline.engine.builder import BuildPlan  # noqa: F401 - type of trtexec_commands' plan
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.engine.profiles import Profile
from trt_pipeline.errors import ConfigError

SOURCE_REPO = "https://github.com/NVIDIA/TensorRT"
SOURCE_FILE = "samples/common/sampleOptions.cpp"


@dataclass(frozen=True)
class TrtexecRelease:
    """The build-related flags one release's trtexec documents, and its hardware compatibility modes."""

    ref: str
    commit: str
    flags: frozenset[str]
    hardware_modes: frozenset[str]


_COMMON = ("--onnx", "--saveEngine", "--profile", "--minShapes", "--optShapes", "--maxShapes", "--memPoolSize",
           "--timingCacheFile", "--builderOptimizationLevel", "--profilingVerbosity", "--skipInference", "--noTF32",
           "--stronglyTyped", "--hardwareCompatibilityLevel", "--versionCompatible", "--vc", "--device")
_WEAK_TYPING = ("--fp16", "--int8", "--int4", "--calib", "--calibProfile")  # 10.x only: removed in 11.0

#: Release -> documented flags (restricted to the ones this generator knows; see the module docstring).
TRTEXEC_RELEASES: dict[str, TrtexecRelease] = {
    "v10.3.0": TrtexecRelease("v10.3.0", "c5b9de37f7ef9034e2efc621c664145c7c12436e",
                              frozenset(_COMMON + _WEAK_TYPING), frozenset({"none", "ampere+"})),
    "v10.16": TrtexecRelease("v10.16", "52399f555c2f80cb690a4a558b604e1a5f227e7c", frozenset(_COMMON + _WEAK_TYPING),
                             frozenset({"none", "ampere+", "sameComputeCapability"})),
    "v11.0": TrtexecRelease("v11.0", "771d8efdf7f9d7b1eeb0864eb05d4dd8a7755bb5", frozenset(_COMMON),
                            frozenset({"none", "ampere+", "sameComputeCapability"})),
    "main": TrtexecRelease("main", "a892d22267d9cd2dedc1a0893e6892ac901f6d3d", frozenset(_COMMON),
                           frozenset({"none", "ampere+", "sameComputeCapability"})),
}

#: TensorRT line (``BundleTarget.tensorrt`` or an installed major) -> the releases that bound it.
TENSORRT_LINES: dict[str, tuple[str, ...]] = {
    "10.3": ("v10.3.0",),
    "10": ("v10.3.0", "v10.16"),
    "11": ("v11.0", "main"),
    "11.4": ("v11.0", "main"),
}

#: Our ``--hardware-compat`` names -> trtexec's ``--hardwareCompatibilityLevel`` modes.
HARDWARE_MODES = {"none": "none", "ampere+": "ampere+", "same-cc": "sameComputeCapability"}

_FILE, _SHAPES = r".+", r"[^:,]+:\d+(x\d+)*(,[^:,]+:\d+(x\d+)*)*"
#: Value syntax per flag (None: the flag takes no value).
FLAG_SYNTAX: dict[str, str | None] = {
    "--onnx": _FILE, "--saveEngine": _FILE, "--timingCacheFile": _FILE, "--calib": _FILE,
    "--profile": r"\d+", "--minShapes": _SHAPES, "--optShapes": _SHAPES, "--maxShapes": _SHAPES,
    "--memPoolSize": r"workspace:\d+(\.\d+)?[KMG]?", "--builderOptimizationLevel": r"[0-5]",
    "--profilingVerbosity": r"layer_names_only|detailed|none", "--device": r"\d+",
    "--hardwareCompatibilityLevel": r"none|ampere\+|sameComputeCapability",
    "--skipInference": None, "--noTF32": None, "--stronglyTyped": None, "--versionCompatible": None,
    "--fp16": None, "--int8": None, "--calibProfile": r"\d+",
}

#: Every flag :func:`trtexec_commands` may emit, on any TensorRT line.
TRTEXEC_FLAGS = frozenset(FLAG_SYNTAX)


def documented_flags(tensorrt: str) -> frozenset[str]:
    """Flags documented by every release bounding the TensorRT line ``tensorrt`` (``"10.3"``, ``"11"``...)."""
    return frozenset.intersection(*(TRTEXEC_RELEASES[ref].flags for ref in _releases(tensorrt)))


def hardware_modes(tensorrt: str) -> frozenset[str]:
    return frozenset.intersection(*(TRTEXEC_RELEASES[ref].hardware_modes for ref in _releases(tensorrt)))


def _releases(tensorrt: str) -> tuple[str, ...]:
    if tensorrt not in TENSORRT_LINES:
        raise ConfigError(f"no trtexec flag table for TensorRT {tensorrt}; known: {', '.join(TENSORRT_LINES)}")
    return TENSORRT_LINES[tensorrt]


def check_argv(argv: Sequence[str], tensorrt: str) -> None:
    """ConfigError unless every flag of ``argv[1:]`` is documented for ``tensorrt`` with a valid value."""
    allowed = documented_flags(tensorrt)
    for arg in argv[1:]:
        flag, has_value, value = arg.partition("=")
        syntax = FLAG_SYNTAX.get(flag, "")
        if flag not in allowed or (syntax is None) == bool(has_value) or (syntax and not re.fullmatch(syntax, value)):
            raise ConfigError(f"{arg!r} is not a flag trtexec of TensorRT {tensorrt} documents with that value "
                              f"(source: {SOURCE_REPO} {SOURCE_FILE} at {', '.join(_releases(tensorrt))})")
        if flag == "--hardwareCompatibilityLevel" and value not in hardware_modes(tensorrt):
            raise ConfigError(f"trtexec of TensorRT {tensorrt} has no --hardwareCompatibilityLevel={value}; "
                              f"it documents {', '.join(sorted(hardware_modes(tensorrt)))}")


def shape_spec(profile: Profile, kind: str) -> str:
    """``name:1x2x3,other:4x5`` for the ``kind`` (min/opt/max) shapes of ``profile``."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(rng, kind))}" for name, rng in profile.shapes.items())


def pool_size(nbytes: int) -> str:
    """``--memPoolSize`` size: whole MiB as ``NM``, else the exact fraction of a MiB (trtexec rounds to bytes)."""
    return f"{nbytes >> 20}M" if nbytes % (1 << 20) == 0 else f"{nbytes / (1 << 20)!r}M"


def _rel(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _build_flags(cfg: BuildConfig, plan: BuildPlan, tensorrt: str, root: Path | None, profiles: int) -> list[str]:
    """The flags of one engine after its ONNX, engine path and ``profiles`` profiles."""
    argv = [f"--memPoolSize=workspace:{pool_size(cfg.workspace)}"] if cfg.workspace is not None else []
    argv += [f"--timingCacheFile={_rel(cfg.timing_cache_path, root)}", f"--builderOptimizationLevel={cfg.opt_level}",
             "--profilingVerbosity=detailed", "--noTF32", "--skipInference"]
    if cfg.hardware_compat != "none":
        argv.append(f"--hardwareCompatibilityLevel={HARDWARE_MODES[cfg.hardware_compat]}")
    if cfg.version_compatible:
        argv.append("--versionCompatible")
    if cfg.device_index:
        argv.append(f"--device={cfg.device_index}")
    if cfg.legacy_precision_flags:  # TensorRT 10.x weakly typed path from the fp32 ONNX
        argv.append("--fp16")
        if cfg.precision == "int8" and plan.inputs.calibration_cache is not None:
            # the Python build calibrates on the last profile (Polygraphy's CreateConfig); trtexec's default is 0
            argv += ["--int8", f"--calib={_rel(plan.inputs.calibration_cache, root)}", f"--calibProfile={profiles - 1}"]
    elif int(tensorrt.split(".")[0]) < 11:  # 10.x: weakly typed unless asked; 11.x: always strongly typed
        argv.append("--stronglyTyped")
    return argv


def trtexec_commands(plan: BuildPlan, cfg: BuildConfig, *, tensorrt: str,
                     root: Path | None = None, trtexec: str = "trtexec") -> list[list[str]]:
    """One argv per engine of ``plan`` for trtexec of the TensorRT line ``tensorrt`` (paths relative to ``root``).

    Raises:
        ConfigError: the build asks for something that trtexec release does not document (e.g.
            ``--hardware-compat same-cc`` on TensorRT 10.3).
    """
    commands = []
    for component in plan.components:
        argv = [trtexec, f"--onnx={_rel(component.source.onnx_path, root)}",
                f"--saveEngine={_rel(component.engine_path, root)}"]
        for index, profile in enumerate(component.profiles):
            argv += [f"--profile={index}", *(f"--{kind}Shapes={shape_spec(profile, kind)}" for kind in ("min", "opt", "max"))]
        argv += _build_flags(cfg, plan, tensorrt, root, len(component.profiles))
        check_argv(argv, tensorrt)
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
    return format_commands(trtexec_commands(plan_build(cfg), cfg, tensorrt=str(major)))
