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

* candidates are tensors produced by a ``Mul`` (the RMSNorm output ``x * rsqrt(..) [* gamma]`` feeding
  q/k/v and gate_up, the final norm feeding the LM head, the SwiGLU product feeding down_proj) whose
  every consumer is a MatMul with a 2-D weight initializer used by that MatMul alone;
* ``1 / s`` goes into the Mul's per-channel constant operand (the RMSNorm weight ``gamma``) when
  it has one used nowhere else, otherwise into a new ``Mul(X, 1/s)`` node (the exporter drops
  ``gamma`` when it is all ones, as in random checkpoints; TensorRT fuses the extra scale into the
  producer's pointwise kernel); ``s`` scales the rows of every consumer's weight;
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


def smoothable_inputs(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Mul outputs read only by MatMuls with a private 2-D weight initializer: tensor -> those MatMuls."""
    inits, uses = _initializers(model), consumers(model)
    outputs = {o.name for o in model.graph.output}
    found = {}
    for node in model.graph.node:
        if node.op_type != "Mul" or node.output[0] in outputs:
            continue
        readers = uses.get(node.output[0], [])
        if readers and all(
            r.op_type == "MatMul" and r.input[0] == node.output[0] and r.input[1] in inits
            and len(inits[r.input[1]].dims) == 2 and len(uses[r.input[1]]) == 1
            for r in readers
        ):
            found[node.output[0]] = readers
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
    """Multiply the producing Mul's private per-channel constant by ``inverse``; False when it has none."""
    inits = _initializers(model)
    producer = next(n for n in model.graph.node if tensor in n.output)
    for name in producer.input:
        init = inits.get(name)
        if init is not None and len(uses.get(name, [])) == 1 and list(init.dims) in ([inverse.size], [1, inverse.size],
                                                                                       [1, 1, inverse.size]):
            value = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array((value * inverse.reshape(value.shape)).astype(value.dtype), name))
            return True
    return False


def _insert_scale(model: onnx.ModelProto, tensor: str, inverse: np.ndarray, readers: Sequence[onnx.NodeProto]) -> None:
    """``tensor`` -> ``Mul(tensor, 1/s)`` for ``readers``; the Mul goes right after the producer (topological)."""
    scaled, constant = f"{tensor}_smoothed", f"{tensor}_smooth_inv_scale"
    model.graph.initializer.append(numpy_helper.from_array(inverse, constant))
    node = onnx.helper.make_node("Mul", [tensor, constant], [scaled], name=f"{tensor}_smooth")
    position = next(i for i, n in enumerate(model.graph.node) if tensor in n.output)
    model.graph.node.insert(position + 1, node)
    for reader in readers:
        reader.input[0] = scaled


def smooth_model(model: onnx.ModelProto, x_max: dict[str, np.ndarray], alpha: float) -> SmoothingReport:
    """Fold the smoothing scales of every tensor in ``x_max`` into ``model`` (in place)."""
    report = SmoothingReport(alpha=alpha)
    targets = smoothable_inputs(model)
    inits, uses = _initializers(model), consumers(model)
    scales = []
    for tensor, readers in targets.items():
        if tensor not in x_max:
            continue
        weights = [numpy_helper.to_array(inits[r.input[1]]).astype(np.float32) for r in readers]
        scale = smoothing_scales(x_max[tensor], weights, alpha)
        for reader, weight in zip(readers, weights):
            inits[reader.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], reader.input[1]))
        inverse = (1.0 / scale).astype(np.float32)
        if _fold_into_producer(model, tensor, inverse, uses):
            report.folded_into_weight += 1
        else:
            _insert_scale(model, tensor, inverse, readers)
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


__all__ = ["SmoothingReport", "channel_max", "smooth_file", "smooth_model", "smoothable_inputs", "smoothing_scales"]
