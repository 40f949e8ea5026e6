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
``total_sequence_length``, ``num_logits``). Then all outputs of a run live in ONE pooled slab
(:class:`OutputLayout`): the reuse rule above applies to the slab, which stays busy while any
output carved from it is referenced. An output with an axis no input names (the vision
encoder's ``num_image_tokens``) makes the run take the general path: per-output buffers, that
output bound to the CPU device and copied out after the run.

An output that is the in-place update of an input (``present.X`` of an ``inplace`` KV cache, the
same shape and type as ``past_key_values.X``: :func:`inplace_aliases`) is bound to that input's own
memory: ONNX Runtime's ``ScatterElements`` then writes only the new rows (it skips copying its input
when input and output are one buffer), and the run returns the fed array itself as the output.
Such a pair stays bound while the same array object is fed again (tracked by weak reference, so the
runner never keeps a cache alive or counts as its reader): a host that feeds its cache as the same
views for many steps (:class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` blocks) binds it once per
block, not every tensor every step. Outputs bound by pointer are rebound only when their address or
shape changes.

Why a lean path at all: a decode step of a small model is a few milliseconds, and the run
streams every weight through the CPU caches, so the host work after it runs cache-cold and costs
several times what a warm micro-benchmark shows. ``benchmarks/step_overhead.py`` measures it.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
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
        # data address of every buffer the pool holds (keyed by id: the pool keeps the buffer
        # alive, so the id cannot be reused while the entry exists); reading ``.ctypes.data``
        # per call is a ctypes object each time
        self._addresses: dict[int, int] = {}

    def take(self, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A C-contiguous ``shape`` view of a free buffer of ``dtype`` (a new one when none fits)."""
        return self.take_with_address(name, shape, dtype)[0]

    def take_with_address(self, name: str, shape: Sequence[int], dtype: Any) -> tuple[np.ndarray, int]:
        """:meth:`take` and the view's data address (what binding by pointer needs)."""
        size = math.prod(shape)
        dtype = np.dtype(dtype)
        buffers = self._buffers.get(name)
        if buffers is None:
            buffers = self._buffers[name] = [np.empty(0, dtype)]
        counts = [sys.getrefcount(buffer) for buffer in buffers]
        free = [buffer for buffer, count in zip(buffers[1:], counts[1:]) if count <= counts[0]]
        for buffer in free:
            if buffer.dtype == dtype and buffer.size >= size:
                return buffer[:size].reshape(shape), self._addresses[id(buffer)]
        # a growing cache outgrew the free buffers: release them, take one with headroom so the
        # next steps (one position more each) keep fitting it
        released = {id(buffer) for buffer in free}
        buffers[:] = [buffer for buffer in buffers if id(buffer) not in released]
        for key in released:
            del self._addresses[key]
        del free
        buffer = np.empty(max(size + size // 4, 1), dtype)
        buffers.append(buffer)
        address = self._addresses[id(buffer)] = buffer.ctypes.data
        return buffer[:size].reshape(shape), address

    def __len__(self) -> int:
        return sum(len(b) - 1 for b in self._buffers.values())


def inplace_aliases(inputs: Sequence[Any], outputs: Sequence[Any]) -> dict[str, str]:
    """Output name -> input name of every ``present.X`` whose ``past_key_values.X`` input has its exact
    (symbolic) shape and type: the ``inplace`` KV cache's outputs, which are their inputs updated.

    A ``concat`` cache's present (``total_sequence_length``) never matches its past
    (``past_sequence_length``), so such graphs get no alias."""
    by_name = {node.name: node for node in inputs}
    aliases = {}
    for node in outputs:
        if not node.name.startswith("present."):
            continue
        source = by_name.get("past_key_values." + node.name[len("present."):])
        if source is not None and list(source.shape) == list(node.shape) and source.type == node.type:
            aliases[node.name] = source.name
    return aliases


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


#: ONNX Runtime's type strings -> ONNX ``TensorProto`` element types (what binding by pointer takes).
ORT_ONNX_TYPES = {"tensor(float)": 1, "tensor(uint8)": 2, "tensor(int8)": 3, "tensor(int32)": 6,
                  "tensor(int64)": 7, "tensor(bool)": 9, "tensor(float16)": 10, "tensor(double)": 11}

def output_types(kind: str) -> tuple[np.dtype, int]:
    """(numpy dtype, ONNX element type) of an ONNX Runtime type string (uint8 / 0 for types our graphs never output)."""
    return np.dtype(ORT_NUMPY_TYPES.get(kind, np.uint8)), ORT_ONNX_TYPES.get(kind, 0)


#: Byte alignment of every output carved from a slab (a cache line).
SLAB_ALIGNMENT = 64


class OutputLayout:
    """Where each output of one run lives in ONE pooled byte slab, from the fed inputs' shapes.

    Outputs with the same symbolic shape and type (every ``present.*``) form a group resolved
    once per run and laid out back to back, so a decode step resolves two shapes instead of 25
    and carves its outputs with one reshape per group. The slab is one :class:`BufferPool`
    buffer: every output array is a view of it, so the slab stays busy while any of them is
    referenced (a saved cache keeps its slab out of the cycle, exactly as per-output buffers did).
    """

    def __init__(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        self.names = [node.name for node in outputs]
        # the first input naming each axis (enough to resolve every output axis that inputs name)
        sources: dict[str, tuple[str, int]] = {}
        for name, named in symbolic_axes(inputs):
            for index, dim in named:
                sources.setdefault(dim, (name, index))
        self.sources = [(dim, name, index) for dim, (name, index) in sources.items()]
        groups: dict[tuple[tuple[Any, ...], str], list[int]] = {}
        for position, node in enumerate(outputs):
            groups.setdefault((tuple(node.shape), node.type), []).append(position)
        self.complete = all(kind in ORT_ONNX_TYPES and all(isinstance(d, int) or d in sources for d in dims)
                            for dims, kind in groups)
        #: per group: symbolic dims, numpy dtype, ONNX element type, output names (session order within)
        self.groups = [(dims, *output_types(kind), [self.names[p] for p in positions])
                       for (dims, kind), positions in groups.items()]
        # the groups' concatenation in session order already (the decoder: logits, then every present)?
        order = [p for positions in groups.values() for p in positions]
        self.in_order = order == list(range(len(self.names)))
        self.order_names = [self.names[p] for p in order]

    def known(self, feed: Mapping[str, np.ndarray]) -> dict[str, int] | None:
        """Axis sizes from the fed arrays (None: an axis' source input was not fed)."""
        known = {}
        for dim, name, index in self.sources:
            value = feed.get(name)
            if value is None:
                return None
            known[dim] = value.shape[index]
        return known

    def carve(self, slab: np.ndarray, address: int, plans: Sequence[tuple[tuple[int, ...], int, int]]
              ) -> tuple[list[np.ndarray], list[tuple[str, int, tuple[int, ...], int]]]:
        """Every output as a view of ``slab`` (laid out by :meth:`plan`, its first byte at ``address``): (the
        arrays in ``order_names`` order, one reshape per group; [(name, ONNX type, shape, address)] to bind)."""
        arrays: list[np.ndarray] = []
        targets: list[tuple[str, int, tuple[int, ...], int]] = []
        for (shape, offset, stride), (_, dtype, onnx_type, names) in zip(plans, self.groups):
            block = slab[offset:offset + stride * len(names)].view(dtype).reshape(len(names), stride // dtype.itemsize)
            arrays.extend(block[:, :math.prod(shape)].reshape((len(names), *shape)))
            for name in names:
                targets.append((name, onnx_type, shape, address + offset))
                offset += stride
        return arrays, targets

    def plan(self, known: Mapping[str, int]) -> tuple[list[tuple[tuple[int, ...], int, int]], int]:
        """([(shape, byte offset, byte stride between the group's outputs)] per group, slab bytes)."""
        plans, offset = [], 0
        for dims, dtype, _, names in self.groups:
            shape = tuple(d if isinstance(d, int) else known[d] for d in dims)
            stride = -(-math.prod(shape) * dtype.itemsize // SLAB_ALIGNMENT) * SLAB_ALIGNMENT
            plans.append((shape, offset, stride))
            offset += stride * len(names)
        return plans, max(offset, 1)


class BoundOrtRunner(OnnxrtRunner):
    """``OnnxrtRunner`` whose ``infer`` runs through IO binding into :class:`BufferPool` buffers.

    Host work per run is what separates a small model's decode step from its kernels' time, so
    numpy feeds of a graph whose output shapes the inputs fix (the decoder) take a lean path:
    inputs bound through ONNX Runtime's C binding (no Python wrapper per call), every output
    carved from one pooled slab (:class:`OutputLayout`) and bound by pointer, and the bindings
    cleared only when the set of fed names changes (ONNX Runtime replaces a name's binding when
    it is bound again, and every run rebinds every fed input and every output first).
    """

    def activate_impl(self) -> None:
        from onnxruntime.capi import _pybind_state as ort_c
        from polygraphy import util

        self.sess, _ = util.invoke_if_callable(self._sess)  # as OnnxrtRunner.activate_impl
        self.binding = self.sess.io_binding()
        self.pool = BufferPool()
        self._outputs = self.sess.get_outputs()
        self._inputs = self.sess.get_inputs()
        self._axes = symbolic_axes(self._inputs)
        self._aliases = inplace_aliases(self._inputs, self._outputs)
        types = {node.name: node.type for node in self._outputs}
        #: fed input name -> (its in-place output, the numpy dtype both have)
        self._alias_sources = {source: (target, output_types(types[target])[0]) for target, source in self._aliases.items()}
        self._ortvalue = ort_c.OrtValue.ortvalue_from_numpy
        self._layout = OutputLayout(self._inputs, [node for node in self._outputs if node.name not in self._aliases])
        self._output_names = [node.name for node in self._outputs]
        self._c_binding = self.binding._iobinding  # the C binding the public wrapper forwards to
        self._cpu = ort_c.OrtDevice(ort_c.OrtDevice.cpu(), ort_c.OrtDevice.default_memory(), 0)
        self._bound_names: tuple[str, ...] | None = None
        #: in-place pairs bound now: fed input name -> weak reference to the array bound (the same live
        #: object fed again is still bound: its memory and shape cannot have changed)
        self._bound_sources: dict[str, weakref.ref] = {}
        self._bound_outputs: dict[str, tuple[int, tuple[int, ...]]] = {}  # by pointer: (address, shape)
        self._keeper: KeptBinding | None = None  # the kept binding the session's binding is now (None: per-run)

    @property
    def binds_in_place(self) -> bool:
        """Whether runs write ``present.*`` into the fed ``past_key_values.*`` arrays (an inplace graph)."""
        return bool(self._aliases)

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> OrderedDict:
        out = self._bind_slab(feed_dict)
        if out is None:
            return self._infer_general(feed_dict)
        start = time.time()
        self.sess._sess.run_with_iobinding(self._c_binding, None)
        self.inference_time = time.time() - start
        return out

    def keep(self, feed: Mapping[str, np.ndarray], check_inputs: bool = True) -> KeptBinding:
        """Bind ``feed``'s arrays (C-contiguous numpy, kept alive and changed only in place by the caller)
        and outputs into buffers of their own, once: :meth:`KeptBinding.run` then runs without binding."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate the runner before keeping a binding")
        if check_inputs:
            from polygraphy.backend.base import util as base_util

            base_util.check_inputs(feed, self.get_input_metadata(use_numpy_dtypes=False))
        return KeptBinding(self, feed)

    def _bind_slab(self, feed: Mapping[str, Any]) -> OrderedDict | None:
        """Numpy feed, every output shape known: one slab, C-level binds, no per-run clearing (None: general path)."""
        layout = self._layout
        known = layout.known(feed) if layout.complete else None
        if known is None:
            return None
        aliased = self._bind_inputs(feed)
        if aliased is None:
            return None
        binding, cpu = self._c_binding, self._cpu
        self._keeper = None
        plans, size = layout.plan(known)
        slab, base = self.pool.take_with_address("", (size,), np.uint8)
        arrays, targets = layout.carve(slab, base, plans)
        outputs = self._bound_outputs
        for name, onnx_type, shape, address in targets:
            where = (address, shape)
            if outputs.get(name) != where:  # a pointer binding: the same address and shape is the same binding
                binding.bind_output(name, cpu, onnx_type, shape, address)
                outputs[name] = where
        # the result is assembled before the run: objects made now are still in the CPU caches,
        # which the run (streaming every weight) evicts
        if layout.in_order and not aliased:
            return OrderedDict(zip(layout.names, arrays))
        by_name = dict(zip(layout.order_names, arrays))
        by_name.update(aliased)
        return OrderedDict((name, by_name[name]) for name in self._output_names)

    def _bind_inputs(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        """Bind every input of a numpy ``feed`` (an in-place pair once per array object); -> the aliased
        outputs {present name: fed array}, or None when the feed must take the general path."""
        binding, cpu = self._c_binding, self._cpu
        names = tuple(feed)
        if names != self._bound_names:
            binding.clear_binding_inputs()
            self._bound_names = names
            self._bound_sources = {}
        aliased: dict[str, np.ndarray] = {}
        sources, make_ortvalue, bound = self._alias_sources, self._ortvalue, self._bound_sources
        for name, value in feed.items():
            if type(value) is not np.ndarray:  # torch in, torch out: the general path (it clears what was bound)
                return None
            alias = sources.get(name)
            if alias is None:
                # ONNX Runtime reads a C-contiguous array in place and copies any other one itself
                binding.bind_input(name, value)
                continue
            target = alias[0]
            last = bound.get(name)
            if last is not None and last() is value:  # the very array bound last time: still bound, both ways
                aliased[target] = value
                continue
            # an in-place output: bound to the fed array's memory through ONE OrtValue serving as input and
            # output (half the work of binding the input, then the output by pointer); a fed array that cannot
            # be written in place (not C-contiguous, another dtype) sends the feed to the general path
            if value.dtype != alias[1] or not value.flags.c_contiguous:
                return None
            ortvalue = make_ortvalue(value, cpu)
            binding.bind_ortvalue_input(name, ortvalue)
            binding.bind_ortvalue_output(target, ortvalue)
            bound[name] = weakref.ref(value)
            aliased[target] = value
        return aliased

    def _infer_general(self, feed_dict: Mapping[str, Any]) -> OrderedDict:
        """Any feed (torch tensors, outputs with axes no input names): per-output buffers, cleared bindings."""
        from polygraphy import util

        use_torch = not all(isinstance(value, np.ndarray) for value in feed_dict.values()) and any(
            util.array.is_torch(value) for value in feed_dict.values())
        feed = {name: np.ascontiguousarray(value if isinstance(value, np.ndarray) else util.array.to_numpy(value))
                for name, value in feed_dict.items()}
        known = known_axes(self._axes, feed)
        binding = self.binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        self._bound_names, self._bound_sources, self._bound_outputs, self._keeper = None, {}, {}, None
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
        del self.binding, self.pool, self.sess, self._c_binding


class KeptBinding:
    """One feed bound once: inputs over the caller's arrays, outputs into buffers of its own.

    A decode loop that feeds the same arrays step after step and changes only their contents (the
    token's embedding row, its rotary rows, one more mask column; the cache written in place by the
    run itself) pays, per step, only for the run: no feed dict, no binding, no output planning. On a
    small model's decode step that per-step host work was a tenth of the step, and it all runs right
    after the run has streamed every weight through the CPU caches, i.e. cache-cold.
    (:class:`~trt_pipeline.models.glm4v.kept_decode.KeptDecode` is that loop.)

    The runner's binding is shared: when any other run of the runner (or another kept binding) has
    bound it since, :meth:`run` binds this feed again first, so mixing kept and per-run calls stays
    correct. ``outputs`` are the same arrays after every run (the in-place outputs are the fed arrays).
    """

    def __init__(self, runner: BoundOrtRunner, feed: Mapping[str, np.ndarray]) -> None:
        layout = runner._layout
        known = layout.known(feed) if layout.complete else None
        odd = [name for name, value in feed.items() if type(value) is not np.ndarray or not value.flags.c_contiguous]
        if known is None or odd:
            raise ValueError(f"a kept binding needs C-contiguous numpy arrays for every input (not: {odd}) and "
                             "outputs whose shapes the inputs fix")
        self.runner, self.feed = runner, dict(feed)
        plans, size = layout.plan(known)
        self._slab = np.empty(size + SLAB_ALIGNMENT, np.uint8)
        start = -self._slab.ctypes.data % SLAB_ALIGNMENT  # the slab's first cache line
        arrays, self._targets = layout.carve(self._slab[start:], self._slab.ctypes.data + start, plans)
        by_name = dict(zip(layout.order_names, arrays))
        self._aliases = {target: source for target, source in runner._aliases.items() if source in self.feed}
        by_name.update((target, self.feed[source]) for target, source in self._aliases.items())
        self.outputs = OrderedDict((name, by_name[name]) for name in runner._output_names)
        self._bind()

    def _bind(self) -> None:
        runner = self.runner
        if runner._bind_inputs(self.feed) is None:
            raise ValueError("a kept binding's feed must be written in place as fed (C-contiguous, the declared dtypes)")
        binding, cpu = runner._c_binding, runner._cpu
        for name, onnx_type, shape, address in self._targets:
            binding.bind_output(name, cpu, onnx_type, shape, address)
        runner._bound_outputs = {}  # the per-run path's pointer bindings are replaced
        runner._keeper = self

    def run(self) -> OrderedDict:
        """Run on the arrays' current contents; -> ``outputs`` (the same arrays every time)."""
        runner = self.runner
        if runner._keeper is not self:
            self._bind()
        runner.sess._sess.run_with_iobinding(runner._c_binding, None)
        return self.outputs


__all__ = ["BoundOrtRunner", "KeptBinding", "BufferPool", "OutputLayout", "inplace_aliases", "input_axes", "known_axes", "resolve_shape", "symbolic_axes"]
