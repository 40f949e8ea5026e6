"""TensorRT runner: a Polygraphy ``BaseRunner`` over an engine built by :mod:`trt_pipeline.engine.builder`.

Same protocol as the torch and ONNX Runtime runners: ``with TensorRTRunner(path) as runner:
outputs = runner.infer(feed_dict)`` with NumPy arrays in and out (or torch tensors in -> torch
tensors out), so Polygraphy's ``Comparator.run`` and the generic generation loop drive it.

* **Refuses mismatched engines before deserializing**: :func:`load_engine` reads the manifest,
  checks it against the local TensorRT version and GPU
  (:func:`~trt_pipeline.engine.manifest.check_compatible`) and the engine's sha256, and only then
  calls ``Runtime.deserialize_cuda_engine``.
* **Name-based I/O** (TensorRT 10/11 API): ``set_optimization_profile_async``, ``set_input_shape``,
  ``set_tensor_address``, ``get_tensor_shape`` for outputs, ``execute_async_v3(stream)``. All of these
  exist in the 11.4 bindings and the tests run them against ``create_autospec`` of the real classes.
* **Profile selection** from the input shapes (:func:`~trt_pipeline.engine.profiles.select_profile`:
  decoder ``sequence_length`` > 1 -> prefill, == 1 -> decode).
* **Device memory** through torch CUDA tensors (preferred) or cuda-python (``cudaMalloc`` /
  ``cudaMemcpyAsync``, e.g. on a Jetson without a CUDA build of PyTorch).
* **Optional CUDA graphs** for decode steps (``cuda_graph=True``, torch backend): per distinct
  decode shape, a dedicated execution context is run once, captured on a non-default stream with
  ``torch.cuda.graph`` and replayed afterwards (a captured graph fixes shapes, addresses and the
  context). Graphs are kept in a small LRU. Useful when the same decode shape repeats (benchmarks,
  fixed-length decode); a growing KV cache gives a new shape every step.

Why this is not Polygraphy's ``TrtRunner`` over ``EngineFromPath`` (the builder does use Polygraphy's
loaders, see :mod:`trt_pipeline.engine.builder`); each point is something the pipeline needs and
Polygraphy 0.53.6 (``polygraphy/backend/trt/{runner,loader,file_reader}.py``) does not do:

* the manifest and sha256 are checked before TensorRT sees a byte; ``EngineFromPath`` deserializes
  whatever file it is given and sets ``engine_host_code_allowed = True`` for every plan, here only
  for plans whose manifest says they are version compatible (host code embedded in the plan runs);
* the plan is streamed in bounded chunks (:mod:`trt_pipeline.runtime.plan_stream` says why not
  Polygraphy's ``FileReader``);
* the profile is chosen per call from the input shapes (prefill / decode / append); ``TrtRunner`` keeps
  one profile until ``set_profile`` is called;
* decode steps can be replayed as CUDA graphs over runner-owned static buffers, one execution context
  per captured shape; ``TrtRunner`` has no graphs and hands outputs to an ``IOutputAllocator`` that
  reallocates during execution, which a captured graph cannot contain;
* device memory comes from torch or from cuda-python (Jetson without a CUDA build of PyTorch) with
  every allocation released per call (counted in the tests); ``TrtRunner`` uses Polygraphy's ctypes
  CUDA wrapper and keeps its buffers for the runner's life.

References: IExecutionContext / ICudaEngine / Runtime in the TensorRT Python API
(https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html),
Polygraphy's TrtRunner (NVIDIA/TensorRT tools/Polygraphy/polygraphy/backend/trt/runner.py),
torch.cuda.graph (https://docs.pytorch.org/docs/stable/generated/torch.cuda.graphs.graph.html).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner

from trt_pipeline.artifacts.layout import engine_path
from trt_pipeline.engine.manifest import (
    EngineManifest,
    _rebuild_hint,
    check_compatible,
    check_engine_identity,
    read_manifest,
)
from trt_pipeline.engine.profiles import Profile, select_profile
from trt_pipeline.engine.tensorrt_import import TensorRTContext, require_tensorrt, select_device
from trt_pipeline.engine.trt_logger import capture_log, process_logger
from trt_pipeline.runtime.plan_stream import PlanFile, has_stream_reader, make_stream_reader
from trt_pipeline.errors import ConfigError, EngineCompatibilityError, PipelineError, ShapeError, TensorRTUnavailableError

#: TensorRT DataType member name -> NumPy dtype (None: no NumPy equivalent).
NUMPY_DTYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "BF16": None,
    "FP8": None,
    "INT4": None,
    "FP4": None,
    "E8M0": None,
}
TORCH_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "BF16": "bfloat16",
    "FP8": "float8_e4m3fn",  # TensorRT's FP8 is E4M3
}

#: Profiles whose steps may be captured into CUDA graphs.
GRAPH_PROFILES = frozenset({"decode"})


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedEngine:
    ctx: TensorRTContext
    manifest: EngineManifest
    runtime: Any
    engine: Any
    logger: Any
    warnings: list[str] = field(default_factory=list)


def load_engine(
    engine_path: Path | str,
    *,
    ctx: TensorRTContext | None = None,
    device_index: int = 0,
    verify_sha256: bool = True,
) -> LoadedEngine:
    """Check the manifest against this machine, then deserialize the engine onto ``device_index``.

    The plan's size and (unless ``verify_sha256=False``) its sha256, computed in chunks, are checked
    first; then the plan is streamed to TensorRT (:mod:`trt_pipeline.runtime.plan_stream`:
    ``IStreamReaderV2`` or a memory map, never a full host copy).

    Raises:
        TensorRTUnavailableError: no TensorRT or no GPU.
        EngineCompatibilityError: no/corrupt manifest, other TensorRT version or GPU architecture, engine
            file not the one the manifest describes, or TensorRT refused the plan.
    """
    engine_path = Path(engine_path)
    ctx = ctx or require_tensorrt(device_index)
    manifest = read_manifest(engine_path)
    warnings = check_compatible(manifest, ctx.version, ctx.gpu, engine_path=engine_path)
    hint = _rebuild_hint(engine_path, manifest.precision)
    if not engine_path.is_file():
        raise EngineCompatibilityError(f"engine {engine_path} does not exist", path=engine_path, hint=hint)
    check_engine_identity(manifest, engine_path, size=engine_path.stat().st_size)
    select_device(ctx.gpu.device_index)
    trt, logger = ctx.trt, process_logger(ctx.trt)
    runtime = trt.Runtime(logger)
    if manifest.version_compatible:
        # Version-compatible plans embed the lean runtime (host code); it must be allowed explicitly.
        runtime.engine_host_code_allowed = True
    engine, details = _deserialize(trt, runtime, engine_path, manifest, verify_sha256=verify_sha256)
    if engine is None:
        raise EngineCompatibilityError(
            f"TensorRT {ctx.version} could not deserialize {engine_path} although its manifest matches this "
            f"machine: {details}",
            path=engine_path,
            hint=hint,
        )
    if int(engine.num_optimization_profiles) != len(manifest.profiles):
        raise EngineCompatibilityError(
            f"{engine_path} has {engine.num_optimization_profiles} optimization profiles but its manifest lists "
            f"{len(manifest.profiles)}",
            path=engine_path,
            hint=hint,
        )
    return LoadedEngine(ctx, manifest, runtime, engine, logger, warnings)


def _deserialize(trt: Any, runtime: Any, engine_path: Path, manifest: EngineManifest, *, verify_sha256: bool) -> tuple[Any, str]:
    """(engine or None, TensorRT's error details): streamed when TensorRT has ``IStreamReaderV2``, else mmap."""
    with capture_log(trt) as log, PlanFile(engine_path) as plan:
        check_engine_identity(manifest, engine_path, size=plan.size, sha256=plan.hexdigest() if verify_sha256 else None)
        if has_stream_reader(trt):
            reader = make_stream_reader(trt, plan)
            engine = runtime.deserialize_cuda_engine(reader)
            del reader
        else:
            view = plan.buffer()
            engine = runtime.deserialize_cuda_engine(view)
            view.release()
    return engine, log.details(3, "no details")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    is_input: bool
    dtype_name: str  # TensorRT DataType member name
    shape: tuple[int, ...]  # -1 for dynamic axes

    @property
    def numpy_dtype(self) -> Any:
        return NUMPY_DTYPES.get(self.dtype_name)


def engine_io(trt: Any, engine: Any) -> list[TensorInfo]:
    """I/O tensors of an engine by name (``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` ...)."""
    infos = []
    for index in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        dtype = engine.get_tensor_dtype(name)
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        infos.append(TensorInfo(name, mode == trt.TensorIOMode.INPUT, getattr(dtype, "name", str(dtype)), shape))
    return infos


# --------------------------------------------------------------------------------------------
# Device memory backends
# --------------------------------------------------------------------------------------------


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "data_ptr")


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in (value.shape if _is_torch(value) else np.shape(value)))


class TorchDeviceBackend:
    """Device buffers as torch tensors on ``device``; work is ordered on one non-default stream."""

    supports_graphs = True

    def __init__(self, device: str = "cuda:0", *, stream: Any = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.stream = stream if stream is not None else torch.cuda.Stream(device=self.device)
        self._scratch = None

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def _on_stream(self) -> Any:
        if self.device.type == "cuda":
            return self.torch.cuda.stream(self.stream)
        return contextlib.nullcontext()

    def torch_dtype(self, info: TensorInfo) -> Any:
        """The torch dtype of an engine tensor; PipelineError for packed types (INT4/FP4/E8M0) with no torch dtype."""
        name = TORCH_DTYPES.get(info.dtype_name)
        if name is None or not hasattr(self.torch, name):
            raise PipelineError(
                f"engine tensor {info.name} has TensorRT type {info.dtype_name}, which has no torch/NumPy buffer type; "
                "keep packed INT4/FP4 tensors inside the engine (quantize weights, not graph inputs/outputs)")
        return getattr(self.torch, name)

    def upload(self, value: Any, info: TensorInfo) -> Any:
        expected = self.torch_dtype(info)
        with self._on_stream():
            if _is_torch(value):
                if value.dtype != expected:
                    raise ShapeError(f"input {info.name} has dtype {value.dtype}, the engine expects {expected}")
                return value.to(device=self.device, non_blocking=True).contiguous()
            array = np.ascontiguousarray(value)
            if info.numpy_dtype is None or array.dtype != np.dtype(info.numpy_dtype):
                raise ShapeError(f"input {info.name} has dtype {array.dtype}, the engine expects {info.dtype_name.lower()} ({expected})")
            return self.torch.from_numpy(array).to(device=self.device, non_blocking=True)

    def empty(self, shape: tuple[int, ...], info: TensorInfo) -> Any:
        with self._on_stream():
            return self.torch.empty(shape, dtype=self.torch_dtype(info), device=self.device)

    def copy_into(self, dst: Any, value: Any, info: TensorInfo) -> None:
        src = self.upload(value, info)
        with self._on_stream():
            dst.copy_(src, non_blocking=True)

    def address(self, buffer: Any) -> int:
        if buffer.numel() == 0:  # empty tensors (e.g. past_sequence_length 0) still get a valid address
            if self._scratch is None:
                self._scratch = self.torch.empty(256, dtype=self.torch.uint8, device=self.device)
            return int(self._scratch.data_ptr())
        return int(buffer.data_ptr())

    def wait_for_producers(self) -> None:
        if self.device.type == "cuda":
            self.stream.wait_stream(self.torch.cuda.current_stream(self.device))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_numpy(self, buffer: Any) -> np.ndarray:
        if buffer.dtype == self.torch.bfloat16:
            raise PipelineError("a bfloat16 output has no NumPy dtype; call infer(..., copy_outputs_to_host=False)")
        return buffer.cpu().numpy()

    def to_torch(self, buffer: Any, *, host: bool) -> Any:
        return buffer.cpu() if host else buffer

    def clone(self, buffer: Any) -> Any:
        with self._on_stream():
            return buffer.clone()

    def release(self, buffer: Any) -> None:
        return None

    def capture(self, launch: Callable[[], bool]) -> Any:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            if not launch():
                raise PipelineError("execute_async_v3 failed while capturing a CUDA graph")
        return graph

    def replay(self, graph: Any) -> None:
        with self._on_stream():
            graph.replay()

    def close(self) -> None:
        self._scratch = None


@dataclass(eq=False)
class DeviceArray:
    """A cudaMalloc'ed buffer (cuda-python backend)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: Any
    nbytes: int
    host: Any = None  # host array kept alive until its async copy has run


class CudaPythonDeviceBackend:
    """Device buffers with cuda-python's runtime API (``cuda.bindings.runtime``), as in NVIDIA's
    samples/python/common_runtime.py. NumPy only; no CUDA graphs."""

    supports_graphs = False

    def __init__(self, cudart: Any, device_index: int = 0) -> None:
        self.cudart = cudart
        self.device_index = device_index
        self._check(cudart.cudaSetDevice(device_index), "cudaSetDevice")  # buffers on the engine's device
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._owned: list[DeviceArray] = []

    def _check(self, result: Any, what: str) -> Any:
        err, rest = result[0], result[1:]
        if int(getattr(err, "value", err)) != 0:
            raise PipelineError(f"CUDA error in {what}: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        ptr = self._check(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
        array = DeviceArray(int(ptr), tuple(shape), np.dtype(dtype), nbytes)
        self._owned.append(array)
        return array

    def upload(self, value: Any, info: TensorInfo) -> DeviceArray:
        if _is_torch(value):
            raise ConfigError("torch tensors need the torch device backend (a CUDA build of PyTorch)")
        array = np.ascontiguousarray(value)
        if info.numpy_dtype is None or array.dtype != np.dtype(info.numpy_dtype):
            raise ShapeError(f"input {info.name} has dtype {array.dtype}, the engine expects {info.dtype_name.lower()}")
        buffer = self._alloc(array.shape, array.dtype)
        if buffer.nbytes:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(self.cudart.cudaMemcpyAsync(buffer.ptr, array.ctypes.data, buffer.nbytes, kind, self.stream), "cudaMemcpyAsync")
        buffer.host = array  # keep the host array alive until the copy is done
        return buffer

    def empty(self, shape: tuple[int, ...], info: TensorInfo) -> DeviceArray:
        if info.numpy_dtype is None:
            raise PipelineError(f"output {info.name} ({info.dtype_name}) has no NumPy dtype; use the torch backend")
        return self._alloc(shape, info.numpy_dtype)

    def address(self, buffer: DeviceArray) -> int:
        return buffer.ptr

    def wait_for_producers(self) -> None:
        return None

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def to_numpy(self, buffer: DeviceArray) -> np.ndarray:
        host = np.empty(buffer.shape, dtype=buffer.dtype)
        if buffer.nbytes:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, buffer.ptr, buffer.nbytes, kind, self.stream), "cudaMemcpyAsync")
            self.synchronize()
        return host

    def to_torch(self, buffer: DeviceArray, *, host: bool) -> Any:
        raise ConfigError("torch outputs need the torch device backend (a CUDA build of PyTorch)")

    def release(self, buffer: DeviceArray) -> None:
        if buffer in self._owned:
            self._owned.remove(buffer)
            self._check(self.cudart.cudaFree(buffer.ptr), "cudaFree")

    def close(self) -> None:
        for buffer in list(self._owned):
            self.release(buffer)
        self._check(self.cudart.cudaStreamDestroy(self.stream), "cudaStreamDestroy")


def default_backend(device_index: int = 0) -> Any:
    """Torch CUDA tensors if PyTorch has CUDA, else cuda-python, else a one-line error."""
    try:
        import torch

        if torch.cuda.is_available():
            return TorchDeviceBackend(f"cuda:{device_index}")
    except ImportError:
        pass
    from trt_pipeline.engine.tensorrt_import import INSTALL_HINT, import_cudart

    cudart = import_cudart()
    if cudart is not None:
        return CudaPythonDeviceBackend(cudart, device_index)
    raise TensorRTUnavailableError(
        f"the TensorRT runner needs device memory from a CUDA build of PyTorch or from cuda-python; neither is "
        f"usable here: {INSTALL_HINT}."
    )


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


@dataclass
class _GraphEntry:
    context: Any
    graph: Any
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class TensorRTRunner(BaseRunner):
    """Polygraphy runner for one ``COMPONENT.PRECISION.engine``.

    Args:
        engine_path: the engine; its ``.engine.json`` manifest must sit beside it.
        name: runner name (Polygraphy reports).
        device_index: CUDA device.
        cuda_graph: capture/replay decode steps as CUDA graphs (torch backend only).
        max_graphs: how many captured graphs (one execution context each) to keep.
        ctx: injected TensorRT context (tests); default :func:`require_tensorrt`.
        backend: injected device backend (tests); default :func:`default_backend`.
        verify_sha256: check the engine's sha256 against its manifest (size is always checked).
    """

    def __init__(
        self,
        engine_path: Path | str,
        *,
        name: str | None = None,
        device_index: int = 0,
        cuda_graph: bool = False,
        max_graphs: int = 4,
        ctx: TensorRTContext | None = None,
        backend: Any = None,
        verify_sha256: bool = True,
    ) -> None:
        super().__init__(name=name, prefix="trt-runner")
        self.engine_path = Path(engine_path)
        self.device_index = device_index
        self.cuda_graph = cuda_graph
        self.max_graphs = max(1, int(max_graphs))
        self._injected_ctx = ctx
        self._injected_backend = backend
        self.verify_sha256 = verify_sha256
        self._uncapturable: set[Any] = set()
        self.graph_fallbacks: list[str] = []  # shapes whose capture failed (plain execution instead), with why

    # -- lifecycle ---------------------------------------------------------------------------

    def activate_impl(self) -> None:
        loaded = load_engine(
            self.engine_path, ctx=self._injected_ctx, device_index=self.device_index, verify_sha256=self.verify_sha256
        )
        backend = self._injected_backend if self._injected_backend is not None else default_backend(self.device_index)
        if self.cuda_graph and not getattr(backend, "supports_graphs", False):
            raise ConfigError("cuda_graph=True needs the torch device backend (a CUDA build of PyTorch)")
        context = loaded.engine.create_execution_context()
        if context is None:
            raise PipelineError(
                f"TensorRT could not create an execution context for {self.engine_path} (out of device memory?)",
                path=self.engine_path,
            )
        io = engine_io(loaded.ctx.trt, loaded.engine)
        inputs = OrderedDict((t.name, t) for t in io if t.is_input)
        outputs = OrderedDict((t.name, t) for t in io if not t.is_input)
        for profile in loaded.manifest.profiles:
            unknown = sorted(set(profile.shapes) - set(inputs))
            if unknown:
                raise EngineCompatibilityError(
                    f"{self.engine_path}: manifest profile {profile.name} names inputs the engine does not have: "
                    f"{', '.join(unknown)}",
                    path=self.engine_path,
                    hint=_rebuild_hint(self.engine_path, loaded.manifest.precision),
                )
        self._loaded = loaded
        self._backend = backend
        self._context = context
        self._inputs = inputs
        self._outputs = outputs
        self._active_profiles: dict[int, int] = {id(context): 0}
        self._graphs: OrderedDict[Any, _GraphEntry] = OrderedDict()
        self._uncapturable.clear()

    def deactivate_impl(self) -> None:
        for entry in self._graphs.values():
            for buffer in (*entry.inputs.values(), *entry.outputs.values()):
                self._backend.release(buffer)
        self._graphs.clear()
        self._backend.close()
        del self._graphs, self._active_profiles, self._outputs, self._inputs, self._context, self._backend, self._loaded

    # -- metadata ----------------------------------------------------------------------------

    @property
    def manifest(self) -> EngineManifest:
        return self._loaded.manifest

    @property
    def profiles(self) -> tuple[Profile, ...]:
        return self._loaded.manifest.profiles

    @property
    def warnings(self) -> list[str]:
        return list(self._loaded.warnings)

    def get_input_metadata_impl(self) -> Any:
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for info in self._inputs.values():
            dtype = info.numpy_dtype if info.numpy_dtype is not None else info.dtype_name.lower()
            meta.add(info.name, dtype, tuple(None if d < 0 else d for d in info.shape))
        return meta

    # -- inference ---------------------------------------------------------------------------

    def select_profile(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """Profile index for these input shapes (see :func:`~trt_pipeline.engine.profiles.select_profile`)."""
        return select_profile(self.profiles, shapes, component=self.manifest.component)

    def infer_impl(self, feed_dict: Mapping[str, Any], copy_outputs_to_host: bool | None = None) -> OrderedDict:
        """Run the engine.

        Args:
            feed_dict: input name -> NumPy array or torch tensor (CPU or CUDA).
            copy_outputs_to_host: default True. False returns torch tensors that stay on the device.

        Returns:
            Output name -> NumPy array (NumPy inputs) or torch tensor (torch inputs, or
            ``copy_outputs_to_host=False``).
        """
        start = time.perf_counter()
        copy_outputs_to_host = True if copy_outputs_to_host is None else copy_outputs_to_host
        missing = [n for n in self._inputs if n not in feed_dict]
        extra = [n for n in feed_dict if n not in self._inputs]
        if missing or extra:
            raise ShapeError(
                f"{self.engine_path.name}: "
                + (f"missing inputs {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unknown inputs {', '.join(extra)}" if extra else ""),
                hint=f"the engine's inputs are {', '.join(self._inputs)}",
            )
        shapes = {name: _shape_of(value) for name, value in feed_dict.items()}
        use_torch = any(_is_torch(v) for v in feed_dict.values())
        index = self.select_profile(shapes)
        profile = self.profiles[index]
        if self.cuda_graph and profile.name in GRAPH_PROFILES:
            buffers = self._run_graph(index, shapes, feed_dict)
        else:
            buffers = self._run(self._context, index, shapes, feed_dict)
        result = self._collect(buffers, to_host=copy_outputs_to_host, as_torch=use_torch)
        self.inference_time = time.perf_counter() - start
        return result

    def _collect(self, buffers: Mapping[str, Any], *, to_host: bool, as_torch: bool) -> OrderedDict:
        """Outputs as host arrays/tensors (the device buffers are released: one allocation per output
        per call, freed here -- the cuda-python backend used to keep them until close), or the
        device tensors themselves (``to_host=False``, torch backend: the caller owns them)."""
        result: OrderedDict[str, Any] = OrderedDict()
        for name, buffer in buffers.items():
            if not to_host:
                result[name] = self._backend.to_torch(buffer, host=False)
                continue
            try:
                result[name] = self._backend.to_torch(buffer, host=True) if as_torch else self._backend.to_numpy(buffer)
            finally:
                self._backend.release(buffer)
        return result

    def _select(self, context: Any, index: int) -> None:
        if self._active_profiles.get(id(context)) == index:
            return
        if not context.set_optimization_profile_async(index, self._backend.stream_handle):
            raise PipelineError(f"{self.engine_path.name}: TensorRT refused optimization profile {index}")
        self._active_profiles[id(context)] = index

    def _bind(
        self, context: Any, index: int, shapes: Mapping[str, tuple[int, ...]], input_buffers: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Set profile, input shapes and addresses; allocate outputs; return output buffers."""
        self._select(context, index)
        for name, info in self._inputs.items():
            if not context.set_input_shape(name, shapes[name]):
                raise ShapeError(
                    f"{self.engine_path.name}: TensorRT rejected shape {shapes[name]} for {name} in profile "
                    f"{self.profiles[index].name} ({self.profiles[index].shapes.get(name)})"
                )
            if not context.set_tensor_address(name, self._backend.address(input_buffers[name])):
                raise PipelineError(f"{self.engine_path.name}: set_tensor_address failed for input {name}")
        outputs = {}
        for name, info in self._outputs.items():
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise PipelineError(f"{self.engine_path.name}: output {name} has unresolved shape {shape}")
            buffer = self._backend.empty(shape, info)
            if not context.set_tensor_address(name, self._backend.address(buffer)):
                raise PipelineError(f"{self.engine_path.name}: set_tensor_address failed for output {name}")
            outputs[name] = buffer
        return outputs

    def _execute(self, context: Any) -> None:
        """Launch on the runner's stream (producers were awaited before the inputs were uploaded)."""
        with capture_log(self._loaded.ctx.trt) as log:
            ok = context.execute_async_v3(self._backend.stream_handle)
        if not ok:
            raise PipelineError(f"{self.engine_path.name}: execute_async_v3 failed: {log.details(3, 'see the TensorRT log')}")

    def _run(self, context: Any, index: int, shapes: Mapping[str, tuple[int, ...]], feed: Mapping[str, Any]) -> dict[str, Any]:
        self._backend.wait_for_producers()  # inputs made on the caller's stream must be complete before we copy them
        inputs = {name: self._backend.upload(feed[name], info) for name, info in self._inputs.items()}
        outputs = self._bind(context, index, shapes, inputs)
        self._execute(context)
        self._backend.synchronize()
        for buffer in inputs.values():
            self._backend.release(buffer)
        return outputs

    def _run_graph(self, index: int, shapes: Mapping[str, tuple[int, ...]], feed: Mapping[str, Any]) -> dict[str, Any]:
        """Replay (or capture) the CUDA graph of this shape; plain execution when capture is impossible."""
        key = (index, tuple(sorted(shapes.items())))
        if key in self._uncapturable:
            return self._run(self._context, index, shapes, feed)
        entry = self._graphs.get(key)
        self._backend.wait_for_producers()
        if entry is not None:
            self._graphs.move_to_end(key)
            for name, info in self._inputs.items():
                self._backend.copy_into(entry.inputs[name], feed[name], info)
            self._backend.replay(entry.graph)
            outputs = entry.outputs
        else:
            entry, outputs = self._capture(key, index, shapes, feed)
        outputs = {name: self._backend.clone(buffer) for name, buffer in outputs.items()}
        self._backend.synchronize()  # the clones are enqueued on the runner's stream; host reads come next
        return outputs

    def _capture(
        self, key: Any, index: int, shapes: Mapping[str, tuple[int, ...]], feed: Mapping[str, Any]
    ) -> tuple[_GraphEntry | None, dict[str, Any]]:
        """Run once on runner-owned static inputs, then capture; on failure keep the run's outputs and
        remember the shape as uncapturable (trtexec falls back to plain launches the same way)."""
        context = self._loaded.engine.create_execution_context()
        if context is None:
            raise PipelineError(f"{self.engine_path.name}: no device memory for a CUDA-graph execution context")
        inputs = {name: self._backend.empty(shapes[name], info) for name, info in self._inputs.items()}
        for name, info in self._inputs.items():
            self._backend.copy_into(inputs[name], feed[name], info)
        outputs = self._bind(context, index, shapes, inputs)
        self._execute(context)  # TensorRT must run once before capture
        self._backend.synchronize()
        try:
            graph = self._backend.capture(lambda: bool(context.execute_async_v3(self._backend.stream_handle)))
        except Exception as error:  # noqa: BLE001 - any capture failure means: run without graphs
            self._uncapturable.add(key)
            self.graph_fallbacks.append(f"{shapes}: {error}")
            self._active_profiles.pop(id(context), None)
            return None, outputs
        entry = _GraphEntry(context, graph, inputs, outputs)
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            _, old = self._graphs.popitem(last=False)
            self._active_profiles.pop(id(old.context), None)
            for buffer in (*old.inputs.values(), *old.outputs.values()):
                self._backend.release(buffer)
        return entry, outputs


# --------------------------------------------------------------------------------------------
# Component runners for generation
# --------------------------------------------------------------------------------------------

COMPONENTS = ("vision_encoder", "decoder")


def trt_component_runners(
    out_dir: Path | str,
    precision: str = "fp16",
    *,
    cuda_graph: bool = False,
    device_index: int = 0,
    ctx: TensorRTContext | None = None,
) -> tuple[TensorRTRunner, TensorRTRunner]:
    """(vision, decoder) TensorRT runners over ``OUT/engines/*.PRECISION.engine``.

    Fails at once (before any runner is activated) when TensorRT/GPU are missing or an engine or
    its manifest is absent; compatibility is checked again when each runner activates.
    """
    ctx = ctx or require_tensorrt(device_index)
    paths = [engine_path(out_dir, c, precision) for c in COMPONENTS]
    for path in paths:
        if not path.is_file():
            raise EngineCompatibilityError(
                f"{path} not found",
                path=path,
                hint=f"build it on this device with `autoglm-trt build {Path(out_dir)} --{precision}`",
            )
        read_manifest(path)
    vision, decoder = (
        TensorRTRunner(path, name=f"trt-{precision}-{component}", device_index=device_index, ctx=ctx,
                       cuda_graph=cuda_graph and component == "decoder")
        for component, path in zip(COMPONENTS, paths)
    )
    return vision, decoder
