"""Bounded-memory reference ranges for AutoCast: per-tensor min / max / absmax computed inside the graph.

WHY: ModelOpt AutoCast's ``ReferenceRunner`` marks every tensor of the fp32 graph as an output,
runs all calibration feeds through Polygraphy's ``Comparator`` (which keeps every output of every
feed) and only then reduces them to :class:`~modelopt.onnx.autocast.referencerunner.TensorStats`.
Its memory is the sum of all intermediate tensors times the number of feeds; for the vision
encoder that includes each layer's ``heads x patches^2`` attention map, so the small preset peaked
above 13 GB and a real screenshot (13k patches) could never fit. ModelOpt has no option that
bounds it (only ``data_max=inf``, which drops the range rule altogether).

:class:`StreamingReferenceRunner` is a drop-in ``ReferenceRunner`` that computes the same
statistics in the graph: each tensor AutoCast would record gets ``ReduceMax(Abs(x))``,
``ReduceMin(x)``, ``ReduceMax(x)`` and ``Shape(x)`` consumers whose (scalar) results are the only
extra outputs, and the feeds run one at a time with the statistics folded in as they arrive (as
ONNX Runtime's ``MinMaxCalibrater`` does for INT8). ONNX Runtime then frees every intermediate as
usual, so the peak is one ordinary fp32 inference of the largest feed, whatever the number of feeds.
The returned mapping is the one ModelOpt's multi-batch path returns (``TensorStats`` per tensor,
first feed's shape, empty tensors counting as 0), so the node classification is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

#: element types ONNX Runtime's Abs / ReduceMin / ReduceMax accept; bool goes through a Cast to int32.
_REDUCIBLE = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64,
              TensorProto.INT8, TensorProto.UINT8}
_STATS = ("absmax", "min", "max", "shape")


@dataclass
class ReferenceRunStats:
    """What the last streaming reference run kept (the memory proxy tests assert on)."""

    feeds: int = 0
    tensors: int = 0
    kept_bytes: int = 0
    largest_feed_bytes: int = 0
    extra_outputs: int = 0
    history: list[dict[str, int]] = field(default_factory=list)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def add_range_outputs(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """Append, in place, min/max/absmax/shape consumers for every node output AutoCast would record.

    Returns ``{tensor: {stat: output name}}``. Tensors of a type that cannot be reduced (strings,
    unknown types) are left out; AutoCast's range rule treats a missing tensor as in range.
    """
    types = _tensor_types(model)
    graph = model.graph
    plan: dict[str, dict[str, str]] = {}
    nodes, outputs = [], []
    for node in list(graph.node):
        for name in node.output:
            elem = types.get(name)
            if not name or name in plan or (elem not in _REDUCIBLE and elem != TensorProto.BOOL):
                continue
            key = f"__range{len(plan)}"
            source = name
            if elem == TensorProto.BOOL:
                source = f"{key}_int"
                nodes.append(helper.make_node("Cast", [name], [source], to=TensorProto.INT32, name=f"{key}_cast"))
            stats = {stat: f"{key}_{stat}" for stat in _STATS}
            nodes += [
                helper.make_node("Abs", [source], [f"{key}_abs"], name=f"{key}_abs"),
                helper.make_node("ReduceMax", [f"{key}_abs"], [stats["absmax"]], keepdims=0, name=f"{key}_absmax"),
                helper.make_node("ReduceMin", [source], [stats["min"]], keepdims=0, name=f"{key}_min"),
                helper.make_node("ReduceMax", [source], [stats["max"]], keepdims=0, name=f"{key}_max"),
                helper.make_node("Shape", [name], [stats["shape"]], name=f"{key}_shape"),
            ]
            reduced = TensorProto.INT32 if elem == TensorProto.BOOL else elem
            outputs += [helper.make_tensor_value_info(stats[s], reduced, []) for s in ("absmax", "min", "max")]
            outputs.append(helper.make_tensor_value_info(stats["shape"], TensorProto.INT64, [None]))
            plan[name] = stats
    graph.node.extend(nodes)
    graph.output.extend(outputs)
    return plan


class RangeAccumulator:
    """Folds one feed's per-tensor statistics at a time into ModelOpt ``TensorStats``."""

    def __init__(self) -> None:
        self.stats: OrderedDict[str, list[Any]] = OrderedDict()  # name -> [absmax, min, max, shape]

    def add(self, name: str, absmax: Any, low: Any, high: Any, shape: Sequence[int]) -> None:
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape)) == 0:  # ModelOpt: an empty tensor contributes 0 to every statistic
            absmax = low = high = 0
        entry = self.stats.get(name)
        if entry is None:
            self.stats[name] = [absmax, low, high, shape]
        else:
            entry[0], entry[1], entry[2] = max(entry[0], absmax), min(entry[1], low), max(entry[2], high)

    def add_array(self, name: str, array: np.ndarray) -> None:
        """A graph input (a feed): reduced on the host, as ModelOpt records inputs."""
        if array.size == 0:
            self.add(name, 0, 0, 0, array.shape)
        else:
            self.add(name, np.max(np.abs(array)), np.min(array), np.max(array), array.shape)

    def result(self) -> OrderedDict[str, Any]:
        from modelopt.onnx.autocast.referencerunner import TensorStats

        return OrderedDict((name, TensorStats(absmax=a, min_val=lo, max_val=hi, shape=shape))
                           for name, (a, lo, hi, shape) in self.stats.items())

    def kept_bytes(self) -> int:
        """Bytes of the statistics held (scalars and shapes): the reference run's growth per tensor."""
        return sum(8 * (3 + len(entry[3])) for entry in self.stats.values())


@contextlib.contextmanager
def _augmented_session(model: onnx.ModelProto, providers: Sequence[Any]) -> Iterator[tuple[Any, dict]]:
    """An ONNX Runtime session of ``model`` plus its range outputs; ``model`` is restored afterwards."""
    import onnxruntime as ort
    from modelopt.onnx import utils as onnx_utils

    graph = model.graph
    node_count, output_count = len(graph.node), len(graph.output)
    plan = add_range_outputs(model)
    # the model's value_info stays: a fused decoder's Attention output has no inferable last axis without
    # it (ONNX's shape inference of 3-D Attention leaves it empty and ORT then refuses the next MatMul);
    # the range nodes' own outputs are left untyped (inferred by ORT)
    scratch = None
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # the arena keeps (and grows by) every feed's largest shapes
        if onnx_utils.check_model_uses_external_data(model) or onnx_utils.is_model_too_large_for_protobuf(model):
            scratch = tempfile.TemporaryDirectory(prefix="autocast-ranges.")
            path = os.path.join(scratch.name, "model.onnx")
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx_utils.save_onnx(copy, path, save_as_external_data=True)
            del copy
            source: Any = path
        else:
            source = model.SerializeToString()
        session = ort.InferenceSession(source, options, providers=list(providers))
        del source
        yield session, plan
    finally:
        del graph.node[node_count:]
        del graph.output[output_count:]
        if scratch is not None:
            scratch.cleanup()


def collect_ranges(
    model: onnx.ModelProto,
    feeds: Iterable[Mapping[str, np.ndarray]],
    providers: Sequence[Any] = ("CPUExecutionProvider",),
) -> tuple[OrderedDict[str, Any], ReferenceRunStats]:
    """Per-tensor ``TensorStats`` of ``model`` over ``feeds``, one feed in flight at a time.

    ``model`` gets the range outputs only while its session is built (it is restored before returning).
    """
    accumulator = RangeAccumulator()
    run = ReferenceRunStats()
    with _augmented_session(model, providers) as (session, plan):
        names = [out for stats in plan.values() for out in (stats[s] for s in _STATS)]
        run.extra_outputs = len(names)
        for source in feeds:  # dicts, or ModelOpt's lazily loaded NpzFile per feed
            feed = {name: np.asarray(value) for name, value in dict(source).items()}
            if hasattr(source, "close"):
                source.close()
            for name, value in feed.items():
                accumulator.add_array(name, value)
            values = dict(zip(names, session.run(names, feed), strict=True))
            for tensor, stats in plan.items():
                if tensor not in feed:
                    accumulator.add(tensor, values[stats["absmax"]], values[stats["min"]], values[stats["max"]],
                                    values[stats["shape"]])
            run.feeds += 1
            run.largest_feed_bytes = max(run.largest_feed_bytes, sum(v.nbytes for v in feed.values()))
            run.history.append({"feed": run.feeds, "kept_bytes": accumulator.kept_bytes()})
            del values
    run.tensors = len(accumulator.stats)
    run.kept_bytes = accumulator.kept_bytes()
    return accumulator.result(), run


def streaming_runner_class(record: ReferenceRunStats) -> type:
    """ModelOpt's ``ReferenceRunner`` with :func:`collect_ranges` as its ``run`` (same inputs, same result type).

    Each run's :class:`ReferenceRunStats` is copied into ``record``.
    """
    from modelopt.onnx.autocast.referencerunner import ReferenceRunner

    class StreamingReferenceRunner(ReferenceRunner):  # type: ignore[misc, valid-type]
        def run(self, inputs: Any = None) -> OrderedDict[str, Any]:
            if inputs is None:
                return super().run(inputs)  # ModelOpt's random inputs: nothing to bound
            stats, run = collect_ranges(self.model, self._load_inputs(inputs), self.providers)
            record.__dict__.update(run.__dict__)
            return stats

    return StreamingReferenceRunner


@contextlib.contextmanager
def streaming_reference_runner() -> Iterator[ReferenceRunStats]:
    """Swap AutoCast's reference runner for the streaming one while ``convert_to_mixed_precision`` runs."""
    from modelopt.onnx.autocast import convert

    original = convert.ReferenceRunner
    record = ReferenceRunStats()
    convert.ReferenceRunner = streaming_runner_class(record)
    try:
        yield record
    finally:
        convert.ReferenceRunner = original


__all__ = ["ReferenceRunStats", "RangeAccumulator", "add_range_outputs", "collect_ranges",
           "streaming_reference_runner", "streaming_runner_class"]
