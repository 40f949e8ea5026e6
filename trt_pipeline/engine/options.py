"""Build options: parsing (trtexec / Ultralytics vocabulary), the frozen :class:`BuildConfig`, validation.

Validation happens in three layers, each raising :class:`~trt_pipeline.errors.ConfigError` with the
option name, the value and what is accepted:

1. :class:`BuildConfig` itself (no disk, no TensorRT): precision, opt level 0..5, workspace > 0,
   hardware-compat value, ``--legacy-precision-flags`` only with ``--fp16``/``--int8``.
2. :func:`resolve_build_inputs` (disk): ``DIR/export.json`` exists, the chosen precision has its ONNX
   folder with ``manifest.json`` and every component file, the INT8 calibration cache when the
   legacy INT8 path needs it.
3. :func:`validate_for_tensorrt` (installed TensorRT + GPU): legacy flags refused on TensorRT >= 11,
   hardware-compat level available in this TensorRT, Ampere+ compatibility built on an Ampere+ GPU
   and not on Jetson.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.layout import CALIBRATION_CACHE, TIMING_CACHE, OutputLayout, engine_file_name
from trt_pipeline.artifacts.manifests import (
    DimSpec,
    ExportManifest,
    PrecisionManifest,
    TensorSpec,
    read_export_manifest,
    read_precision_manifest,
)
from trt_pipeline.config.build import (
    DEFAULT_OPT_LEVEL,
    HARDWARE_COMPAT,
    OPT_LEVEL_RANGE,
    PRECISIONS,
    BuildOptions,
    check_precision,
    parse_shapes,
    parse_workspace,
    resolve_precision,
)
from trt_pipeline.engine.profiles import ShapeOverrides
from trt_pipeline.errors import ConfigError, OnnxModelError
from trt_pipeline.precisions import MIN_TENSORRT_MAJOR

DEFAULT_TIMING_CACHE_NAME = TIMING_CACHE
CALIBRATION_CACHE_NAME = CALIBRATION_CACHE


def format_bytes(size: int | None) -> str:
    if size is None:
        return "default"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``autoglm-trt build`` needs, validated on construction.

    Attributes:
        out_dir: the export folder ``DIR`` (holds export.json and onnx/PRECISION/).
        precision: ``fp32`` / ``fp16`` / ``int8``: which ONNX variant to compile (strongly typed), or
            which builder flags to set (legacy path).
        workspace: ``MemoryPoolType.WORKSPACE`` limit in bytes; ``None`` = TensorRT default.
        opt_level: builder optimization level 0..5.
        timing_cache: timing cache file; ``None`` = ``DIR/engines/timing.cache``.
        shapes: trtexec-style profile overrides.
        hardware_compat: ``none`` / ``ampere+`` / ``same-cc``.
        version_compatible: set ``BuilderFlag.VERSION_COMPATIBLE``.
        legacy_precision_flags: TensorRT 10.x only: compile the fp32 ONNX with
            ``BuilderFlag.FP16``/``INT8`` (+ the INT8 calibration cache) instead of strong typing.
        components: subset of components to build; ``None`` = all of export.json.
        engines_dir: output folder; ``None`` = ``DIR/engines``.
        device_index: CUDA device to build on.
    """

    out_dir: Path
    precision: str = "fp32"
    workspace: int | None = None
    opt_level: int = DEFAULT_OPT_LEVEL
    timing_cache: Path | None = None
    shapes: ShapeOverrides = field(default_factory=ShapeOverrides)
    hardware_compat: str = "none"
    version_compatible: bool = False
    legacy_precision_flags: bool = False
    components: tuple[str, ...] | None = None
    engines_dir: Path | None = None
    device_index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        check_precision(self.precision, PRECISIONS)
        lo, hi = OPT_LEVEL_RANGE
        if isinstance(self.opt_level, bool) or not isinstance(self.opt_level, int) or not lo <= self.opt_level <= hi:
            raise ConfigError(f"--opt-level {self.opt_level!r} must be an integer from {lo} to {hi}")
        if self.workspace is not None and (not isinstance(self.workspace, int) or self.workspace <= 0):
            raise ConfigError(f"--workspace must be a positive number of bytes, got {self.workspace!r}")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(
                f"--hardware-compat {self.hardware_compat!r} is not one of {', '.join(HARDWARE_COMPAT)}"
            )
        if self.legacy_precision_flags and self.precision == "fp32":
            raise ConfigError(
                "--legacy-precision-flags selects how FP16/INT8 are obtained (builder flags instead of the "
                "fp16/int8 ONNX); it needs --fp16 or --int8"
            )
        if self.legacy_precision_flags and self.precision == "int4":
            raise ConfigError(
                "--legacy-precision-flags has no INT4 builder flag: INT4 weights exist only as the int4 ONNX "
                "variant's block-quantized DequantizeLinear nodes; drop the flag (--int4 builds strongly typed)"
            )
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
            if self.timing_cache.is_dir():
                raise ConfigError(f"--timing-cache {self.timing_cache} is a folder; give a file path")
        if self.engines_dir is not None:
            object.__setattr__(self, "engines_dir", Path(self.engines_dir))
        if self.components is not None:
            object.__setattr__(self, "components", tuple(self.components))

    @classmethod
    def from_build_options(cls, out_dir: Path | str, precision: str, options: BuildOptions, *,
                           engines_dir: Path | None = None) -> BuildConfig:
        """Resolve the user's :class:`~trt_pipeline.config.build.BuildOptions` for one precision of ``out_dir``."""
        shapes = ShapeOverrides(
            min=parse_shapes(options.min_shapes, option="--min-shapes"),
            opt=parse_shapes(options.opt_shapes, option="--opt-shapes"),
            max=parse_shapes(options.max_shapes, option="--max-shapes"),
        )
        return cls(
            out_dir=Path(out_dir), precision=precision, workspace=parse_workspace(options.workspace),
            opt_level=options.opt_level, timing_cache=options.timing_cache, shapes=shapes,
            hardware_compat=options.hardware_compat, version_compatible=options.version_compatible,
            legacy_precision_flags=options.legacy_precision_flags, components=options.components,
            engines_dir=engines_dir, device_index=options.device_index,
        )

    @classmethod
    def from_options(cls, out_dir: Path | str, *, fp16: bool = False, int8: bool = False, fp32: bool = False,
                     engines_dir: Path | None = None, **options: Any) -> BuildConfig:
        """From CLI-style values: ``--fp16``-style precision flags plus :class:`BuildOptions` fields."""
        return cls.from_build_options(out_dir, resolve_precision(fp16=fp16, int8=int8, fp32=fp32),
                                      BuildOptions(**options), engines_dir=engines_dir)

    @property
    def onnx_precision(self) -> str:
        """The ONNX folder compiled: the precision's own variant, or fp32 on the legacy flag path."""
        return "fp32" if self.legacy_precision_flags else self.precision

    @property
    def strongly_typed(self) -> bool:
        return not self.legacy_precision_flags

    @property
    def engines_path(self) -> Path:
        return self.engines_dir if self.engines_dir is not None else OutputLayout(self.out_dir).engines_dir

    @property
    def timing_cache_path(self) -> Path:
        return self.timing_cache if self.timing_cache is not None else self.engines_path / DEFAULT_TIMING_CACHE_NAME

    def engine_path(self, component: str) -> Path:
        """``DIR/engines/COMPONENT.PRECISION.engine`` (docs/artifacts.md)."""
        return self.engines_path / engine_file_name(component, self.precision)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["timing_cache"] = str(self.timing_cache_path)
        data["engines_dir"] = str(self.engines_path)
        data["shapes"] = self.shapes.to_json()
        return data


# --------------------------------------------------------------------------------------------
# Inputs on disk
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSource:
    """The ONNX file that one engine compiles, with its declared I/O."""

    component: str
    onnx_path: Path
    external_data: Path | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class BuildInputs:
    """What :func:`resolve_build_inputs` found in ``DIR``."""

    out_dir: Path
    export_path: Path
    dims: Mapping[str, DimSpec]
    components: Mapping[str, ComponentSource]
    precision_dir: Path
    calibration_cache: Path | None = None
    #: per profile, the workload's typical dim values (export.json ``workload.profiles``)
    profile_opts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def all_input_names(self) -> list[str]:
        return [spec.name for source in self.components.values() for spec in source.inputs]


def _precision_hint(precision: str, out_dir: Path) -> str:
    if precision == "fp32":
        return f"run `autoglm-trt export CHECKPOINT --out {out_dir}` first"
    return (
        f"make the {precision} ONNX variant of {out_dir} first (the precision stage writes "
        f"{OutputLayout(out_dir).precision_manifest(precision)}, see docs/artifacts.md)"
    )


def _check_export_folder(out_dir: Path, layout: OutputLayout) -> None:
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is not a folder", path=out_dir, hint=_precision_hint("fp32", out_dir))
    if not layout.export_manifest.is_file():
        raise ConfigError(
            f"{out_dir} is not an export folder: {layout.export_manifest.name} is missing", path=layout.export_manifest,
            hint=_precision_hint("fp32", out_dir),
        )


def _precision_manifest(cfg: BuildConfig, layout: OutputLayout) -> PrecisionManifest:
    precision = cfg.onnx_precision
    precision_dir, manifest_path = layout.onnx_dir(precision), layout.precision_manifest(precision)
    if not manifest_path.is_file():
        what = "folder" if not precision_dir.is_dir() else manifest_path.name
        raise ConfigError(
            f"--{cfg.precision} needs the {precision} ONNX variant, but {precision_dir} has no {what}",
            path=manifest_path if precision_dir.is_dir() else precision_dir,
            hint=_precision_hint(precision, cfg.out_dir),
        )
    return read_precision_manifest(cfg.out_dir, precision)


def _component_source(name: str, export: ExportManifest, listed: PrecisionManifest, hint: str) -> ComponentSource:
    if name not in listed.components:
        raise OnnxModelError(f"{listed.path} does not list component {name!r}", path=listed.path, hint=hint)
    entry = listed.components[name]
    if not entry.path.is_file():
        raise OnnxModelError(f"{entry.path} is missing (listed in {listed.path})", path=entry.path, hint=hint)
    if entry.external_data is not None and not entry.external_data.is_file():
        raise OnnxModelError(
            f"{entry.external_data} (external weights of {entry.path.name}) is missing", path=entry.external_data, hint=hint,
        )
    declared = export.components[name]
    inputs, outputs = entry.inputs or declared.inputs, entry.outputs or declared.outputs
    if not inputs:
        raise OnnxModelError(f"no inputs declared for {name} in {listed.path} or {export.path}", path=export.path)
    return ComponentSource(name, entry.path, entry.external_data, inputs, outputs)


def resolve_build_inputs(cfg: BuildConfig) -> BuildInputs:
    """Check ``DIR`` against the artifact contract and find the ONNX files to compile.

    Raises:
        ConfigError: ``DIR`` is not an export folder, or the chosen precision has no ONNX folder.
        OnnxModelError: a manifest names a file that is missing or is malformed.
    """
    out_dir = cfg.out_dir
    layout = OutputLayout(out_dir)
    _check_export_folder(out_dir, layout)
    export = read_export_manifest(out_dir)
    listed = _precision_manifest(cfg, layout)
    wanted = list(cfg.components) if cfg.components is not None else list(export.components)
    unknown = [c for c in wanted if c not in export.components]
    if unknown:
        raise ConfigError(
            f"unknown component(s) {', '.join(unknown)}; {export.path} has {', '.join(export.components)}"
        )
    hint = _precision_hint(cfg.onnx_precision, out_dir)
    components = {name: _component_source(name, export, listed, hint) for name in wanted}
    calibration_cache = None
    if cfg.legacy_precision_flags and cfg.precision == "int8":
        calibration_cache = layout.calibration_cache()
        if not calibration_cache.is_file() or calibration_cache.stat().st_size == 0:
            raise ConfigError(
                f"--int8 --legacy-precision-flags calibrates from the INT8 calibration cache, but {calibration_cache} "
                "is missing or empty",
                path=calibration_cache,
                hint=_precision_hint("int8", out_dir),
            )
    return BuildInputs(out_dir, export.path, export.dims, components, listed.folder, calibration_cache,
                       export.profile_opts)


# --------------------------------------------------------------------------------------------
# Against the installed TensorRT + GPU
# --------------------------------------------------------------------------------------------


def validate_for_tensorrt(cfg: BuildConfig, shim: Any, gpu: Any, *, jetson: bool | None = None) -> None:
    """Options that depend on the installed TensorRT (``shim``, a ``TensorRTShim``) and the GPU.

    Hardware compatibility (``AMPERE_PLUS``) requires building on Ampere or newer and is not supported on
    JetPack; levels come from ``trt.HardwareCompatibilityLevel``. Docs:
    https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html
    """
    from trt_pipeline.engine.tensorrt_import import is_jetson

    if cfg.legacy_precision_flags and not shim.legacy_precision_flags:
        raise ConfigError(shim.legacy_refusal())
    needed = MIN_TENSORRT_MAJOR[cfg.precision]
    if shim.version.major < needed:
        raise ConfigError(
            f"--{cfg.precision} needs TensorRT >= {needed} (block-quantized INT4 DequantizeLinear, strongly typed); "
            f"this is TensorRT {shim.version}",
            hint=f"build on TensorRT {needed}.x or newer (JetPack 6 ships 10.3), or build --fp16 / --int8 here",
        )
    level = HARDWARE_COMPAT[cfg.hardware_compat]
    if cfg.hardware_compat != "none" and level not in shim.hardware_compat_levels:
        available = ", ".join(k for k, v in HARDWARE_COMPAT.items() if v in shim.hardware_compat_levels) or "none"
        raise ConfigError(
            f"--hardware-compat {cfg.hardware_compat} is not available in TensorRT {shim.version} "
            f"(HardwareCompatibilityLevel.{level} missing); available here: {available}"
        )
    if cfg.hardware_compat == "ampere+":
        if gpu.cc_tuple < (8, 0):
            raise ConfigError(
                f"--hardware-compat ampere+ must be built on an Ampere or newer GPU (compute capability >= 8.0); "
                f"this GPU is {gpu.name} (compute capability {gpu.compute_capability})"
            )
        on_jetson = is_jetson() or gpu.integrated if jetson is None else jetson
        if on_jetson:
            raise ConfigError(
                "--hardware-compat ampere+ is not supported on Jetson (JetPack); build on the device with "
                "--hardware-compat none"
            )
