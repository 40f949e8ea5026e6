"""Fixtures for the engine tests: a fake ``tensorrt`` module and tiny real export folders.

Runtime-side classes are the REAL TensorRT 11.4 classes from ``tensorrt_lean`` (Runtime, ICudaEngine,
IExecutionContext, IOptimizationProfile, ITimingCache, enums, ILogger, IProgressMonitor), wrapped with
:func:`strict_autospec`: ``create_autospec(spec_set=True)`` rejects unknown/removed attributes
(``execute_async_v2``), and the pybind signatures in the docstrings are enforced on every call (wrong
argument counts fail). pybind methods carry no ``inspect`` signature, hence the docstring parsing.

Builder-side classes (Builder, INetworkDefinition, OnnxParser, IBuilderConfig, IParserError,
IInt8EntropyCalibrator2, IEngineInspector) do not exist in the lean bindings; the fakes below are
written from the TensorRT 10.x / 11.x Python API docs (and NVIDIA/TensorRT python/src/infer/pyCore.cpp,
python/src/parsers/pyOnnx.cpp), use ``__slots__`` so a misspelt property assignment fails, and type-check
enum arguments against the enums of the same fake module.
"""

from __future__ import annotations

import ctypes
import enum
import inspect
import json
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

lean = pytest.importorskip("tensorrt_lean", reason="tensorrt_lean (dev extra) provides the real TensorRT runtime classes")

# --------------------------------------------------------------------------------------------
# strict autospec
# --------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[(<{":
            depth += 1
        elif ch in "])>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def doc_signatures(func: Any, name: str) -> list[inspect.Signature]:
    """Signatures of a pybind11 method from its docstring (one per overload), without ``self``."""
    sigs = []
    for line in (getattr(func, "__doc__", None) or "").splitlines():
        match = re.match(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", line)
        if not match:
            continue
        params = []
        for part in _split_top_level(match.group(1)):
            pname = part.split(":")[0].split("=")[0].strip()
            if not pname or pname == "self":
                continue
            has_default = re.search(r"=\s*\S", part) is not None
            params.append(
                inspect.Parameter(
                    pname, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None if has_default else inspect.Parameter.empty
                )
            )
        sigs.append(inspect.Signature(params))
    return sigs


def strict_autospec(cls: type) -> Any:
    """``create_autospec(cls, instance=True, spec_set=True)`` plus docstring-signature checks on calls."""
    instance = mock.create_autospec(cls, instance=True, spec_set=True)
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property) or not callable(getattr(cls, name)):
            continue
        sigs = doc_signatures(getattr(cls, name), name)
        if not sigs:
            continue

        def check(*args: Any, _sigs: list = sigs, _name: str = name, **kwargs: Any) -> Any:
            for sig in _sigs:
                try:
                    sig.bind(*args, **kwargs)
                    return mock.DEFAULT
                except TypeError:
                    continue
            raise TypeError(f"{cls.__name__}.{_name}{args}{kwargs or ''} matches no signature {[str(s) for s in _sigs]}")

        getattr(instance, name).side_effect = check
    return instance


def implement(method: Any, fn: Callable[..., Any]) -> None:
    """Give a strict autospec method an implementation while keeping its signature check."""
    check = method.side_effect

    def run(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(*args, **kwargs)
        return fn(*args, **kwargs)

    method.side_effect = run


def execution_context(*, set_profile: Callable[..., Any], set_input_shape: Callable[..., Any],
                      set_tensor_address: Callable[..., Any], get_tensor_shape: Callable[..., Any],
                      execute: Callable[..., Any]) -> Any:
    """A strict autospec of the real ``IExecutionContext`` whose runtime calls do what the test says."""
    context = strict_autospec(lean.IExecutionContext)
    implement(context.set_optimization_profile_async, set_profile)
    implement(context.set_input_shape, set_input_shape)
    implement(context.set_tensor_address, set_tensor_address)
    implement(context.get_tensor_shape, get_tensor_shape)
    implement(context.execute_async_v3, execute)
    return context


# --------------------------------------------------------------------------------------------
# builder-side fakes (TensorRT 10.x / 11.x Python API)
# --------------------------------------------------------------------------------------------


class FakeState:
    """What the fake module saw, for assertions."""

    def __init__(self) -> None:
        self.builders: list[Any] = []
        self.networks: list[Any] = []
        self.parsers: list[Any] = []
        self.configs: list[Any] = []
        self.profiles: list[Any] = []
        self.parse_errors: list[Any] = []  # injected IParserError fakes
        self.build_result: Any = "engine"  # "engine" -> bytes, None -> failure
        self.build_log_errors: list[str] = []
        self.timing_blobs: dict[int, bytes] = {}
        self.progress_calls: list[tuple] = []
        self.runtime: Any = None
        self.invalid_profiles: set[int] = set()  # indices add_optimization_profile refuses (returns -1)


class FakeHostMemory(bytes):
    """IHostMemory supports the buffer protocol; ``bytes`` stands in for it."""


class FakeParserError:
    """nvonnxparser::IParserError: code(), desc(), file(), func(), line(), node(), node_name(), node_operator()."""

    __slots__ = ("_code", "_desc", "_node", "_name", "_op")

    def __init__(self, code: Any, desc: str, node: int, node_name: str, node_operator: str) -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, node_operator

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def file(self) -> str:
        return "ModelImporter.cpp"

    def func(self) -> str:
        return "parseNode"

    def line(self) -> int:
        return 1

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def __str__(self) -> str:
        return f"In node {self._node} ({self._name}): {self._desc}"


def parse_table_of(version: str) -> str:
    """The ``engine.onnx_ops`` table of a TensorRT version (10.4-10.14 get 10.3's: the conservative side)."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return "trt-11" if major >= 11 else "trt-10.15" if minor >= 15 else "trt-10.3"


def unparseable_nodes(proto: Any, trt: Any) -> list[FakeParserError]:
    """One UNSUPPORTED_NODE error per node whose operator this TensorRT's parser lacks (as the real
    parser reports "No importer registered for op: X"), from onnx-tensorrt's documented tables."""
    from trt_pipeline.engine.onnx_ops import TARGETS

    target = TARGETS[parse_table_of(trt.__version__)]
    return [FakeParserError(trt.ErrorCode.UNSUPPORTED_NODE, f"No importer registered for op: {node.op_type}", index,
                            node.name, node.op_type)
            for index, node in enumerate(proto.graph.node) if not target.supports(node.op_type, node.domain)]


def make_fake_tensorrt(version: str = "11.4.0.106") -> types.ModuleType:
    """A ``tensorrt`` module: real lean runtime classes/enums + documented builder-side fakes."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = "<fake tensorrt>"
    state = FakeState()
    trt._state = state
    for name in (
        "MemoryPoolType", "TensorIOMode", "DataType", "HardwareCompatibilityLevel", "ProfilingVerbosity",
        "LayerInformationFormat", "ILogger", "Logger", "IProgressMonitor", "Dims", "nptype",
        "ExecutionContextAllocationStrategy", "DeviceType",
    ):
        setattr(trt, name, getattr(lean, name))
    minor = int(version.split(".")[1])
    if (major, minor) >= (10, 7):  # IStreamReaderV2 arrived in TensorRT 10.7

        class IStreamReaderV2:
            """Stand-in for the real base (whose __init__ opens the CUDA driver): same methods, init checked."""

            def __init__(self) -> None:
                self._base_initialized = True

            def read(self, num_bytes: int, stream: int) -> bytes:
                raise NotImplementedError

            def seek(self, offset: int, where: Any) -> bool:
                raise NotImplementedError

        assert {"read", "seek"} <= set(dir(lean.IStreamReaderV2))
        trt.IStreamReaderV2, trt.SeekPosition = IStreamReaderV2, lean.SeekPosition

    if major >= 11:
        trt.BuilderFlag = lean.BuilderFlag  # real 11.4 enum: no FP16/INT8
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2}
        )
    else:
        names = list(lean.BuilderFlag.__members__) + ["FP16", "BF16", "INT8", "FP8", "INT4",
                                                      "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(names)})
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        )
    trt.ErrorCode = enum.IntEnum(
        "ErrorCode", ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
                      "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE"],
    )

    def check_enum(value: Any, enum_cls: Any, what: str) -> None:
        if not isinstance(value, enum_cls):
            raise TypeError(f"{what}: expected {enum_cls.__name__}, got {value!r}")

    class IInt8EntropyCalibrator2:
        """10.x only (deprecated since 10.1); subclasses must call ``__init__`` explicitly."""

        def __init__(self) -> None:
            self._base_initialized = True

    if major < 11:
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    trt.LayerType = enum.IntEnum("LayerType", [
        "ELEMENTWISE", "MATRIX_MULTIPLY", "CONCATENATION", "SHUFFLE", "SOFTMAX", "CAST", "REDUCE", "SHAPE",
        "QUANTIZE", "DEQUANTIZE"])
    layer_types = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "MatMul": "MATRIX_MULTIPLY",
                   "Concat": "CONCATENATION", "Softmax": "SOFTMAX", "Cast": "CAST", "ReduceSum": "REDUCE",
                   "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Unsqueeze": "SHUFFLE"}
    trt_dtypes = {1: lean.DataType.FLOAT, 10: lean.DataType.HALF, 7: lean.DataType.INT64, 6: lean.DataType.INT32,
                  9: lean.DataType.BOOL, 3: lean.DataType.INT8}

    class ITensor:
        """What Polygraphy's profile code reads of a network input: name, shape (-1 dynamic), dtype."""

        __slots__ = ("name", "shape", "dtype", "is_shape_tensor")

        def __init__(self, value_info: Any) -> None:
            tensor_type = value_info.type.tensor_type
            self.name = value_info.name
            self.shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
            self.dtype = trt_dtypes[tensor_type.elem_type]
            self.is_shape_tensor = False

    class ILayer:
        __slots__ = ("name", "type", "precision_is_set")

        def __init__(self, node: Any) -> None:
            self.name, self.type = node.name, trt.LayerType[layer_types.get(node.op_type, "ELEMENTWISE")]
            self.precision_is_set = False

    class INetworkDefinition:
        """Inputs and layers appear when an ONNX model is parsed into it (what the builder-side code reads)."""

        __slots__ = ("flags", "parsed_from", "_inputs", "_layers")

        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.parsed_from: str | None = None
            self._inputs: list[ITensor] = []
            self._layers: list[ILayer] = []

        def populate(self, model: Any) -> None:
            initializers = {init.name for init in model.graph.initializer}
            self._inputs = [ITensor(v) for v in model.graph.input if v.name not in initializers]
            self._layers = [ILayer(node) for node in model.graph.node]

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        def __iter__(self) -> Any:
            return iter(self._layers)

        def __len__(self) -> int:
            return len(self._layers)

    class OnnxParser:
        __slots__ = ("network", "logger", "_errors")

        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            if not isinstance(network, INetworkDefinition):
                raise TypeError("OnnxParser(network, logger): network must be an INetworkDefinition")
            self.network, self.logger, self._errors = network, logger, []
            state.parsers.append(self)

        def parse_from_file(self, model: str) -> bool:
            import onnx

            if not isinstance(model, str):
                raise TypeError("parse_from_file(model: str)")
            try:
                proto = onnx.load(model, load_external_data=True)  # external data resolved relative to the file
            except Exception as error:
                self._errors = [FakeParserError(trt.ErrorCode.MODEL_DESERIALIZE_FAILED, str(error), -1, "", "")]
                return False
            self._errors = list(state.parse_errors) + unparseable_nodes(proto, trt)
            self.network.parsed_from = model
            self.network.populate(proto)
            return not self._errors

        def parse(self, model: bytes, path: str | None = None) -> bool:
            raise AssertionError("the builder must use parse_from_file (external data)")

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> FakeParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors = []

    class IBuilderConfig:
        __slots__ = (
            "_builder_optimization_level", "_hardware_compatibility_level", "_profiling_verbosity",
            "_progress_monitor", "flags_set", "pools", "profiles", "timing_cache", "_int8_calibrator",
            "calibration_profile", "ignore_mismatch_used",
        )
        #: TensorRT's default pool limits when none was set (the workspace default is the device memory).
        DEFAULT_POOL = 24 << 30

        @property
        def DLA_core(self) -> int:  # noqa: N802 - TensorRT's name; -1: no DLA
            return -1

        @property
        def default_device_type(self) -> Any:
            return lean.DeviceType.GPU

        def __init__(self) -> None:
            self._builder_optimization_level = 3
            self._hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            self._profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self._progress_monitor = None
            self.flags_set: list[Any] = []
            self.pools: dict[Any, int] = {}
            self.profiles: list[Any] = []
            self.timing_cache = None
            self._int8_calibrator = None
            self.calibration_profile = None
            self.ignore_mismatch_used: list[bool] = []
            state.configs.append(self)

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            check_enum(pool, trt.MemoryPoolType, "set_memory_pool_limit(pool)")
            if not isinstance(pool_size, int) or pool_size <= 0:
                raise ValueError(f"set_memory_pool_limit: pool size must be a positive int, got {pool_size!r}")
            self.pools[pool] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            check_enum(pool, trt.MemoryPoolType, "get_memory_pool_limit(pool)")
            return self.pools.get(pool, self.DEFAULT_POOL)

        def set_flag(self, flag: Any) -> None:
            check_enum(flag, trt.BuilderFlag, "set_flag(flag)")
            self.flags_set.append(flag)

        def clear_flag(self, flag: Any) -> None:
            check_enum(flag, trt.BuilderFlag, "clear_flag(flag)")
            self.flags_set = [f for f in self.flags_set if f != flag]

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags_set

        def add_optimization_profile(self, profile: Any) -> int:
            if len(self.profiles) in state.invalid_profiles:
                state.invalid_profiles.discard(len(self.profiles))
                return -1  # TensorRT: "-1 if the profile is invalid", and the profile is not added
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        @property
        def builder_optimization_level(self) -> int:
            return self._builder_optimization_level

        @builder_optimization_level.setter
        def builder_optimization_level(self, value: int) -> None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError("builder_optimization_level: int")
            if not 0 <= value <= 5:  # TensorRT: "level must be in the range [0, 5]"
                raise ValueError(f"builder_optimization_level {value} is outside 0..5")
            self._builder_optimization_level = value

        @property
        def hardware_compatibility_level(self) -> Any:
            return self._hardware_compatibility_level

        @hardware_compatibility_level.setter
        def hardware_compatibility_level(self, value: Any) -> None:
            check_enum(value, trt.HardwareCompatibilityLevel, "hardware_compatibility_level")
            self._hardware_compatibility_level = value

        @property
        def profiling_verbosity(self) -> Any:
            return self._profiling_verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value: Any) -> None:
            check_enum(value, trt.ProfilingVerbosity, "profiling_verbosity")
            self._profiling_verbosity = value

        @property
        def progress_monitor(self) -> Any:
            return self._progress_monitor

        @progress_monitor.setter
        def progress_monitor(self, value: Any) -> None:
            if not isinstance(value, trt.IProgressMonitor):
                raise TypeError("progress_monitor: IProgressMonitor")
            self._progress_monitor = value

        def create_timing_cache(self, serialized_timing_cache: bytes) -> Any:
            blob = bytes(serialized_timing_cache)
            if blob.startswith(b"corrupt"):
                return None
            cache = strict_autospec(lean.ITimingCache)
            state.timing_blobs[id(cache)] = blob
            implement(cache.serialize, lambda: FakeHostMemory(state.timing_blobs[id(cache)] or b"fresh-cache"))
            implement(cache.combine, lambda input_cache, ignore_mismatch: True)
            return cache

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            self.ignore_mismatch_used.append(ignore_mismatch)
            if state.timing_blobs.get(id(cache), b"").startswith(b"other-gpu") and not ignore_mismatch:
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> Any:
            if self.timing_cache is not None and not state.timing_blobs[id(self.timing_cache)]:
                state.timing_blobs[id(self.timing_cache)] = b"timings-from-build"
            return self.timing_cache

    if major < 11:

        class IBuilderConfig10(IBuilderConfig):
            __slots__ = ()

            @property
            def int8_calibrator(self) -> Any:
                return self._int8_calibrator

            @int8_calibrator.setter
            def int8_calibrator(self, value: Any) -> None:
                if not isinstance(value, IInt8EntropyCalibrator2) or not getattr(value, "_base_initialized", False):
                    raise TypeError("int8_calibrator: IInt8Calibrator whose __init__ was called")
                self._int8_calibrator = value

            def set_calibration_profile(self, profile: Any) -> bool:
                self.calibration_profile = profile
                return True

        config_cls: type = IBuilderConfig10
    else:
        config_cls = IBuilderConfig

    def strongly_typed(network: INetworkDefinition) -> bool:
        if major >= 11:
            return True
        return bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    def build_errors(network: INetworkDefinition, config: Any) -> list[str]:
        """What TensorRT refuses at build time (as log errors + a None result)."""
        errors = []
        precision = {"FP16", "BF16", "INT8", "FP8", "INT4"}
        used = sorted(f.name for f in config.flags_set if f.name in precision)
        if used and strongly_typed(network):
            errors.append(f"precision flags {used} are not allowed on a strongly typed network")
        calibrator = getattr(config, "_int8_calibrator", None)
        if calibrator is not None:
            from trt_pipeline.quantize.int8 import trt_version_number

            header = bytes(calibrator.read_calibration_cache() or b"").split(b"\n")[0].decode(errors="replace")
            expected = f"TRT-{trt_version_number(version)}-EntropyCalibration2"
            if header != expected and calibrator.get_batch(["inputs_embeds"]) is None:
                errors.append(f"calibration cache header {header!r} is not {expected!r}: cache ignored, "
                              "and the calibrator supplied no batches; Calibration failure")
        return errors

    class Builder:
        __slots__ = ("logger",)

        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, trt.ILogger):
                raise TypeError("Builder(logger: ILogger)")
            self.logger = logger
            state.builders.append(self)

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            network = INetworkDefinition(int(flags))
            state.networks.append(network)
            return network

        def create_optimization_profile(self) -> Any:
            profile = strict_autospec(lean.IOptimizationProfile)
            state.profiles.append(profile)
            return profile

        def create_builder_config(self) -> Any:
            return config_cls()

        def build_serialized_network(self, network: INetworkDefinition, config: Any) -> Any:
            if network.parsed_from is None:
                raise AssertionError("build before parse")
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic selection", "Building engine", 3)
                for step in range(3):
                    state.progress_calls.append(("step", step, monitor.step_complete("Tactic selection", step)))
                monitor.phase_finish("Tactic selection")
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            for message in state.build_log_errors + build_errors(network, config):
                self.logger.log(trt.ILogger.Severity.ERROR, message)
            if state.build_result is None or build_errors(network, config):
                return None
            summary = {"onnx": Path(network.parsed_from).name, "flags": network.flags, "profiles": len(config.profiles)}
            return FakeHostMemory(b"FAKE-ENGINE" + json.dumps(summary).encode())

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        if not isinstance(logger, trt.ILogger) or not isinstance(namespace, str):
            raise TypeError("init_libnvinfer_plugins(logger: ILogger, namespace: str)")
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.INetworkDefinition = INetworkDefinition
    trt.IBuilderConfig = config_cls

    def Runtime(logger: Any) -> Any:  # noqa: N802 - mirrors trt.Runtime(logger)
        if not isinstance(logger, trt.ILogger):
            raise TypeError("Runtime(logger: ILogger)")
        if state.runtime is None:
            state.runtime = strict_autospec(lean.Runtime)
        return state.runtime

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def fake_trt_factory() -> Callable[[str], types.ModuleType]:
    return make_fake_tensorrt


@pytest.fixture
def fake_trt() -> types.ModuleType:
    return make_fake_tensorrt("11.4.0.106")


def fake_context(trt: types.ModuleType, *, cc: str = "8.9", name: str = "NVIDIA GeForce RTX 4090", cuda: str = "12.8") -> Any:
    from trt_pipeline.engine.tensorrt_import import GpuInfo, TensorRTContext, detect_shim

    return TensorRTContext(trt=trt, shim=detect_shim(trt), gpu=GpuInfo(name=name, compute_capability=cc, cuda_version=cuda))


@pytest.fixture
def make_ctx() -> Callable[..., Any]:
    return fake_context


# --------------------------------------------------------------------------------------------
# tiny real ONNX graphs following docs/artifacts.md
# --------------------------------------------------------------------------------------------

TOY = {"hidden": 8, "vocab": 16, "kv_heads": 2, "head_dim": 4, "rotary": 4, "layers": 1,
       "patch_dim": 12, "v_hidden": 8, "v_head": 4, "out_hidden": 8}

CONTRACT_DIMS = {
    "batch_size": {"min": 1, "opt": 1, "max": 4},
    "sequence_length": {"min": 1, "opt": 128, "max": 512},
    "past_sequence_length": {"min": 0, "opt": 256, "max": 1024},
    "total_sequence_length": {"min": 1, "opt": 384, "max": 1536, "expr": "past_sequence_length + sequence_length"},
    "num_patches": {"min": 16, "opt": 256, "max": 1024},
    "num_image_tokens": {"min": 4, "opt": 64, "max": 256, "expr": "num_patches / merge^2"},
}


def decoder_io(layers: int = TOY["layers"]) -> tuple[list[dict], list[dict]]:
    b, s, p, t = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    kv, hd = TOY["kv_heads"], TOY["head_dim"]
    inputs = [
        {"name": "inputs_embeds", "dtype": "float32", "shape": [b, s, TOY["hidden"]]},
        {"name": "attention_mask", "dtype": "int64", "shape": [b, t]},
        {"name": "rope_cos", "dtype": "float32", "shape": [b, s, TOY["rotary"]]},
        {"name": "rope_sin", "dtype": "float32", "shape": [b, s, TOY["rotary"]]},
    ]
    outputs = [{"name": "logits", "dtype": "float32", "shape": [b, s, TOY["vocab"]]}]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append({"name": f"past_key_values.{i}.{kind}", "dtype": "float32", "shape": [b, kv, p, hd]})
            outputs.append({"name": f"present.{i}.{kind}", "dtype": "float32", "shape": [b, kv, t, hd]})
    return inputs, outputs


def vision_io() -> tuple[list[dict], list[dict]]:
    n = "num_patches"
    inputs = [
        {"name": "pixel_values", "dtype": "float32", "shape": [n, TOY["patch_dim"]]},
        {"name": "rotary_cos", "dtype": "float32", "shape": [n, TOY["v_head"]]},
        {"name": "rotary_sin", "dtype": "float32", "shape": [n, TOY["v_head"]]},
        {"name": "position_embeddings", "dtype": "float32", "shape": [n, TOY["v_hidden"]]},
    ]
    outputs = [{"name": "image_features", "dtype": "float32", "shape": ["num_image_tokens", TOY["out_hidden"]]}]
    return inputs, outputs


def _value_info(spec: dict) -> Any:
    from onnx import TensorProto, helper

    dtype = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}[spec["dtype"]]
    return helper.make_tensor_value_info(spec["name"], dtype, spec["shape"])


def toy_decoder_model(layers: int = TOY["layers"]) -> Any:
    """logits = (x * concat(cos, sin)) @ W + 1e-3 * sum(mask); present = concat(past, reshape(x @ Wk))."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inputs, outputs = decoder_io(layers)
    h, v, kv, hd = TOY["hidden"], TOY["vocab"], TOY["kv_heads"], TOY["head_dim"]
    inits = [
        numpy_helper.from_array(rng.standard_normal((h, v)).astype(np.float32), "W_lm"),
        numpy_helper.from_array(np.array([0, 0, kv, hd], dtype=np.int64), "kv_shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1e-3, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Concat", ["rope_cos", "rope_sin"], ["rope"], axis=-1, name="rope_concat"),
        helper.make_node("Mul", ["inputs_embeds", "rope"], ["xr"], name="rope_mul"),
        helper.make_node("MatMul", ["xr", "W_lm"], ["logits_raw"], name="lm_head"),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["mask_sum"], keepdims=1, name="mask_sum"),
        helper.make_node("Unsqueeze", ["mask_sum", "axis1"], ["mask_sum3"], name="mask_unsqueeze"),
        helper.make_node("Mul", ["mask_sum3", "eps"], ["mask_term"], name="mask_scale"),
        helper.make_node("Add", ["logits_raw", "mask_term"], ["logits"], name="logits_add"),
    ]
    for i in range(layers):
        for kind in ("key", "value"):
            w = f"W_{kind}{i}"
            inits.append(numpy_helper.from_array(rng.standard_normal((h, kv * hd)).astype(np.float32), w))
            nodes += [
                helper.make_node("MatMul", ["inputs_embeds", w], [f"{kind}{i}_proj"], name=f"layers.{i}.{kind}_proj"),
                helper.make_node("Reshape", [f"{kind}{i}_proj", "kv_shape"], [f"{kind}{i}_4d"], name=f"layers.{i}.{kind}_reshape"),
                helper.make_node("Transpose", [f"{kind}{i}_4d"], [f"{kind}{i}_new"], perm=[0, 2, 1, 3], name=f"layers.{i}.{kind}_transpose"),
                helper.make_node("Concat", [f"past_key_values.{i}.{kind}", f"{kind}{i}_new"], [f"present.{i}.{kind}"], axis=2,
                                 name=f"layers.{i}.{kind}_cache"),
            ]
    graph = helper.make_graph(nodes, "toy_decoder", [_value_info(s) for s in inputs], [_value_info(s) for s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def toy_vision_model() -> Any:
    """image_features = reshape(softmax(h h^T) h, [-1, 4*hidden]) @ Wm with h = px @ Wp + pos."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    inputs, outputs = vision_io()
    pd, vh, out = TOY["patch_dim"], TOY["v_hidden"], TOY["out_hidden"]
    inits = [
        numpy_helper.from_array(rng.standard_normal((pd, vh)).astype(np.float32), "W_patch"),
        numpy_helper.from_array(rng.standard_normal((4 * vh, out)).astype(np.float32), "W_merge"),
        numpy_helper.from_array(np.array([-1, 4 * vh], dtype=np.int64), "merge_shape"),
    ]
    nodes = [
        helper.make_node("MatMul", ["pixel_values", "W_patch"], ["h0"], name="patch_embed"),
        helper.make_node("Add", ["h0", "position_embeddings"], ["h1"], name="pos_add"),
        helper.make_node("Concat", ["rotary_cos", "rotary_sin"], ["rot"], axis=-1, name="rot_concat"),
        helper.make_node("Mul", ["h1", "rot"], ["h"], name="rot_mul"),
        helper.make_node("Transpose", ["h"], ["hT"], perm=[1, 0], name="h_transpose"),
        helper.make_node("MatMul", ["h", "hT"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["attn", "h"], ["ctx"], name="attn_out"),
        helper.make_node("Reshape", ["ctx", "merge_shape"], ["merged"], name="merge"),
        helper.make_node("MatMul", ["merged", "W_merge"], ["image_features"], name="merger"),
    ]
    graph = helper.make_graph(nodes, "toy_vision", [_value_info(s) for s in inputs], [_value_info(s) for s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_export_dir(
    root: Path,
    *,
    precisions: Sequence[str] | None = None,
    external_data: bool = False,
    calibration_cache: bool = True,
    dims: dict | None = None,
) -> Path:
    """A fake ``autoglm-trt export`` output folder (docs/artifacts.md) with tiny real ONNX files.

    ``precisions``: the ONNX variant folders to write; default every precision the build accepts.
    """
    import onnx

    from trt_pipeline.artifacts import sha256_file, write_json_atomic
    from trt_pipeline.config.build import PRECISIONS

    precisions = tuple(PRECISIONS) if precisions is None else precisions

    root.mkdir(parents=True, exist_ok=True)
    models = {"vision_encoder": (toy_vision_model, vision_io), "decoder": (toy_decoder_model, decoder_io)}
    export_components = {}
    for precision in precisions:
        folder = root / "onnx" / precision
        folder.mkdir(parents=True, exist_ok=True)
        listed = {}
        for name, (make, io) in models.items():
            path = folder / f"{name}.onnx"
            model = make()
            if external_data:
                onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=f"{name}.onnx.data", size_threshold=0)
            else:
                onnx.save_model(model, str(path))
            inputs, outputs = io()
            listed[name] = {
                "file": path.name,
                "external_data": f"{name}.onnx.data" if external_data else None,
                "sha256": sha256_file(path),
                "inputs": inputs,
                "outputs": outputs,
            }
            if precision == "fp32":
                export_components[name] = {**listed[name], "file": f"onnx/fp32/{path.name}"}
        write_json_atomic(folder / "manifest.json", {"precision": precision, "stage": "test", "components": listed})
        if precision == "int8" and calibration_cache:
            (folder / "calibration.cache").write_text("TRT-1001-EntropyCalibration2\ninputs_embeds: 3c010a14\n")
    if not export_components:
        for name, (_, io) in models.items():
            inputs, outputs = io()
            export_components[name] = {"file": f"onnx/fp32/{name}.onnx", "inputs": inputs, "outputs": outputs}
    write_json_atomic(root / "export.json", {
        "format_version": 1, "model_type": "glm4v", "opset": 17,
        "dims": dims or CONTRACT_DIMS,
        "components": export_components,
    })
    return root


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return write_export_dir(tmp_path / "out")


@pytest.fixture
def make_export_dir(tmp_path: Path) -> Callable[..., Path]:
    counter = {"n": 0}

    def make(**kwargs: Any) -> Path:
        counter["n"] += 1
        return write_export_dir(tmp_path / f"out{counter['n']}", **kwargs)

    return make


# --------------------------------------------------------------------------------------------
# memory helpers for fake engines that compute through real addresses
# --------------------------------------------------------------------------------------------


def read_address(ptr: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def write_address(ptr: int, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    if array.size:
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)


@pytest.fixture
def fakes() -> types.SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not importable by name)."""
    return types.SimpleNamespace(
        lean=lean,
        strict_autospec=strict_autospec,
        implement=implement,
        execution_context=execution_context,
        doc_signatures=doc_signatures,
        make_fake_tensorrt=make_fake_tensorrt,
        fake_context=fake_context,
        FakeParserError=FakeParserError,
        write_export_dir=write_export_dir,
        decoder_io=decoder_io,
        vision_io=vision_io,
        toy_decoder_model=toy_decoder_model,
        toy_vision_model=toy_vision_model,
        CONTRACT_DIMS=CONTRACT_DIMS,
        TOY=TOY,
        read_address=read_address,
        write_address=write_address,
    )


class OrinCudart:
    """cuda.bindings.runtime as cuda-python has it on a Jetson Orin (JetPack 6, CUDA 12.6): what
    doctor and require_tensorrt see on a JetPack without CUDA PyTorch."""


    class Props:
        name = b"Orin\x00\x00"
        major, minor = 8, 7
        totalGlobalMem = 64 << 30
        integrated = 1

    def __init__(self) -> None:
        self.devices: list[int] = []

    def cudaGetDeviceCount(self):  # noqa: N802
        return (0, 1)

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return (0, self.Props())

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return (0, 12060)

    def cudaSetDevice(self, index):  # noqa: N802
        self.devices.append(index)
        return (0,)


@pytest.fixture
def orin_cuda_python(monkeypatch) -> OrinCudart:
    """Installs a fake ``cuda.bindings.runtime`` of a Jetson Orin in sys.modules; returns it."""
    cudart = OrinCudart()
    package = types.ModuleType("cuda.bindings")
    package.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return cudart
