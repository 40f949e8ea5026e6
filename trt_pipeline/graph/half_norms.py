"""RMSNorms of AutoCast'd (fp16) graphs in the form ONNX Runtime loads: ``x * Reciprocal(Sqrt(v))``.

The fp32 export spells every RMSNorm ``x / Sqrt(mean(x^2) + eps) * weight`` (Pow, ReduceMean, Add,
Sqrt, Div, Mul) because ONNX Runtime's ``SimplifiedLayerNormFusion`` turns that into one kernel
(:class:`~trt_pipeline.models.glm4v.layers.RMSNorm`). AutoCast then moves the whole chain to fp16,
and ONNX Runtime 1.24's CPU provider, which has no fp16 ``Pow``, wraps it in Casts of its own; the
fusion then looks up one of those inserted names and session creation fails for every user of plain
``onnxruntime.InferenceSession`` ("GetIndexFromName ... InsertedPrecisionFreeCast_..."). Dividing by
the root through ``Reciprocal`` + ``Mul`` (the spelling fp16/bf16 exports already have, which the
fusion does not match) keeps the graph loadable with default session options; fp16 graphs run on
the CPU only for validation, where the unfused norm costs nothing that matters, and TensorRT parses
both spellings on every target (``trt_pipeline.engine.onnx_ops``).
"""

from __future__ import annotations

import onnx
from onnx import helper

#: the producers walked back from the divisor: Sqrt <- Add(eps) <- ReduceMean <- Pow
NORM_CHAIN = ("Sqrt", "Add", "ReduceMean", "Pow")


def _is_norm_divisor(name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    """Whether tensor ``name`` is ``Sqrt(Add(ReduceMean(Pow(x, 2)), eps))``, an RMSNorm's root."""
    for op in NORM_CHAIN:
        node = producers.get(name)
        if node is None or node.op_type != op:
            return False
        name = node.input[0]
    return True


def reciprocal_norms(model: onnx.ModelProto) -> int:
    """Rewrite every RMSNorm ``Div(x, root)`` of ``model``'s main graph as ``Mul(x, Reciprocal(root))``, in place.

    Output names stay, so consumers and graph outputs are untouched; weights are not read. Returns
    how many norms were rewritten.
    """
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.op_type != "Div" or not _is_norm_divisor(node.input[1], producers):
            rewritten.append(node)
            continue
        inverse = f"{node.output[0]}_inverse_root"
        rewritten.append(helper.make_node("Reciprocal", [node.input[1]], [inverse], name=f"{node.name}_reciprocal"))
        rewritten.append(helper.make_node("Mul", [node.input[0], inverse], list(node.output), name=node.name))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(rewritten)
    return count


__all__ = ["NORM_CHAIN", "reciprocal_norms"]
