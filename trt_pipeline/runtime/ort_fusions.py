"""A load-time fusion ONNX Runtime's own optimizer does not make on the fused decoder (the file stays standard ONNX).

Every GLM-4.1V layer adds a residual and normalises the sum (``x + post_self_attn_layernorm(attn)`` ->
``post_attention_layernorm``; ``x + post_mlp_layernorm(mlp)`` -> the next layer's ``input_layernorm``).
ONNX Runtime has one CPU kernel for exactly that, ``com.microsoft.SkipSimplifiedLayerNormalization``
(the sum and the RMSNorm of the sum in one pass, the sum as an optional output), which
onnxruntime-genai's builder emits and ONNX Runtime 1.24's optimizer makes only from its own
``SimplifiedLayerNormalization`` (spelled-out norms): an ``Add`` feeding the opset-23
``RMSNormalization`` of a ``--decoder-ops fused`` graph stays two nodes, i.e. one more kernel launch
and one more pass over the hidden state per norm (24 of them on the small preset).

:func:`fuse_residual_rms_norms` rewrites those pairs in memory when a session is made
(:func:`~trt_pipeline.runtime.onnxruntime_runner.session`, ``OrtSettings.fuse_norms``); the
exported file, which TensorRT and every other runtime read, is not touched. Only pairs whose
result is the same are rewritten: ``axis`` -1 (the kernel normalises the last axis), a float32
scale and float32 statistics (``stash_type`` 1), an ``Add`` of two activations (a bias add has an
initializer input). On the fused tiny and small decoders the fused session's outputs equal the
unfused one's bit for bit (``tests/runtime/test_ort_fusions.py``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

#: The contrib op the pairs become (CPU kernel in ONNX Runtime's ``com.microsoft`` domain).
SKIP_NORM = "SkipSimplifiedLayerNormalization"
MS_DOMAIN = "com.microsoft"


def fuse_residual_rms_norms(model: object) -> int:
    """Rewrite every fusable ``Add -> RMSNormalization`` pair of ``model`` (an ``onnx.ModelProto``) in place.

    The ``Add``'s output is kept as the fused node's fourth output (``input_skip_bias_sum``) when
    anything else reads it (the residual stream always does). Returns the number of pairs fused.
    """
    from onnx import helper

    graph = model.graph  # type: ignore[attr-defined]
    producer = {name: node for node in graph.node for name in node.output}
    readers: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            readers[name] += 1
    for output in graph.output:
        readers[output.name] += 1
    float_scales = {init.name for init in graph.initializer if init.data_type == 1 and len(init.dims) == 1}
    initializers = {init.name for init in graph.initializer}
    fused: dict[int, object] = {}
    dropped: set[int] = set()
    for node in graph.node:
        add = producer.get(node.input[0]) if node.op_type == "RMSNormalization" and node.input else None
        if add is None or add.op_type != "Add" or id(add) in dropped or not _fusable(node, add, float_scales, initializers):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        total = add.output[0]
        outputs = [node.output[0], "", "", total] if readers[total] > 1 else [node.output[0]]
        fused[id(node)] = helper.make_node(SKIP_NORM, [add.input[0], add.input[1], node.input[1]], outputs,
                                           name=f"{node.name or total}/skip_norm", domain=MS_DOMAIN,
                                           epsilon=float(attrs.get("epsilon", 1e-5)))
        dropped.add(id(add))
    if fused:
        nodes = [fused.get(id(node), node) for node in graph.node if id(node) not in dropped]
        del graph.node[:]
        graph.node.extend(nodes)
        if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):  # type: ignore[attr-defined]
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))  # type: ignore[attr-defined]
    return len(fused)


def _fusable(norm: object, add: object, float_scales: set[str], initializers: set[str]) -> bool:
    """Same numbers as the pair: last axis, fp32 statistics and scale, a residual (not bias) add, no bias input."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in norm.attribute}  # type: ignore[attr-defined]
    return (attrs.get("axis", -1) == -1 and attrs.get("stash_type", 1) == 1
            and len(norm.input) == 2 and norm.input[1] in float_scales  # type: ignore[attr-defined]
            and len(add.input) == 2 and not set(add.input) & initializers  # type: ignore[attr-defined]
            and len(norm.output) == 1)  # type: ignore[attr-defined]


def fused_model_bytes(path: Path | str) -> bytes | None:
    """``path``'s graph with :func:`fuse_residual_rms_norms` applied, serialized; None when nothing fuses.

    External weights are not read (ONNX Runtime loads them from the file's folder: the session is
    given that folder); inline weights come along in the bytes.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not any(node.op_type == "RMSNormalization" for node in model.graph.node):
        return None
    if not fuse_residual_rms_norms(model):
        return None
    return model.SerializeToString()


__all__ = ["MS_DOMAIN", "SKIP_NORM", "fuse_residual_rms_norms", "fused_model_bytes"]
