"""ONNX Runtime contrib ops stood in for by their standard ONNX twin while ModelOpt's AutoCast reads a graph.

ModelOpt takes any op outside ONNX's own schemas for a TensorRT plugin: it moves the node to a
``trt.plugins`` domain and asks TensorRT for its types and shapes, which fails where TensorRT is not
installed (every CPU host), so a vision encoder exported with ``--vision-ops onnxruntime`` could not be
made fp16. Its only contrib op, ``com.microsoft`` ``MultiHeadAttention`` with query/key/value
``[B, N, heads * D]`` and no mask or cache, computes exactly what opset 23's ``Attention`` does with
``q_num_heads = kv_num_heads = heads`` and the same ``scale`` (ONNX Runtime runs both; the first as
flash attention). :func:`standard_stand_ins` hands AutoCast a copy of the graph with each such node
replaced by that ``Attention`` (same name, same inputs and output), and turns AutoCast's result back,
each ``Attention`` again the contrib node, in whatever precision AutoCast gave it (ONNX Runtime's CPU
has float32 and float16 kernels of it). The copy lives in a temporary folder with a copy of the source's
external data, if it has any (onnx refuses external data behind a symlink or a hard link; AutoCast then
loads every weight into memory anyway); nothing is written beside the source.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from onnx import helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

#: The domain of ONNX Runtime's contrib ops.
MS_DOMAIN = "com.microsoft"
#: The opset whose ``Attention`` stands in for ``MultiHeadAttention``.
ATTENTION_OPSET = 23

Restore = Callable[[onnx.ModelProto], onnx.ModelProto]


def _stands_in(node: onnx.NodeProto) -> bool:
    """A ``MultiHeadAttention`` of three inputs (no mask, bias or cache) and one output: an ``Attention``'s twin."""
    return (node.domain == MS_DOMAIN and node.op_type == "MultiHeadAttention"
            and len([name for name in node.input if name]) == 3 and len(node.input) == 3
            and len([name for name in node.output if name]) == 1)


def to_standard(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with each plain ``MultiHeadAttention`` an opset-23 ``Attention``; -> (model, their node names)."""
    swapped = []
    for index, node in enumerate(model.graph.node):
        if not _stands_in(node):
            continue
        given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attributes = {"q_num_heads": given["num_heads"], "kv_num_heads": given["num_heads"]}
        if "scale" in given:
            attributes["scale"] = given["scale"]
        name = node.name or f"stand_in_multi_head_attention_{index}"
        model.graph.node[index].CopyFrom(helper.make_node("Attention", list(node.input), [node.output[0]], name=name,
                                                          **attributes))
        swapped.append(name)
    if swapped:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < ATTENTION_OPSET:
                opset.version = ATTENTION_OPSET
    return model, swapped


def to_contrib(model: onnx.ModelProto, swapped: list[str], default_opset: int) -> onnx.ModelProto:
    """Undo :func:`to_standard` on ``model`` (AutoCast's output): each named ``Attention`` a ``MultiHeadAttention``
    again, and the default domain's opset ``default_opset`` again."""
    names = set(swapped)
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Attention" or node.name not in names:
            continue
        given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attributes = {"num_heads": given["q_num_heads"]}
        if "scale" in given:
            attributes["scale"] = given["scale"]
        model.graph.node[index].CopyFrom(helper.make_node("MultiHeadAttention", list(node.input), [node.output[0]],
                                                          name=node.name, domain=MS_DOMAIN, **attributes))
    for opset in model.opset_import:  # the stand-ins were the only ops that needed more
        if opset.domain in ("", "ai.onnx"):
            opset.version = default_opset
    return model


@contextlib.contextmanager
def standard_stand_ins(src: Path) -> Iterator[tuple[Path, Restore]]:
    """Yield (a graph for ModelOpt to read, a function turning its result back into the contrib graph).

    A graph without such contrib nodes is yielded as it is, with an identity function.
    """
    model = onnx.load(str(src), load_external_data=False)
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), ATTENTION_OPSET)
    model, swapped = to_standard(model)
    if not swapped:
        yield src, lambda result: result
        return
    with tempfile.TemporaryDirectory(prefix="stand-ins.") as scratch:
        copy = Path(scratch) / src.name
        for location in {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}:
            shutil.copyfile(src.parent / location, Path(scratch) / location)
        onnx.save(model, str(copy))
        yield copy, lambda result: to_contrib(result, swapped, default_opset)


__all__ = ["ATTENTION_OPSET", "standard_stand_ins", "to_contrib", "to_standard"]
