"""Memory roofline of one decode step.

A decode step of a transformer decoder must at least stream every decoder weight and the whole KV
cache from memory once. With ``B`` the measured memory bandwidth of the machine:

    bytes moved      = decoder weight bytes + KV-cache bytes at that context
    lower bound      = bytes moved / B                                   (seconds)
    roofline fraction = lower bound / measured step time                 (1.0 = at the memory roofline)

Decoder weight bytes come from the ONNX initializers of ``decoder.onnx`` (their declared dims x
dtype size, external data never loaded) or, for torch backends, from the parameters the decoder
reads (transformer layers, final norm, lm_head; the token-embedding table is a row lookup, not a
stream, and is excluded for every backend alike). The cache of ``context`` tokens is
2 (K and V) x layers x kv_heads x head_dim x context x batch x dtype size bytes
(:func:`kv_cache_bytes`); the KV bytes of a step (:func:`decode_kv_bytes`) are what its cache
update really moves besides: attention reads the cache once, and

* ``copy`` (a ``concat`` export, transformers' ``DynamicCache``, an ``inplace`` export whose runner
  does not bind ``present.*`` to ``past_key_values.*``, TensorRT): ``present.*`` is a new array, so
  the cache is read again and written with the new token (context + 1 rows);
* ``in place`` (an ``--kv-cache inplace`` export on IO-bound ONNX Runtime): only the new row is written.

The bench detects which one a backend does (:data:`KV_UPDATES`). The bound ignores activations and
compute, so real fractions are below 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: ONNX TensorProto data type -> bytes per element (sub-byte types rounded up per element).
ONNX_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
                    17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
#: UINT4 / INT4: packed two per byte.
ONNX_4BIT_DTYPES = (21, 22)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, context: int, batch: int = 1, dtype_bytes: int = 4) -> int:
    """Bytes of K and V for ``context`` tokens over all layers."""
    if min(layers, kv_heads, head_dim, batch, dtype_bytes) < 1 or context < 0:
        raise ValueError("kv_cache_bytes needs positive dims and a non-negative context")
    return 2 * layers * kv_heads * head_dim * context * batch * dtype_bytes


#: How a decode step updates its cache (see the module docstring).
KV_UPDATES = ("copy", "in place")


def decode_kv_bytes(layers: int, kv_heads: int, head_dim: int, context: int, batch: int = 1, dtype_bytes: int = 4,
                    update: str = "copy") -> int:
    """KV-cache bytes one decode step at ``context`` streams: the cache read once, plus its ``update``
    (``copy``: read again and written with the new token; ``in place``: the new row written)."""
    if update not in KV_UPDATES:
        raise ValueError(f"KV update {update!r}: choose one of {', '.join(KV_UPDATES)}")
    cache = kv_cache_bytes(layers, kv_heads, head_dim, context, batch, dtype_bytes)
    row = kv_cache_bytes(layers, kv_heads, head_dim, 1, batch, dtype_bytes)
    return cache + (cache + cache + row if update == "copy" else row)


def lower_bound_s(bytes_moved: float, bandwidth_bytes_per_s: float) -> float:
    """Fastest possible time to move ``bytes_moved`` at ``bandwidth_bytes_per_s``."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError("bandwidth must be > 0")
    return float(bytes_moved) / float(bandwidth_bytes_per_s)


def roofline_fraction(lower_bound: float, measured: float) -> float:
    """lower bound / measured (both seconds): 1.0 means the step runs at the memory roofline."""
    if measured <= 0:
        raise ValueError("measured time must be > 0")
    return float(lower_bound) / float(measured)


@dataclass(frozen=True)
class RooflinePoint:
    backend: str
    context: int
    weight_bytes: int
    kv_bytes: int
    bandwidth_gbps: float
    measured_ms: float
    #: the export's KV-cache layout and how the backend's step updated it (what ``kv_bytes`` counts)
    kv_cache: str = "concat"
    kv_update: str = "copy"

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def lower_bound_ms(self) -> float:
        return lower_bound_s(self.bytes_moved, self.bandwidth_gbps * 1e9) * 1e3

    @property
    def fraction(self) -> float:
        return roofline_fraction(self.lower_bound_ms, self.measured_ms)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_moved": self.bytes_moved, "lower_bound_ms": float(f"{self.lower_bound_ms:.6g}"),
                "fraction": float(f"{self.fraction:.6g}")}


def onnx_weight_bytes(path: Path | str) -> int:
    """Bytes of every initializer (and Constant-node tensor) of an ONNX file, from dims x dtype.

    External data is never loaded: only the graph protobuf is read.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def tensor_bytes(tensor: Any) -> int:
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        if int(tensor.data_type) in ONNX_4BIT_DTYPES:  # two weights per byte (block-quantized INT4)
            return (count + 1) // 2
        return count * ONNX_DTYPE_BYTES.get(int(tensor.data_type), 4)

    total = sum(tensor_bytes(t) for t in model.graph.initializer)
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    total += tensor_bytes(attr.t)
    return total


def _all_nodes(graph: Any) -> Iterable[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def torch_decoder_weight_bytes(named_parameters: Iterable[tuple[str, Any]]) -> int:
    """Bytes of the parameters a decode step streams: everything but vision and the embedding table."""
    total, seen = 0, set()
    for name, param in named_parameters:
        if "visual" in name or "embed_tokens" in name:
            continue
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel() * param.element_size()
    return total


__all__ = [
    "ONNX_DTYPE_BYTES",
    "RooflinePoint",
    "KV_UPDATES",
    "decode_kv_bytes",
    "kv_cache_bytes",
    "lower_bound_s",
    "onnx_weight_bytes",
    "roofline_fraction",
    "torch_decoder_weight_bytes",
]
