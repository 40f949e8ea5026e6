"""The one set of TensorRT build options, shared by ``autoglm-trt build``, ``[build]`` and the builder.

:class:`BuildOptions` is spelled once, in the user's vocabulary (trtexec / Ultralytics: ``--workspace
4GiB``, ``--min-shapes NAME:DIMS``); the CLI fills it from flags, ``pipeline.toml`` from ``[build]``
(:class:`BuildStageConfig` adds which precisions to compile), and the engine builder resolves it into
its ``BuildConfig`` (bytes, shape tuples, paths) with
:meth:`trt_pipeline.engine.options.BuildConfig.from_build_options`. The string parsers live here so
a bad value in a TOML file is refused when the file is read, not when the build stage starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass

from trt_pipeline.config.base import STAGE_CONFIG, to_dict
from trt_pipeline.errors import ConfigError
from trt_pipeline.precisions import PRECISIONS, check_precision

#: ``--hardware-compat`` value -> ``trt.HardwareCompatibilityLevel`` member name.
HARDWARE_COMPAT: dict[str, str] = {
    "none": "NONE",
    "ampere+": "AMPERE_PLUS",
    "same-cc": "SAME_COMPUTE_CAPABILITY",
}

OPT_LEVEL_RANGE = (0, 5)
DEFAULT_OPT_LEVEL = 3  # TensorRT's default builder optimization level

_BINARY = {"": 1 << 30, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
           "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_workspace(value: str | int | float | None) -> int | None:
    """``--workspace``: ``4GiB``, ``512MiB``, ``4G`` (binary, like trtexec), ``4GB`` (decimal), or a bare
    number of GiB (Ultralytics' ``workspace=4``). ``None`` keeps TensorRT's default (all device memory).

    Returns:
        The limit in bytes.
    """
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _BINARY:
        raise ConfigError(
            f"--workspace {value!r} is not a size; use e.g. 4GiB, 512MiB, 2G or a plain number of GiB"
        )
    size = int(float(match.group(1)) * _BINARY[unit])
    if size <= 0:
        raise ConfigError(f"--workspace {value!r} must be larger than zero")
    return size


def parse_shapes(text: str | None, *, option: str = "--shapes") -> dict[str, tuple[int, ...]]:
    """trtexec-style shapes ``name:1x128x4096,other:1x64`` -> ``{name: (1, 128, 4096), ...}``.

    Tensor names may contain dots (``past_key_values.0.key``) and may be quoted; the last ``:``
    separates the name from the dims.
    """
    if text is None or not str(text).strip():
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        name = name.strip().strip("'\"")
        if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
            raise ConfigError(
                f"{option} entry {item!r} is not NAME:DIMS; expected e.g. inputs_embeds:1x128x4096 "
                "(several separated by commas)"
            )
        if name in out:
            raise ConfigError(f"{option} gives {name} twice")
        out[name] = tuple(int(d) for d in dims.strip().split("x"))
    return out


def resolve_precision(*, fp16: bool = False, int8: bool = False, fp32: bool = False, int4: bool = False) -> str:
    """The single precision chosen with ``--fp16`` / ``--int8`` / ``--int4`` / ``--fp32`` (default fp32, as trtexec)."""
    chosen = [name for name, flag in (("fp16", fp16), ("int8", int8), ("int4", int4), ("fp32", fp32)) if flag]
    if len(chosen) > 1:
        raise ConfigError(f"choose one precision, got {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else "fp32"


@dataclass(frozen=True, config=STAGE_CONFIG)
class BuildOptions:
    """``autoglm-trt build`` options, as the user writes them (see the module docstring).

    Shapes use trtexec syntax (``"inputs_embeds:1x1x4096,..."``); ``workspace`` accepts ``"4GiB"``;
    ``timing_cache`` None means ``DIR/engines/timing.cache``; ``components`` None builds all of export.json.
    """

    workspace: str | None = None
    opt_level: int = DEFAULT_OPT_LEVEL
    timing_cache: Path | None = None
    min_shapes: str | None = None
    opt_shapes: str | None = None
    max_shapes: str | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    legacy_precision_flags: bool = False
    components: tuple[str, ...] | None = None
    device_index: int = 0

    def __post_init__(self) -> None:
        parse_workspace(self.workspace)
        for name in ("min_shapes", "opt_shapes", "max_shapes"):
            parse_shapes(getattr(self, name), option=f"--{name.replace('_', '-')}")
        lo, hi = OPT_LEVEL_RANGE
        if not lo <= self.opt_level <= hi:
            raise ConfigError(f"--opt-level {self.opt_level!r} must be an integer from {lo} to {hi}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(
                f"--hardware-compat {self.hardware_compat!r} is not one of {', '.join(HARDWARE_COMPAT)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True, config=STAGE_CONFIG)
class BuildStageConfig(BuildOptions):
    """``[build]``: which ONNX precision folders to compile, with the :class:`BuildOptions` of every build.

    Precisions whose ``OUT/onnx/PRECISION`` folder does not exist are skipped with a line.
    """

    precisions: tuple[str, ...] = ("fp16", "int8")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.precisions:
            raise ConfigError(f"[build] precisions is empty: choose from {', '.join(PRECISIONS)}.")
        for precision in self.precisions:
            check_precision(precision, PRECISIONS, option="[build] precisions entry")

    def options(self) -> BuildOptions:
        """The build options alone (without ``precisions``)."""
        fields = {name: getattr(self, name) for name in BuildOptions.__dataclass_fields__}
        return BuildOptions(**fields)
