"""Round-to-nearest INT4, one weight at a time: ModelOpt's RTN per weight, the graph never loaded whole.

ModelOpt's ``int4.quantize`` takes a whole ``ModelProto``: it loads every weight, and the opset
upgrade before it (``onnx.version_converter``) and the output check after it do the same. For the
real 9B's fp32 graph that is 41 GB several times over, so ``precision int4`` of the model phones run
could not be made on an ordinary machine (the README said so). Round to nearest needs no
activations: a weight's int4 values and scales depend on that weight alone, and on each column
alone (one scale per ``block_size`` rows of a column). So :func:`quantize_rtn_file`

* takes the graph's *structure* (the proto without its external data) upgraded to the INT4 opset
  (:func:`~trt_pipeline.quantize.int4.prepare_structure`);
* reads it with onnx_ir, whose external tensors stay on disk until they are read;
* for every weight to quantize, runs ModelOpt's own RTN (``rtn_dq``, the same call as for a whole
  graph) on a one-``MatMul`` model of a slice of the weight's rows (whole blocks, at most
  :data:`CHUNK_BYTES`), joins the slices' int4 values and scales, and puts ModelOpt's
  ``DequantizeLinear`` and its two initializers into the graph in place of the weight;
* writes the graph one tensor at a time (external data when the source had it or it is above 2 GB).

The int4 weights are lazy tensors computed as the graph is written: it holds the weight being
written (read from disk, in row slices) and one slice in ModelOpt's hands, never the fp32 graph nor
the int4 graph, so its peak does not grow with depth. The int4 weights, scales and nodes are ModelOpt's whole-graph RTN's, byte
for byte (``tests/quantize/test_int4_rtn.py``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

#: the largest column slice of a weight handed to ModelOpt at once (its working copies are a few times this)
CHUNK_BYTES = 64 * 1024**2


def modelopt_rtn(name: str, weight: np.ndarray, block_size: int) -> tuple[onnx.NodeProto, dict[str, onnx.TensorProto]]:
    """ModelOpt's RTN (``rtn_dq``) of one 2-D weight ``[K, N]`` named ``name``: its DequantizeLinear node
    and that node's initializers (the int4 weight ``[K, N]``, the scales ``[K / block_size, N]``)."""
    from onnx import TensorProto, helper, numpy_helper

    from trt_pipeline.config.int4 import INT4_MIN_OPSET
    from trt_pipeline.graph.autocast import quiet_modelopt

    k, n = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", name], ["y"], name="matmul")], "one_weight",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
                              [numpy_helper.from_array(weight, name)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", INT4_MIN_OPSET)])
    model.ir_version = 10
    from modelopt.onnx.quantization.int4 import quantize

    with quiet_modelopt(None):
        quantized = quantize(model, calibration_method="rtn_dq", calibration_eps=["cpu"], block_size=block_size,
                             use_external_data_format=False, nodes_to_exclude=None, log_level="WARNING")
    nodes = [node for node in quantized.graph.node if node.op_type == "DequantizeLinear"]
    if len(nodes) != 1:
        raise RuntimeError(f"ModelOpt's RTN of {name} gave {len(nodes)} DequantizeLinear nodes, expected one")
    tensors = {t.name: t for t in quantized.graph.initializer}
    result = nodes[0], {input_name: tensors[input_name] for input_name in nodes[0].input if input_name in tensors}
    del model, graph, quantized, tensors
    # ModelOpt's graph of this call is a web of reference cycles holding the slice's fp32 copies. Left to
    # Python's occasional full collection they piled up (the real 9B: anonymous memory 1.1 -> 3.0 GB across
    # its layers, one slice being 64 MB) and pushed the LM head's source out of the page cache under a
    # 4 GiB cap, which then re-read the disk for an hour. Collected here: ~0.15 s a 64 MB slice, ~15 %.
    gc.collect()
    return result


def quantized_weight(name: str, weight: np.ndarray, block_size: int,
                     chunk_bytes: int = CHUNK_BYTES) -> tuple[onnx.NodeProto, dict[str, onnx.TensorProto]]:
    """:func:`modelopt_rtn` of ``weight [K, N]`` by slices of whole blocks of rows (at most ``chunk_bytes``), joined.

    RTN's scale is per block of ``block_size`` rows of one column, so the slices' results are the whole
    weight's. Row slices of a C-order array are views (the weight is read from disk slice by slice, never
    copied whole), and their packed int4 bytes follow each other in the whole weight's packing (a slice of
    whole 16+-row blocks holds an even number of elements: no nibble is split)."""
    k, n = weight.shape
    rows = max(1, chunk_bytes // max(1, n * weight.itemsize) // block_size) * block_size
    if rows >= k:
        return modelopt_rtn(name, np.ascontiguousarray(weight), block_size)
    node, parts = None, {}
    for start in range(0, k, rows):
        node, tensors = modelopt_rtn(name, np.ascontiguousarray(weight[start:start + rows]), block_size)
        for key, tensor in tensors.items():
            parts.setdefault(key, []).append(tensor)
    assert node is not None
    joined = {}
    for key, tensors in parts.items():
        first = tensors[0]
        dims = [sum(t.dims[0] for t in tensors), *first.dims[1:]]
        if not all(t.HasField("raw_data") for t in tensors):
            raise RuntimeError(f"ModelOpt's RTN of {name} gave {key} without raw bytes; its slices cannot be joined")
        joined[key] = onnx.helper.make_tensor(key, first.data_type, dims, b"".join(t.raw_data for t in tensors), raw=True)
    return node, joined


@dataclass(frozen=True)
class DequantizePattern:
    """What ModelOpt's RTN makes of a weight named ``W``, learned once from a small weight: the
    DequantizeLinear's name, its inputs' and output's names (each ``W`` + a suffix) and attributes."""

    node: str
    inputs: tuple[str, ...]
    output: str
    attributes: tuple[tuple[str, int], ...]

    @classmethod
    def learn(cls, block_size: int) -> DequantizePattern:
        stand_in = "autoglm_trt_int4_pattern"
        weight = np.linspace(-1.0, 1.0, 2 * block_size * 8, dtype=np.float32).reshape(2 * block_size, 8)
        node, _ = modelopt_rtn(stand_in, weight, block_size)
        suffix = cls._suffix(stand_in)
        return cls(suffix(node.name), tuple(suffix(i) for i in node.input), suffix(node.output[0]),
                   tuple((a.name, a.i) for a in node.attribute))

    @staticmethod
    def _suffix(stand_in: str) -> Callable[[str], str]:
        def suffix(text: str) -> str:
            if not text.startswith(stand_in):
                raise RuntimeError(f"ModelOpt's RTN named {text!r}, not the weight's name + a suffix")
            return text[len(stand_in):]
        return suffix

    def of(self, name: str) -> onnx.NodeProto:
        """The DequantizeLinear ModelOpt makes for the weight ``name``."""
        return onnx.helper.make_node("DequantizeLinear", [name + i for i in self.inputs], [name + self.output],
                                     name=name + self.node, **dict(self.attributes))


class _OneWeight:
    """RTN results computed when a weight's first tensor is written, each kept until its last tensor is.

    The int4 weight and its scales are usually written one after the other, so one weight's result is
    held at a time. A weight's fp32 source is dropped once its result exists: the mapped pages of the
    export's data file are released as the writing goes on, not kept to the end."""

    def __init__(self, block_size: int, on_weight: Callable[[int, int], None] | None, total: int) -> None:
        self.block_size, self.on_weight, self.total, self.done = block_size, on_weight, total, 0
        self.sources: dict[str, tuple[Any, onnx.NodeProto]] = {}  # weight -> (fp32 tensor, planned node)
        self.results: dict[str, dict[str, onnx.TensorProto]] = {}  # weight -> its tensors not written yet

    def plan(self, name: str, source: Any, expected: onnx.NodeProto) -> None:
        self.sources[name] = (source, expected)

    def tensor(self, name: str, key: str, dims: list[int]) -> Any:
        import onnx_ir as ir

        if name not in self.results:
            if name not in self.sources:
                raise RuntimeError(f"the int4 tensor {key} of {name} was read twice; it is made to be written once")
            source, expected = self.sources.pop(name)
            node, tensors = quantized_weight(name, source.numpy(), self.block_size)
            del source
            if (list(node.input), list(node.output), node.name) != (list(expected.input), list(expected.output),
                                                                    expected.name):
                raise RuntimeError(f"ModelOpt's RTN of {name} made {node.name} {list(node.input)} -> "
                                   f"{list(node.output)}, not the {expected.name} planned from its pattern")
            self.results[name] = tensors
            self.done += 1
            if self.on_weight is not None:
                self.on_weight(self.done, self.total)
        tensor = self.results[name].pop(key)
        if not self.results[name]:
            del self.results[name]
        if list(tensor.dims) != dims:
            raise RuntimeError(f"ModelOpt's RTN of {name} made {key} of shape {list(tensor.dims)}, planned {dims}")
        return ir.serde.deserialize_tensor(tensor)


def quantize_weights(model: Any, weights: Sequence[str], block_size: int,
                     on_weight: Callable[[int, int], None] | None = None) -> list[str]:
    """Replace each initializer of ``weights`` in the onnx_ir ``model`` by ModelOpt's RTN DequantizeLinear.

    The DequantizeLinear and its initializers are planned from :class:`DequantizePattern`; the int4
    weight and its scales are lazy tensors computed when the graph is written (:class:`_OneWeight`),
    so only the weight being written is held, at any depth. Every MatMul reading the weight reads the
    dequantized weight instead. Returns the DequantizeLinear nodes' names; ``on_weight(done, total)``
    is called as each weight is quantized (while the graph is written)."""
    import onnx_ir as ir

    graph, pattern = model.graph, DequantizePattern.learn(block_size)
    current, made = _OneWeight(block_size, on_weight, len(weights)), []
    for name in weights:
        value = graph.initializers[name]
        k, n = (int(d) for d in value.shape)
        expected = pattern.of(name)
        planned = {expected.input[0]: (ir.DataType.INT4, [k, n]),
                   expected.input[1]: (value.const_value.dtype, [-(-k // block_size), n])}
        current.plan(name, value.const_value, expected)
        inputs = []
        for key in expected.input:
            dtype, dims = planned[key]

            def compute(name: str = name, key: str = key, dims: list[int] = dims) -> Any:
                return current.tensor(name, key, dims)

            lazy = ir.LazyTensor(compute, dtype=dtype, shape=ir.Shape(dims), name=key)
            new = ir.Value(name=key, shape=ir.Shape(dims), type=ir.TensorType(dtype), const_value=lazy)
            graph.register_initializer(new)
            inputs.append(new)
        attributes = [ir.AttrInt64(a.name, a.i) for a in expected.attribute]
        dequantized = ir.Node("", "DequantizeLinear", inputs, attributes, name=expected.name, num_outputs=1)
        dequantized.outputs[0].name = expected.output[0]
        dequantized.outputs[0].shape, dequantized.outputs[0].type = value.shape, value.type
        users = list(value.uses())
        graph.insert_before(users[0].node, dequantized)
        for user, index in users:
            user.replace_input_with(index, dequantized.outputs[0])
        graph.initializers.pop(name)
        made.append(expected.name)
    return made


def quantize_rtn_file(src: Path, dst: Path, matmuls: Sequence[str], block_size: int, structure: onnx.ModelProto,
                      on_weight: Callable[[int, int], None] | None = None) -> list[str]:
    """RTN INT4 of the weights of the MatMuls named ``matmuls`` of ``src`` into ``dst``, one weight at a time.

    ``structure``: ``src``'s graph already at the INT4 opset with its Gemms as MatMuls
    (:func:`~trt_pipeline.quantize.int4.prepare_structure`), its initializers as ``src`` stores them
    (external ones are read beside ``src``, when their turn comes). Returns the DequantizeLinear nodes' names.
    """
    import onnx_ir as ir

    from trt_pipeline.export.streaming import save_with_external_data
    from trt_pipeline.graph.autocast import EXTERNAL_ABOVE_BYTES, restore_shapes, stores_external_data
    from trt_pipeline.graph.weight_folding import fold_weight_transforms

    model = ir.serde.deserialize_model(structure)
    ir.external_data.set_base_dir(model.graph, str(Path(src).parent))
    fold_weight_transforms(model)  # a streamed export's (and a Gemm(transB)'s) weights sit behind Transposes
    nodes = {node.name: node for node in model.graph}
    weights = list(dict.fromkeys(nodes[name].inputs[1].name for name in matmuls))  # shared weights once
    made = quantize_weights(model, weights, block_size, on_weight)
    model.ir_version = max(model.ir_version or 0, 10)
    dst.parent.mkdir(parents=True, exist_ok=True)
    external = stores_external_data(structure)
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    data = dst.with_name(dst.name + ".data")
    if data.exists():
        data.unlink()
    if external or size > EXTERNAL_ABOVE_BYTES:
        save_with_external_data(model, dst)
    else:
        ir.save(model, str(dst))
    restore_shapes(dst)
    return made


__all__ = ["CHUNK_BYTES", "DequantizePattern", "modelopt_rtn", "quantize_rtn_file", "quantize_weights", "quantized_weight"]
