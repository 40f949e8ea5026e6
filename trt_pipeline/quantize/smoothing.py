"""SmoothQuant-style smoothing of GEMM inputs, folded into the graph before INT8 calibration.

W8A8 loses accuracy on transformer activations because a few input channels of a GEMM carry
outliers 10-100x larger than the rest: one per-tensor activation scale then spends most of its 256
levels on them. SmoothQuant (Xiao et al. 2023) moves that range into the weights, which are
quantized per output channel and tolerate it: for an input ``X [.., C]`` of GEMMs ``X @ W_i``
(``W_i [C, N_i]``)::

    s_c = max|X_c|^alpha / max_i max_n |W_i[c, n]|^(1 - alpha)        (per input channel c)
    X @ W_i = (X / s) @ (s[:, None] * W_i)

which is exact in real arithmetic. ModelOpt's ONNX quantizer has no SmoothQuant option (only
its torch path does), so the fold is done here on the fp32 ONNX graph:

* candidates are tensors produced by a ``Mul`` or a ``Div`` (:data:`PRODUCERS`) whose every
  consumer is a weighted GEMM, directly or through a ``Reshape`` that keeps the channel axis last
  (a ``Shape`` of it may read it too).
  In the exported decoder that is, per layer, the RMSNorm output ``x / sqrt(mean(x^2) + eps) * gamma``
  (a ``Mul``; a ``Div`` when ``gamma`` is all ones and the exporter drops it, as in random
  checkpoints) feeding q/k/v (biased ``Gemm`` s on the ``Reshape [-1, C]`` of it) and, after the
  attention, gate_up (``MatMul``); the SwiGLU product (``Mul``) feeding down_proj; and the final
  norm feeding the LM head: ``3 x layers + 1`` tensors, ``5 x layers + 1`` GEMMs. A weighted GEMM is
  a MatMul (or a Gemm without ``transA``) whose 2-D weight initializer is used by it alone;
* ``1 / s`` goes into a ``Mul`` producer's per-channel constant operand (the RMSNorm weight
  ``gamma``) when it has one used nowhere else, otherwise into a new ``Mul(X, 1/s)`` node (TensorRT
  fuses the extra scale into the producer's pointwise kernel; ONNX Runtime's RMSNorm fusion then
  no longer covers that norm, which costs one extra elementwise op); ``s`` scales the weight's
  reduction axis (rows, or columns of a ``transB`` Gemm);
* ``max|X_c|`` is measured on ONNX Runtime over the calibration feeds (one pass, before the INT8
  calibration, which then sees the smoothed activations).

Before quantization the smoothed graph computes the same function (fp32 rounding aside: tested).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trt_pipeline.quantize.node_groups import consumers

MIN_SCALE = 1e-5


@dataclass
class SmoothingReport:
    """What :func:`smooth_file` changed."""

    alpha: float
    tensors: list[str] = field(default_factory=list)
    folded_into_weight: int = 0  # Mul constants (RMSNorm gamma) rescaled
    inserted_mul: int = 0  # new Mul(X, 1/s) nodes
    gemms: int = 0
    scale_min: float = 1.0
    scale_max: float = 1.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


#: Ops whose output can be smoothed: the RMSNorm's last op (``* gamma``, or ``/ sqrt(..)`` without
#: gamma) and the SwiGLU product.
PRODUCERS = ("Mul", "Div")


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _weighted_gemm(node: onnx.NodeProto, tensor: str, inits: dict[str, onnx.TensorProto],
                   uses: dict[str, list[onnx.NodeProto]]) -> bool:
    """``node`` = ``tensor @ W`` with a private 2-D initializer ``W`` (a MatMul, or a Gemm without transA)."""
    if node.op_type not in ("MatMul", "Gemm") or node.input[0] != tensor or node.input[1] not in inits:
        return False
    if node.op_type == "Gemm" and _attribute(node, "transA"):
        return False
    return len(inits[node.input[1]].dims) == 2 and len(uses[node.input[1]]) == 1


def reduction_dim(node: onnx.NodeProto) -> int:
    """The weight axis that multiplies the input channels (0, or 1 for a ``transB`` Gemm)."""
    return 1 if node.op_type == "Gemm" and _attribute(node, "transB") else 0


def _channel_reshape(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Reshape to ``[.., C]`` by a constant shape whose last entry is a real size (the channels stay last)."""
    if node.op_type != "Reshape" or node.input[1] not in inits:
        return False
    shape = numpy_helper.to_array(inits[node.input[1]])
    return shape.ndim == 1 and shape.size >= 1 and int(shape[-1]) > 0


def _gemms_reading(tensor: str, inits: dict[str, onnx.TensorProto],
                   uses: dict[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto] | None:
    """The weighted GEMMs reading ``tensor`` (directly or through a channel-keeping Reshape); None if
    anything but those (and ``Shape``) reads it."""
    gemms: list[onnx.NodeProto] = []
    for reader in uses.get(tensor, []):
        if reader.op_type == "Shape":  # reads the shape only (the Gemm path's reshape back to [B, S, N])
            continue
        if _weighted_gemm(reader, tensor, inits, uses):
            gemms.append(reader)
        elif _channel_reshape(reader, inits) and reader.input[0] == tensor:
            inner = uses.get(reader.output[0], [])
            if not inner or not all(_weighted_gemm(g, reader.output[0], inits, uses) for g in inner):
                return None
            gemms.extend(inner)
        else:
            return None
    return gemms or None


def smoothable_inputs(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """:data:`PRODUCERS` outputs read only by weighted GEMMs (directly or through a Reshape): tensor -> GEMMs."""
    inits, uses = _initializers(model), consumers(model)
    outputs = {o.name for o in model.graph.output}
    found = {}
    for node in model.graph.node:
        if node.op_type not in PRODUCERS or node.output[0] in outputs:
            continue
        gemms = _gemms_reading(node.output[0], inits, uses)
        if gemms:
            found[node.output[0]] = gemms
    return found


def channel_max(src: Path, feeds: Sequence[dict[str, np.ndarray]], tensors: Sequence[str]) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over all feeds (fp32 graph on ONNX Runtime)."""
    from trt_pipeline.runtime.onnxruntime_runner import session

    model = onnx.load(str(src))
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in existing)
    result: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="smooth.") as scratch:
        path = Path(scratch) / "model.onnx"
        onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data")
        sess = session(path)
        for feed in feeds:
            for name, value in zip(tensors, sess.run(list(tensors), feed)):
                value = np.abs(np.asarray(value, np.float32)).reshape(-1, np.shape(value)[-1])
                if value.size:
                    current = value.max(0)
                    result[name] = np.maximum(result[name], current) if name in result else current
        del sess
    return result


def smoothing_scales(x_max: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """``s_c = max|X_c|^alpha / max|W[c, :]|^(1 - alpha)`` over all ``weights [C, N_i]``, clipped >= 1e-5."""
    w_max = np.max(np.stack([np.abs(w).max(1) for w in weights]), 0)
    scale = np.power(np.maximum(x_max, MIN_SCALE), alpha) / np.power(np.maximum(w_max, MIN_SCALE), 1.0 - alpha)
    return np.maximum(scale, MIN_SCALE).astype(np.float32)


def _fold_into_producer(model: onnx.ModelProto, tensor: str, inverse: np.ndarray, uses: dict[str, list[onnx.NodeProto]]) -> bool:
    """Multiply the producing Mul's private per-channel constant by ``inverse``; False when it has none
    (or the producer is a Div, whose operands divide)."""
    inits = _initializers(model)
    producer = next(n for n in model.graph.node if tensor in n.output)
    if producer.op_type != "Mul":
        return False
    for name in producer.input:
        init = inits.get(name)
        if init is not None and len(uses.get(name, [])) == 1 and list(init.dims) in ([inverse.size], [1, inverse.size],
                                                                                       [1, 1, inverse.size]):
            value = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array((value * inverse.reshape(value.shape)).astype(value.dtype), name))
            return True
    return False


def _insert_scale(model: onnx.ModelProto, tensor: str, inverse: np.ndarray, readers: Sequence[onnx.NodeProto]) -> None:
    """``tensor`` -> ``Mul(tensor, 1/s)`` for its ``readers`` (every direct consumer: GEMMs or Reshapes);
    the Mul goes right after the producer (topological)."""
    scaled, constant = f"{tensor}_smoothed", f"{tensor}_smooth_inv_scale"
    model.graph.initializer.append(numpy_helper.from_array(inverse, constant))
    node = onnx.helper.make_node("Mul", [tensor, constant], [scaled], name=f"{tensor}_smooth")
    position = next(i for i, n in enumerate(model.graph.node) if tensor in n.output)
    model.graph.node.insert(position + 1, node)
    for reader in readers:
        reader.input[0] = scaled  # readers read ``tensor`` as their first input (checked by smoothable_inputs)


def _as_channels_first(node: onnx.NodeProto, weight: onnx.TensorProto) -> np.ndarray:
    value = numpy_helper.to_array(weight).astype(np.float32)
    return value.T if reduction_dim(node) else value


def smooth_model(model: onnx.ModelProto, x_max: dict[str, np.ndarray], alpha: float) -> SmoothingReport:
    """Fold the smoothing scales of every tensor in ``x_max`` into ``model`` (in place)."""
    report = SmoothingReport(alpha=alpha)
    targets = smoothable_inputs(model)
    inits, uses = _initializers(model), consumers(model)
    scales = []
    for tensor, readers in targets.items():
        if tensor not in x_max:
            continue
        # every weight as [C, N]: the reduction axis first (a transB Gemm stores [N, C])
        weights = [_as_channels_first(r, inits[r.input[1]]) for r in readers]
        if any(w.shape[0] != x_max[tensor].size for w in weights):
            continue  # a Reshape changed the channel count: not a per-channel rescaling
        scale = smoothing_scales(x_max[tensor], weights, alpha)
        for reader, weight in zip(readers, weights):
            scaled = weight * scale[:, None]
            scaled = scaled.T if reduction_dim(reader) else scaled
            inits[reader.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(scaled), reader.input[1]))
        inverse = (1.0 / scale).astype(np.float32)
        if _fold_into_producer(model, tensor, inverse, uses):
            report.folded_into_weight += 1
        else:
            _insert_scale(model, tensor, inverse, uses[tensor])
            report.inserted_mul += 1
        report.tensors.append(tensor)
        report.gemms += len(readers)
        scales.append(scale)
    if scales:
        report.scale_min = float(min(s.min() for s in scales))
        report.scale_max = float(max(s.max() for s in scales))
    return report


def smooth_file(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]], alpha: float = 0.5) -> SmoothingReport:
    """Smoothed copy of the fp32 graph ``src`` at ``dst`` (external data when ``src`` has it)."""
    from trt_pipeline.graph.autocast import has_external_data, save_model

    start = time.perf_counter()
    model = onnx.load(str(src))
    x_max = channel_max(src, feeds, list(smoothable_inputs(model)))
    report = smooth_model(model, x_max, alpha)
    save_model(model, dst, external=has_external_data(src))
    report.seconds = round(time.perf_counter() - start, 3)
    return report


__all__ = ["PRODUCERS", "SmoothingReport", "channel_max", "smooth_file", "smooth_model", "smoothable_inputs", "smoothing_scales"]
