"""A Polygraphy ONNX Runtime runner that runs through IO binding into reused output buffers.

``InferenceSession.run`` hands every output back in memory it allocated for that call: a decode
step returns the whole KV cache (``present.*``, growing with the context), so each step pays for
fresh allocations and their first-touch page faults. :class:`BoundOrtRunner` instead binds every
output to a buffer of its own pool before the run, and ONNX Runtime writes the result straight
into it. Inputs are bound over the caller's arrays (no copy for C-contiguous arrays), so the
``present.*`` arrays a stepper feeds back as ``past_key_values.*`` go in without a copy either.

Buffers are reused only when nobody outside the pool still references them (CPython reference
counts: a returned array, or any view of it, keeps its buffer busy). A stepper that keeps only the
current cache therefore cycles through two buffers per output, and a saved cache (``save()``,
a server's prefix cache) simply keeps its buffers out of the cycle: a returned array is never
overwritten behind the caller's back.

Output shapes are resolved before the run from the session's symbolic output dims and the
shapes of the fed inputs (the decoder's outputs use only axes its inputs carry: ``batch_size``,
``total_sequence_length``, ``num_logits``); an output with an axis no input names (the vision
encoder's ``num_image_tokens``) is bound to the CPU device and copied out after the run.
"""

from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from polygraphy.backend.onnxrt import OnnxrtRunner

#: ONNX Runtime's type strings -> numpy dtypes (the float/int types our graphs output).
ORT_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                   "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
                   "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


class BufferPool:
    """Flat numpy buffers per output name, handed out as shaped views and reused when unreferenced."""

    def __init__(self) -> None:
        # each list starts with a never-handed-out sentinel: its reference count is what a free
        # buffer's count is in the same spot (robust to how the interpreter counts temporaries)
        self._buffers: dict[str, list[np.ndarray]] = {}

    def take(self, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A C-contiguous ``shape`` view of a free buffer of ``dtype`` (a new one when none fits)."""
        size = math.prod(shape)
        dtype = np.dtype(dtype)
        buffers = self._buffers.setdefault(name, [np.empty(0, dtype)])
        counts = [sys.getrefcount(buffer) for buffer in buffers]
        free = [buffer for buffer, count in zip(buffers[1:], counts[1:]) if count <= counts[0]]
        for buffer in free:
            if buffer.dtype == dtype and buffer.size >= size:
                return buffer[:size].reshape(shape)
        # a growing cache outgrew the free buffers: release them, take one with headroom so the
        # next steps (one position more each) keep fitting it
        released = {id(buffer) for buffer in free}
        buffers[:] = [buffer for buffer in buffers if id(buffer) not in released]
        del free
        buffer = np.empty(max(size + size // 4, 1), dtype)
        buffers.append(buffer)
        return buffer[:size].reshape(shape)

    def __len__(self) -> int:
        return sum(len(b) - 1 for b in self._buffers.values())


def resolve_shape(dims: Sequence[Any], known: Mapping[str, int]) -> tuple[int, ...] | None:
    """Concrete output shape from symbolic ``dims`` and the axis sizes the inputs fixed (None: unknown)."""
    shape = []
    for dim in dims:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in known:
            shape.append(known[dim])
        else:
            return None
    return tuple(shape)


def symbolic_axes(inputs: Sequence[Any]) -> list[tuple[str, list[tuple[int, str]]]]:
    """(input name, [(axis index, axis name)]) of every input with symbolic axes (made once per session)."""
    axes = [(node.name, [(index, dim) for index, dim in enumerate(node.shape) if isinstance(dim, str)])
            for node in inputs]
    return [(name, named) for name, named in axes if named]


def input_axes(inputs: Sequence[Any], feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Symbolic axis name -> size, read from the fed arrays' shapes."""
    return known_axes(symbolic_axes(inputs), feed)


def known_axes(axes: Sequence[tuple[str, Sequence[tuple[int, str]]]], feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Symbolic axis name -> size from :func:`symbolic_axes` and the fed arrays (first input naming it wins)."""
    known: dict[str, int] = {}
    for name, named in axes:
        value = feed.get(name)
        if value is None:
            continue
        shape = value.shape
        for index, dim in named:
            if dim not in known and index < len(shape):
                known[dim] = int(shape[index])
    return known


class BoundOrtRunner(OnnxrtRunner):
    """``OnnxrtRunner`` whose ``infer`` runs through IO binding into :class:`BufferPool` buffers."""

    def activate_impl(self) -> None:
        from polygraphy import util

        self.sess, _ = util.invoke_if_callable(self._sess)  # as OnnxrtRunner.activate_impl
        self.binding = self.sess.io_binding()
        self.pool = BufferPool()
        self._outputs = self.sess.get_outputs()
        self._inputs = self.sess.get_inputs()
        self._axes = symbolic_axes(self._inputs)

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> OrderedDict:
        from polygraphy import util

        # numpy feeds (every stepper's) skip Polygraphy's per-array type dispatch: a decode step has
        # ~30 inputs and 25 outputs, and host work per step is what separates a small model's step
        # from the kernels' time
        use_torch = not all(isinstance(value, np.ndarray) for value in feed_dict.values()) and any(
            util.array.is_torch(value) for value in feed_dict.values())
        feed = {name: np.ascontiguousarray(value if isinstance(value, np.ndarray) else util.array.to_numpy(value))
                for name, value in feed_dict.items()}
        known = known_axes(self._axes, feed)
        binding = self.binding
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        pooled: dict[str, np.ndarray] = {}
        for node in self._outputs:
            shape = resolve_shape(node.shape, known)
            if shape is None or node.type not in ORT_NUMPY_TYPES:
                binding.bind_output(node.name, "cpu")
                continue
            buffer = pooled[node.name] = self.pool.take(node.name, shape, ORT_NUMPY_TYPES[node.type])
            # by pointer: no OrtValue per output and step (the pool keeps the buffer alive)
            binding.bind_output(node.name, "cpu", 0, buffer.dtype.type, shape, buffer.ctypes.data)
        start = time.time()
        self.sess.run_with_iobinding(binding)
        self.inference_time = time.time() - start
        copied = binding.copy_outputs_to_cpu() if len(pooled) < len(self._outputs) else None
        out = OrderedDict()
        for index, node in enumerate(self._outputs):
            out[node.name] = pooled[node.name] if node.name in pooled else copied[index]
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        if use_torch:  # as OnnxrtRunner: torch in, torch out
            return OrderedDict((name, util.array.to_torch(value)) for name, value in out.items())
        return out

    def deactivate_impl(self) -> None:
        del self.binding, self.pool, self.sess


__all__ = ["BoundOrtRunner", "BufferPool", "input_axes", "known_axes", "resolve_shape", "symbolic_axes"]
