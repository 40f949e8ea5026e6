"""Fold the ``Transpose``/``Reshape`` nodes a streamed export keeps on its weights into initializers.

A streamed export (:mod:`trt_pipeline.export.streaming`, the default above 2 GB of weights: the real
9B) writes every initializer as the checkpoint's own bytes, so ``nn.Linear`` weights ``[out, in]``
reach their MatMul through a ``Transpose`` node, ``MatMul(x, Transpose(W))``, and the vision
encoder's patch-embedding and downsample convolutions through a ``Reshape``. ONNX Runtime and
TensorRT fold those when they load the model, and fp16 AutoCast does not mind them. The quantizers
do: ModelOpt finds a GEMM's weight as an *initializer* input of the MatMul. Behind a Transpose,

* INT4 finds no weight at all (``precision int4`` of a streamed export: "no MatMul with a 2-D
  weight left to quantize");
* INT8 quantizes the transposed weight as an activation: one per-tensor scale from calibration
  instead of per-output-channel scales, on every GEMM (measured on the tiny preset: 22 axis-less
  QuantizeLinear nodes where the in-memory export gets per-channel weight scales).

So the precision stages quantize the graph the in-memory export would have produced: every
``Transpose`` or ``Reshape`` of initializers replaced by its result (the in-memory exporter's own
constant folding), repeated while a fold makes another foldable. The export itself keeps its
checkpoint bytes (its sha256 check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx


#: weight transforms the streamed trace leaves on initializers (and what folding them computes)
FOLDED_OPS = ("Transpose", "Reshape")


def weight_transforms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The ``Transpose``/``Reshape`` nodes of ``model``'s main graph that read only initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type in FOLDED_OPS and n.input and all(name in inits for name in n.input if name)]


def folded_array(op_type: str, attributes: dict[str, Any], data: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    """What a ``Transpose`` (``perm``) or ``Reshape`` (``shape``, ``allowzero``) node computes (ONNX semantics).

    A Transpose is a view of ``data`` (written in C order all the same): RTN reads a folded weight
    in slices of rows, so the 9B's 2.5 GB LM head is never copied whole."""
    if op_type == "Transpose":
        return np.transpose(data, attributes.get("perm"))
    return data.reshape(_reshaped(data.shape, shape, attributes))


def _reshaped(dims: tuple[int, ...], shape: np.ndarray | None, attributes: dict[str, Any]) -> tuple[int, ...]:
    """Reshape's output dims for input ``dims`` (0 copies the input's dim unless ``allowzero``; one -1 is inferred)."""
    assert shape is not None, "Reshape needs its shape input"
    wanted = [int(d) for d in shape]
    if not attributes.get("allowzero", 0):
        wanted = [dims[i] if d == 0 else d for i, d in enumerate(wanted)]
    if -1 in wanted:
        known = int(np.prod([d for d in wanted if d != -1]))
        wanted[wanted.index(-1)] = int(np.prod(dims)) // max(known, 1)
    return tuple(wanted)


def _out_dims(op_type: str, attributes: dict[str, Any], dims: tuple[int, ...], shape: np.ndarray | None) -> tuple[int, ...]:
    if op_type == "Transpose":
        perm = attributes.get("perm") or list(reversed(range(len(dims))))
        return tuple(dims[i] for i in perm)
    return _reshaped(dims, shape, attributes)


def fold_weight_transforms(model: Any) -> list[str]:
    """Replace every ``Transpose``/``Reshape`` of initializers in an ``onnx_ir`` model by a lazy initializer.

    The initializer computes the node's result when it is written (one tensor at a time, as the
    streamed export writes them), so nothing is materialized here and a tensor above protobuf's
    2 GB (the 9B's fp32 LM head: 2.48 GB) is no problem. It takes the node's output name, so no
    consumer changes; an input initializer is dropped once nothing else reads it. Repeated while a
    fold makes another foldable (Reshape of a Transpose). Returns the folded nodes' names.
    """
    import onnx_ir as ir

    graph, folded = model.graph, []
    while nodes := [n for n in graph if n.op_type in FOLDED_OPS and n.domain in ("", "ai.onnx") and n.inputs
                    and all(v is not None and v.is_initializer() and v.const_value is not None for v in n.inputs)]:
        for node in nodes:
            data, *rest = [v.const_value for v in node.inputs]
            attributes = {name: attr.value for name, attr in node.attributes.items()}
            shape = rest[0].numpy() if rest else None
            dims = _out_dims(node.op_type, attributes, tuple(int(d) for d in data.shape), shape)

            def compute(op: str = node.op_type, attrs: dict[str, Any] = attributes, source: Any = data,
                        target: np.ndarray | None = shape, name: str = node.outputs[0].name) -> Any:
                return ir.Tensor(folded_array(op, attrs, source.numpy(), target), name=name)

            output, inputs = node.outputs[0], list(node.inputs)
            value = ir.Value(shape=ir.Shape(dims), type=ir.TensorType(data.dtype),
                             const_value=ir.LazyTensor(compute, dtype=data.dtype, shape=ir.Shape(dims), name=output.name))
            output.replace_all_uses_with(value, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            value.name = output.name
            graph.register_initializer(value)
            for source in inputs:
                if not source.uses() and not source.is_graph_output():
                    graph.initializers.pop(source.name)
            folded.append(node.name)
    return folded


def folded_structure(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``'s graph as :func:`fold_weight_transforms` leaves it, for reading its structure only.

    Every folded node's output becomes an initializer of the folded dims and type *without data*, so
    the GEMMs and their weights' shapes can be found (``quantize.int4.weight_matmuls``) without
    reading or writing a weight; the result is never run or saved. ``model`` is not changed.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    while nodes := weight_transforms(folded):
        inits = {t.name: t for t in graph.initializer}
        for node in nodes:
            source = inits[node.input[0]]
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            shape = onnx.numpy_helper.to_array(inits[node.input[1]]) if len(node.input) > 1 else None
            dims = _out_dims(node.op_type, attributes, tuple(source.dims), shape)
            graph.initializer.append(onnx.TensorProto(name=node.output[0], data_type=source.data_type, dims=dims))
            graph.node.remove(node)
    return folded


def folded_weights_file(src: Path, scratch: Path) -> Path:
    """``src`` itself when it has no weight transforms to fold; else a folded copy written into ``scratch``.

    The copy keeps ``src``'s storage: external data (``NAME.data`` beside it) when ``src`` has any,
    written one tensor at a time (:func:`~trt_pipeline.export.streaming.save_with_external_data`).
    """
    import onnx_ir as ir

    from trt_pipeline.export.streaming import save_with_external_data
    from trt_pipeline.graph.autocast import stores_external_data

    src = Path(src)
    proto = onnx.load(str(src), load_external_data=False)  # read once: the check, the storage and the model
    if not weight_transforms(proto):
        return src
    external = stores_external_data(proto)
    model = ir.serde.deserialize_model(proto)  # what ir.load does with the proto it reads
    ir.external_data.set_base_dir(model.graph, str(src.parent))
    fold_weight_transforms(model)
    scratch.mkdir(parents=True, exist_ok=True)
    dst = scratch / src.name
    if external:
        save_with_external_data(model, dst)
    else:
        ir.save(model, str(dst))
    return dst


__all__ = ["FOLDED_OPS", "fold_weight_transforms", "folded_array", "folded_structure", "folded_weights_file",
           "weight_transforms"]
