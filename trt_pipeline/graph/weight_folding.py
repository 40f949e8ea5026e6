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

import numpy as np
import onnx
from onnx import numpy_helper


#: weight transforms the streamed trace leaves on initializers (and what folding them computes)
FOLDED_OPS = ("Transpose", "Reshape")


def weight_transforms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The ``Transpose``/``Reshape`` nodes of ``model``'s main graph that read only initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type in FOLDED_OPS and n.input and all(name in inits for name in n.input if name)]


def _folded(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """What ``node`` computes from its initializer inputs (ONNX semantics)."""
    data = numpy_helper.to_array(inits[node.input[0]])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Transpose":
        return np.transpose(data, attrs.get("perm"))
    shape = [int(d) for d in numpy_helper.to_array(inits[node.input[1]])]
    if not attrs.get("allowzero", 0):  # 0 copies the input's dim
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return data.reshape(shape)


def fold_weight_transforms(model: onnx.ModelProto) -> list[str]:
    """Replace every ``Transpose``/``Reshape`` of initializers by its result, in place, until none is left.

    The result takes the node's output name, so no consumer changes; an input initializer is dropped
    once nothing else reads it. ``model`` must hold the weights' data (loaded external data).
    Returns the folded nodes' names.
    """
    graph = model.graph
    folded: list[str] = []
    while nodes := weight_transforms(model):
        inits = {t.name: t for t in graph.initializer}
        made = [numpy_helper.from_array(np.ascontiguousarray(_folded(node, inits)), node.output[0]) for node in nodes]
        for node in nodes:
            graph.node.remove(node)
            folded.append(node.name)
        read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        for name in {name for node in nodes for name in node.input if name} - read:
            graph.initializer.remove(inits[name])
        graph.initializer.extend(made)
    return folded


def folded_weights_file(src: Path, scratch: Path) -> Path:
    """``src`` itself when it has no weight transforms to fold; else a folded copy written into ``scratch``.

    The copy keeps ``src``'s storage: external data (``NAME.data`` beside it) when ``src`` has any.
    Loads the whole model, as the quantizers that read the copy do anyway.
    """
    from trt_pipeline.graph.autocast import has_external_data, save_model

    src = Path(src)
    if not weight_transforms(onnx.load(str(src), load_external_data=False)):
        return src
    model = onnx.load(str(src))
    fold_weight_transforms(model)
    scratch.mkdir(parents=True, exist_ok=True)
    dst = scratch / src.name
    save_model(model, dst, has_external_data(src))
    return dst


__all__ = ["FOLDED_OPS", "fold_weight_transforms", "folded_weights_file", "weight_transforms"]
