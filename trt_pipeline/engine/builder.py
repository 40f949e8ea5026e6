"""Compile the ONNX variants of an export folder into TensorRT engines plus their manifests.

One call: :func:`build_engines` (``autoglm-trt build DIR ...``). Per component it

1. parses ``DIR/onnx/PRECISION/COMPONENT.onnx`` (external weights are found next to it) into a
   strongly typed network with Polygraphy's ONNX network loader; parser errors become an
   :class:`~trt_pipeline.errors.OnnxModelError` listing node names and operators;
2. makes the builder config with Polygraphy's ``CreateConfig``: the optimization profiles of
   :mod:`trt_pipeline.engine.profiles`, the workspace pool limit, builder optimization level, detailed
   profiling verbosity (for the engine inspector), hardware/version compatibility and a progress
   monitor feeding a rich progress bar;
3. on TensorRT 10.x with ``--legacy-precision-flags``: a weakly typed network from the fp32 ONNX
   with ``BuilderFlag.FP16``/``INT8`` and an INT8 calibrator that replays the calibration cache
   (also through ``CreateConfig``);
4. attaches a timing cache loaded from a file, builds with Polygraphy's ``EngineBytesFromNetwork``
   and saves the timing cache back (ours: :func:`load_timing_cache` says why);
5. writes ``DIR/engines/COMPONENT.PRECISION.engine`` atomically and its manifest beside it (ours:
   :func:`build_component` says why not ``SaveEngine``).

What Polygraphy calls on TensorRT is in ``polygraphy/backend/trt/{loader,config,profile,util}.py``
(Polygraphy 0.53.6); :mod:`trt_pipeline.engine.polygraphy_trt` points those loaders at the context's
TensorRT module and this process's TensorRT logger.

The builder-side TensorRT classes (Builder, INetworkDefinition, OnnxParser, IBuilderConfig) cannot
be imported on the CPU machines this project is developed on; every call made on them below follows
the TensorRT 10.x / 11.x Python API documentation and bindings:

* Builder / create_network / create_optimization_profile / create_builder_config /
  build_serialized_network:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html and
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
* IBuilderConfig: set_memory_pool_limit(pool, pool_size), builder_optimization_level,
  hardware_compatibility_level, profiling_verbosity, set_flag(flag), add_optimization_profile(profile),
  create_timing_cache(serialized_timing_cache), set_timing_cache(cache, ignore_mismatch),
  get_timing_cache(), progress_monitor; 10.x only: int8_calibrator, set_calibration_profile(profile):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html,
  C++ member list for 11.4.1
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/_static/c-api/classnvinfer1_1_1_i_builder_config-members.html
  and the binding source NVIDIA/TensorRT python/src/infer/pyCore.cpp (class IBuilderConfig, Builder).
* OnnxParser(network, logger).parse_from_file(path) -> bool, num_errors, get_error(i) with
  code()/desc()/node()/node_name()/node_operator():
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/parsers/Onnx/pyOnnx.html and
  NVIDIA/TensorRT python/src/parsers/pyOnnx.cpp. ``parse_from_file`` is what lets the parser find
  external data next to the model (Polygraphy's NetworkFromOnnxPath uses it for that reason).
* IProgressMonitor phase_start/step_complete/phase_finish: NVIDIA/TensorRT
  samples/python/simple_progress_monitor (the class itself exists in the lean bindings and is
  subclassed for real in the tests).
* IInt8EntropyCalibrator2 (10.x, deprecated since 10.1): get_batch_size, get_batch(names) -> None
  when there is no data, read_calibration_cache() -> bytes, write_calibration_cache(cache):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Int8/Calibrator.html
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, atomic_path, sha256_file, tool_versions
from trt_pipeline.engine.trt_logger import LogCapture, capture_log, make_logger  # noqa: F401 - make_logger re-exported
from trt_pipeline.engine.manifest import EngineManifest, manifest_path_for, write_manifest
from trt_pipeline.engine.options import (
    HARDWARE_COMPAT,
    BuildConfig,
    BuildInputs,
    ComponentSource,
    format_bytes,
    resolve_build_inputs,
    validate_for_tensorrt,
)
from trt_pipeline.engine.profiles import (
    Profile,
    check_override_names,
    derive_profiles,
    read_onnx_inputs,
    validate_profiles,
)
from trt_pipeline.engine.polygraphy_trt import polygraphy_on, polygraphy_profile
from trt_pipeline.engine.tensorrt_import import TensorRTContext, require_tensorrt, select_device
from trt_pipeline.quantize.calibration_cache import retarget_calibration_cache
from trt_pipeline.errors import ConfigError, OnnxModelError, PipelineError

# --------------------------------------------------------------------------------------------
# Plan (no TensorRT needed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentPlan:
    """One engine to build: its ONNX source, validated profiles and output path."""

    source: ComponentSource
    profiles: tuple[Profile, ...]
    engine_path: Path
    notes: tuple[str, ...] = ()

    @property
    def component(self) -> str:
        return self.source.component


@dataclass(frozen=True)
class BuildPlan:
    inputs: BuildInputs
    components: tuple[ComponentPlan, ...]


def plan_build(cfg: BuildConfig) -> BuildPlan:
    """Resolve inputs, derive and validate profiles for every component, without TensorRT.

    Raises:
        ConfigError / OnnxModelError: see :func:`~trt_pipeline.engine.options.resolve_build_inputs`
        and :func:`~trt_pipeline.engine.profiles.validate_profiles`.
    """
    inputs = resolve_build_inputs(cfg)
    check_override_names(cfg.shapes, inputs.all_input_names())
    plans = []
    for name, source in inputs.components.items():
        notes: list[str] = []
        profiles = derive_profiles(name, source.inputs, inputs.dims, cfg.shapes, notes=notes,
                                   workload_opts=inputs.profile_opts)
        validate_profiles(profiles, read_onnx_inputs(source.onnx_path), path=source.onnx_path)
        plans.append(ComponentPlan(source, profiles, cfg.engine_path(name), tuple(notes)))
    return BuildPlan(inputs, tuple(plans))


# --------------------------------------------------------------------------------------------
# TensorRT helpers
# --------------------------------------------------------------------------------------------


def make_progress_monitor(trt: Any, progress: Any) -> Any:
    """A ``trt.IProgressMonitor`` that shows each builder phase as a task of a rich ``Progress``.

    TensorRT calls it from its own threads, so updates take a lock. ``step_complete`` returns False
    (which cancels the build) after Ctrl-C, as in NVIDIA's simple_progress_monitor sample.
    """

    class RichProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._tasks: dict[str, Any] = {}
            self._depth: dict[str, int] = {}
            self.cancelled = False
            self.phases_seen: list[str] = []

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                with self._lock:
                    depth = self._depth.get(parent_phase, -1) + 1 if parent_phase is not None else 0
                    self._depth[phase_name] = depth
                    self.phases_seen.append(phase_name)
                    self._tasks[phase_name] = progress.add_task("  " * depth + phase_name, total=max(int(num_steps), 1))
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                with self._lock:
                    task = self._tasks.get(phase_name)
                    if task is not None:
                        progress.update(task, completed=int(step) + 1)
                return not self.cancelled
            except KeyboardInterrupt:
                self.cancelled = True
                return False

        def phase_finish(self, phase_name: str) -> None:
            try:
                with self._lock:
                    task = self._tasks.pop(phase_name, None)
                    self._depth.pop(phase_name, None)
                    if task is not None:
                        progress.remove_task(task)
            except KeyboardInterrupt:
                self.cancelled = True

    return RichProgressMonitor()


def parser_errors(parser: Any) -> list[str]:
    """One line per ONNX parser error: node name, operator, description, error code."""
    lines = []
    for index in range(int(parser.num_errors)):
        error = parser.get_error(index)
        node_name = _call_or_none(error, "node_name")
        operator = _call_or_none(error, "node_operator")
        node_index = _call_or_none(error, "node")
        where = f"node {node_name!r}" if node_name else (f"node #{node_index}" if node_index not in (None, -1) else "graph")
        if operator:
            where += f" ({operator})"
        code = _call_or_none(error, "code")
        code_name = getattr(code, "name", code)
        lines.append(f"{where}: {_call_or_none(error, 'desc') or error}" + (f" [{code_name}]" if code_name is not None else ""))
    return lines


def _call_or_none(obj: Any, name: str) -> Any:
    method = getattr(obj, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:
        return None


def parse_onnx(trt: Any, log: LogCapture, onnx_path: Path, *, strongly_typed: bool) -> tuple[Any, Any, Any]:
    """Polygraphy's ONNX network loader, with parser errors that name the failing nodes.

    ``polygraphy.backend.trt.loader.BaseNetworkFromOnnx`` creates the Builder (on the process logger),
    the network (``STRONGLY_TYPED`` creation flag when ``strongly_typed``), loads the plugin library and
    creates the ``OnnxParser``. Parsing is what ``NetworkFromOnnxPath`` does (``parse_from_file``, so that
    external data is found next to the model), except for the error path: ``NetworkFromOnnxPath`` logs the
    parser errors and raises a generic "Could not parse ONNX correctly"; here they become an
    :class:`OnnxModelError` listing node names and operators.

    Returns:
        ``(builder, network, parser)``; the parser must outlive the network's use in the build.
    """
    from polygraphy.backend.trt.loader import BaseNetworkFromOnnx

    builder, network, parser = BaseNetworkFromOnnx(strongly_typed=strongly_typed)()
    if not parser.parse_from_file(str(onnx_path)) or int(parser.num_errors):
        lines = parser_errors(parser) or log.errors[-5:] or ["no details reported"]
        raise OnnxModelError(
            f"TensorRT could not parse {onnx_path} ({len(lines)} error(s)): " + "; ".join(lines),
            path=onnx_path, hint=parse_failure_hint(trt, onnx_path),
        )
    return builder, network, parser


def parse_failure_hint(trt: Any, onnx_path: Path) -> str:
    """What to do when the parser refused a graph: a fused-ops export on a TensorRT older than 10.15
    gets told to re-export portable (the usual cause: a ``--decoder-ops fused`` export on JetPack 6), an
    onnxruntime-flavour one to re-export a standard flavour."""
    import onnx

    from trt_pipeline.models.glm4v.decoder_ops import tensorrt_hint

    model = onnx.load(str(onnx_path), load_external_data=False)
    hint = tensorrt_hint(node.op_type for node in model.graph.node)
    if hint:
        return f"{hint} (this is TensorRT {getattr(trt, '__version__', '?')})"
    return ("the named node uses an operator or attribute this TensorRT does not support; try a newer TensorRT "
            "or check the ONNX with ONNX Runtime (`autoglm-trt` verified it there)")


@dataclass
class TimingCacheState:
    path: Path
    loaded_entries: bool = False
    discarded: bool = False
    notes: list[str] = field(default_factory=list)


def load_timing_cache(config: Any, path: Path) -> TimingCacheState:
    """Create the builder's timing cache from ``path`` (if it exists) and attach it to ``config``.

    A cache from another GPU/TensorRT (``set_timing_cache(..., ignore_mismatch=False)`` returns False)
    or an unreadable file is replaced by an empty cache, with a note; it only costs build time.

    Why not Polygraphy's ``CreateConfig(load_timing_cache=)`` / ``EngineBytesFromNetwork(save_timing_cache=)``:
    ``CreateConfig`` ignores ``set_timing_cache``'s False (a cache from another GPU or TensorRT is then
    silently not used), an unreadable file raises out of the build, and the save merges the old file back
    with ``combine(..., ignore_mismatch=True)`` and writes it in place. Here a mismatched or corrupt cache
    is dropped with a note, never merged back, and the file is replaced atomically. ``CreateConfig``
    has already attached an empty cache; the one set here replaces it.
    """
    state = TimingCacheState(path=path)
    blob = b""
    if path.is_file():
        blob = path.read_bytes()
    cache = None
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except Exception:
            cache = None
        if cache is None:
            state.notes.append(f"timing cache {path} is unreadable; starting an empty one (it will be replaced)")
            state.discarded = True
        else:
            state.loaded_entries = True
    if cache is None:
        cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        state.notes.append(
            f"timing cache {path} was made with another GPU or TensorRT; starting an empty one (it will be replaced)"
        )
        state.loaded_entries, state.discarded = False, True
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return state


def save_timing_cache(config: Any, state: TimingCacheState) -> None:
    """Merge what is on disk (a concurrent build may have added entries) and write the cache atomically."""
    cache = config.get_timing_cache()
    if cache is None:
        return
    if state.path.is_file() and not state.discarded:
        try:
            previous = config.create_timing_cache(state.path.read_bytes())
            if previous is not None:
                cache.combine(previous, False)
        except Exception:
            state.notes.append(f"could not merge the timing cache already in {state.path}; overwriting it")
    with atomic_path(state.path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(cache.serialize()))


def make_cache_calibrator(trt: Any, cache: bytes) -> Any:
    """TensorRT 10.x ``IInt8EntropyCalibrator2`` that supplies no batches and replays ``cache``.

    This is what trtexec's ``--int8 --calib=FILE`` does: with a cache and no data, the builder takes
    the scales from the cache. ``CreateConfig`` attaches it (and the calibration profile). Not
    Polygraphy's ``Calibrator``: it needs a data loader, treats an empty one as a critical error each
    time TensorRT asks for a batch, and reads the cache file as it is, whereas the header must first be
    retargeted to the installed release (:func:`legacy_precision`).
    """

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache = cache

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


def legacy_precision(
    trt: Any, precision: str, *, calibration_cache: Path | None, trt_version: str | None = None,
) -> tuple[list[str], Any]:
    """TensorRT 10.x only: the FP16/INT8 builder flags to ask ``CreateConfig`` for, and the INT8 calibrator.

    The cache's header names the TensorRT release it is for (``TRT-100300-EntropyCalibration2``); a
    TensorRT that finds another release there may ignore the cache and then "calibrate" with no
    batches (review failure 7). The scales do not depend on the release, so the header is rewritten
    to the installed ``trt_version`` (default: ``trt.__version__``) before TensorRT reads it.

    Returns:
        ``(flag names, calibrator or None)``; the caller keeps the calibrator alive until the build ends.
    """
    if precision != "int8":
        return ["FP16"], None
    if calibration_cache is None:
        raise ConfigError("--int8 --legacy-precision-flags needs the INT8 calibration cache")
    cache = retarget_calibration_cache(calibration_cache.read_bytes(), trt_version or str(trt.__version__))
    return ["FP16", "INT8"], make_cache_calibrator(trt, cache)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    component: str
    engine_path: Path
    manifest_path: Path
    seconds: float
    engine_size: int
    manifest: EngineManifest
    notes: tuple[str, ...] = ()


def _io_from_source(source: ComponentSource) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"name": spec.name, "mode": mode, "dtype": spec.dtype, "shape": list(spec.shape)}
        for mode, specs in (("input", source.inputs), ("output", source.outputs))
        for spec in specs
    )


def component_calibration_cache(shared: Path | None, component: str) -> Path | None:
    """Prefer ``onnx/int8/COMPONENT.calibration.cache`` over the shared ``calibration.cache``.

    The vision encoder and decoder share tensor names (``matmul``, ``linear_3``, ...), so the
    precision stage leaves such names out of the shared cache and writes one complete cache per
    component beside it; a legacy implicit-INT8 build of a component replays its own.
    """
    if shared is None:
        return None
    own = shared.with_name(f"{component}.{shared.name}")
    return own if own.is_file() and own.stat().st_size > 0 else shared


def configure_builder(
    ctx: TensorRTContext, builder: Any, network: Any, cfg: BuildConfig, profiles: Sequence[Profile], *,
    calibration_cache: Path | None, progress_monitor: Any,
) -> tuple[Any, list[str], Any]:
    """The ``IBuilderConfig`` of one build, made by Polygraphy's ``CreateConfig``.

    ``CreateConfig`` sets the profiles (ours, converted to Polygraphy profiles), the workspace pool
    limit, builder optimization level, detailed profiling verbosity (for the engine inspector),
    hardware/version compatibility, the progress monitor and, on the TensorRT 10.x legacy path, the
    FP16/INT8 flags plus the calibrator (only when the network has no Q/DQ layers) with its calibration
    profile. TF32 is cleared (Polygraphy's default; trtexec gets ``--noTF32`` to match), so FP32 layers
    compute in FP32 as the ONNX Runtime and transformers references do.

    Returns:
        ``(config, builder flag names for the manifest, calibrator or None)``: the caller keeps the
        calibrator alive until the build returned (TensorRT holds a raw pointer to it).

    Raises:
        ConfigError: TensorRT kept fewer optimization profiles than were given (one was invalid).
    """
    from polygraphy.backend.trt import CreateConfig

    trt = ctx.trt
    builder_flags: list[str] = ["VERSION_COMPATIBLE"] if cfg.version_compatible else []
    legacy_flags, calibrator = ([], None)
    if cfg.legacy_precision_flags:
        legacy_flags, calibrator = legacy_precision(
            trt, cfg.precision, calibration_cache=calibration_cache, trt_version=str(ctx.version))
    hardware = None if cfg.hardware_compat == "none" else getattr(
        trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[cfg.hardware_compat])
    config = CreateConfig(
        profiles=[polygraphy_profile(p) for p in profiles],
        memory_pool_limits=None if cfg.workspace is None else {trt.MemoryPoolType.WORKSPACE: cfg.workspace},
        builder_optimization_level=cfg.opt_level,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        hardware_compatibility_level=hardware,
        version_compatible=cfg.version_compatible,
        progress_monitor=progress_monitor,
        fp16="FP16" in legacy_flags,
        int8="INT8" in legacy_flags,
        calibrator=calibrator,
    )(builder, network)
    if int(config.num_optimization_profiles) != len(profiles):
        raise ConfigError(
            f"TensorRT kept {config.num_optimization_profiles} of {len(profiles)} optimization profiles: "
            + "; ".join(f"{p.name}: {p.to_json()}" for p in profiles))
    return config, builder_flags + legacy_flags, calibrator


def _build_plan(
    plan: ComponentPlan, cfg: BuildConfig, ctx: TensorRTContext, *, calibration_cache: Path | None, progress: Any,
    echo: Any,
) -> tuple[Any, list[str], TimingCacheState, float]:
    """Parse, configure and build one engine with Polygraphy's loaders; returns the serialized plan.

    ``EngineBytesFromNetwork`` runs ``build_serialized_network``. Its ``save_timing_cache`` is not used:
    see :func:`load_timing_cache` for why the timing cache stays ours.
    """
    from polygraphy.backend.trt import EngineBytesFromNetwork
    from polygraphy.exception import PolygraphyException

    trt, source = ctx.trt, plan.source
    strongly_typed = bool(ctx.shim.network_flags(trt, strongly_typed=cfg.strongly_typed))
    serialized, polygraphy_error, started = None, "", time.perf_counter()
    with polygraphy_on(trt), capture_log(trt, echo=echo) as log:
        builder, network, parser = parse_onnx(trt, log, source.onnx_path, strongly_typed=strongly_typed)
        monitor = make_progress_monitor(trt, progress)
        try:  # Polygraphy reports what it cannot do (or a failed build) as PolygraphyException
            config, builder_flags, calibrator = configure_builder(
                ctx, builder, network, cfg, plan.profiles, calibration_cache=calibration_cache, progress_monitor=monitor)
            cache_state = load_timing_cache(config, cfg.timing_cache_path)
            started = time.perf_counter()
            serialized = EngineBytesFromNetwork((builder, network, parser), config=config)()
        except PolygraphyException as error:
            polygraphy_error = f" (Polygraphy: {str(error).strip()})"
        seconds = time.perf_counter() - started
    if monitor.cancelled:
        raise PipelineError(f"build of {plan.engine_path.name} was cancelled", path=plan.engine_path)
    if serialized is None:
        raise PipelineError(
            f"TensorRT could not build {plan.engine_path.name} from {source.onnx_path}: {log.details()}{polygraphy_error}",
            path=source.onnx_path,
            hint="if the log mentions memory, lower --max-shapes or raise --workspace; see the TensorRT messages above",
        )
    save_timing_cache(config, cache_state)
    del parser, network, calibrator  # released only after the build returned
    return serialized, builder_flags, cache_state, seconds


def build_component(
    plan: ComponentPlan,
    cfg: BuildConfig,
    ctx: TensorRTContext,
    *,
    calibration_cache: Path | None,
    export_path: Path | None,
    progress: Any,
    echo: Any = None,
) -> BuildResult:
    """Build one engine (see module docstring) and write it plus its manifest atomically.

    The plan (``IHostMemory``) is written here rather than with Polygraphy's ``SaveEngine``: that loader
    takes a deserialized ``ICudaEngine`` (a second copy of the engine on the device and the host, just to
    save it) and writes the file in place, so an interrupted save would leave a truncated engine where the
    manifest check expects a whole one.
    """
    source = plan.source
    select_device(ctx.gpu.device_index)
    serialized, builder_flags, cache_state, seconds = _build_plan(
        plan, cfg, ctx, calibration_cache=calibration_cache, progress=progress, echo=echo)
    with atomic_path(plan.engine_path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(serialized))
    del serialized
    engine_size = plan.engine_path.stat().st_size
    out_dir = cfg.out_dir
    manifest = EngineManifest(
        component=plan.component,
        precision=cfg.precision,
        engine_file=plan.engine_path.name,
        engine_sha256=sha256_file(plan.engine_path),
        engine_size=engine_size,
        onnx_file=_relative(source.onnx_path, out_dir),
        onnx_sha256=sha256_file(source.onnx_path),
        onnx_external_data=_relative(source.external_data, out_dir) if source.external_data else None,
        onnx_external_data_sha256=sha256_file(source.external_data) if source.external_data else None,
        tensorrt_version=str(ctx.version),
        gpu_name=ctx.gpu.name,
        compute_capability=ctx.gpu.compute_capability,
        cuda_version=ctx.gpu.cuda_version,
        profiles=plan.profiles,
        strongly_typed=cfg.strongly_typed,
        legacy_precision_flags=cfg.legacy_precision_flags,
        builder_flags=tuple(builder_flags),
        hardware_compat=cfg.hardware_compat,
        version_compatible=cfg.version_compatible,
        workspace_bytes=cfg.workspace,
        opt_level=cfg.opt_level,
        timing_cache=str(cfg.timing_cache_path),
        build_seconds=round(seconds, 3),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        export_sha256=sha256_file(export_path) if export_path is not None and export_path.is_file() else None,
        io=_io_from_source(source),
        tool_versions={"tensorrt": str(ctx.version), **tool_versions("onnx", "polygraphy")},
    )
    manifest_path = write_manifest(manifest, plan.engine_path)
    return BuildResult(plan.component, plan.engine_path, manifest_path, seconds, engine_size, manifest,
                       notes=tuple(plan.notes) + tuple(cache_state.notes))


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def refuse_onnxruntime_flavour(out_dir: Path) -> None:
    """Refuse, before looking for TensorRT, an export whose decoder or vision encoder is an ``onnxruntime``
    flavour (``com.microsoft`` ops: no TensorRT parses them). An unreadable export.json is left to the input checks."""
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.models.glm4v.decoder_ops import ONNXRUNTIME_ONLY_HINT

    try:
        manifest = read_export_manifest(out_dir)
    except Exception:  # noqa: BLE001 - resolve_build_inputs names what is wrong with it
        return
    if manifest.decoder_ops == "onnxruntime" and "decoder" in manifest.components:
        raise ConfigError(f"{manifest.path}: the decoder was exported with `--decoder-ops onnxruntime` "
                          "(GroupQueryAttention, SkipSimplifiedLayerNormalization: ONNX Runtime contrib ops), which no "
                          "TensorRT parses.", path=manifest.path, hint=ONNXRUNTIME_ONLY_HINT)
    if manifest.vision_ops == "onnxruntime" and "vision_encoder" in manifest.components:
        raise ConfigError(f"{manifest.path}: the vision encoder was exported with `--vision-ops onnxruntime` "
                          "(MultiHeadAttention: an ONNX Runtime contrib op), which no TensorRT parses.",
                          path=manifest.path, hint="re-export with `--vision-ops portable` for TensorRT")


def build_engines(
    cfg: BuildConfig,
    *,
    console: Any = None,
    ctx: TensorRTContext | None = None,
    show_progress: bool = True,
) -> list[BuildResult]:
    """Build every component of ``cfg.out_dir`` at ``cfg.precision``.

    Checks, in order and before any long work: TensorRT + GPU present (one-line error otherwise),
    options valid for this TensorRT/GPU, inputs on disk and profiles valid against the ONNX graphs.

    Args:
        cfg: the validated build configuration.
        console: a ``rich.console.Console`` for progress and messages (default: stderr console).
        ctx: an already detected TensorRT context (tests inject fakes here).
        show_progress: draw the builder progress bars.

    Returns:
        One :class:`BuildResult` per engine written.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    refuse_onnxruntime_flavour(cfg.out_dir)
    ctx = ctx or require_tensorrt(cfg.device_index)
    validate_for_tensorrt(cfg, ctx.shim, ctx.gpu)
    plan = plan_build(cfg)

    def echo(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    mode = "legacy builder flags" if cfg.legacy_precision_flags else "strongly typed"
    layout = OutputLayout(cfg.out_dir)
    console.print(
        f"TensorRT {ctx.version} ({ctx.shim.family.name}) on {ctx.gpu.name} (compute capability "
        f"{ctx.gpu.compute_capability}); precision {cfg.precision} ({mode}, ONNX from "
        f"{layout.rel(layout.onnx_dir(cfg.onnx_precision))}); "
        f"workspace {format_bytes(cfg.workspace)}; opt level {cfg.opt_level}; timing cache {cfg.timing_cache_path}",
        highlight=False,
    )
    results = []
    for item in plan.components:
        for note in item.notes:
            console.print(f"note: {note}", style="yellow", highlight=False)
        profiles = ", ".join(p.name for p in item.profiles)
        console.print(f"building {item.engine_path.name} from {item.source.onnx_path} (profiles: {profiles})", highlight=False)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True, disable=not show_progress,
        )
        with progress:
            result = build_component(
                item, cfg, ctx,
                calibration_cache=component_calibration_cache(plan.inputs.calibration_cache, item.source.component),
                export_path=plan.inputs.export_path,
                progress=progress,
                echo=echo,
            )
        for note in result.notes[len(item.notes):]:
            console.print(f"note: {note}", style="yellow", highlight=False)
        console.print(
            f"wrote {result.engine_path} ({format_bytes(result.engine_size)}) in {result.seconds:.1f} s; "
            f"manifest {manifest_path_for(result.engine_path).name}",
            highlight=False,
        )
        results.append(result)
    return results
