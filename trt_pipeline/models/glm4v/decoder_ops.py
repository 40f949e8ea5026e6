"""The decoder graph's flavours: which ops the exported decoder spells its hot spots with.

Torch-free (the config layer checks ``--decoder-ops`` / ``--opset`` against it without importing
the model); :class:`~trt_pipeline.models.glm4v.text.TextDecoder` traces the chosen flavour and
export.json records :func:`decoder_graph` of it.
"""

from __future__ import annotations

from typing import Any

#: The decoder graph flavours ``autoglm-trt export --decoder-ops`` chooses between (the first is the default).
#:
#: * ``portable``: only ops every supported TensorRT parses (JetPack 6's 10.3 included) at opset 18;
#:   ONNX Runtime fuses its RMSNorm spelling but sees attention and rotary as ~25 small nodes a layer.
#: * ``fused``: opset 23's ``Attention`` (grouped-query, past/present inside the op),
#:   ``RotaryEmbedding`` and ``RMSNormalization``: on the small preset 241 nodes after ONNX Runtime's
#:   optimizer instead of 528 (18 a layer instead of 42), and decode/prefill steps 1.04-1.07x faster
#:   on one thread (``benchmarks/graph_ab.py``); each node costs ONNX Runtime ~3 us of dispatch
#:   besides its kernel. TensorRT parses these ops from 10.14 (Attention) / 10.15 (the others) on,
#:   so JetPack 6 (10.3) cannot build it: ``trt_pipeline.engine.onnx_ops``'s tables say which
#:   targets can, and ``bundle`` refuses a target that cannot.
DECODER_OPS = ("portable", "fused")
#: The decoder's KV-cache contracts (``autoglm-trt export --kv-cache``; the first is the default).
#:
#: * ``concat``: ``past_key_values.*`` ``[B, kv_heads, past, head_dim]`` in, ``present.*``
#:   ``[B, kv_heads, past + S, head_dim]`` out: every step writes the whole cache anew (a copy per
#:   step that grows with the context). Every flavour and every runtime.
#: * ``inplace``: ``past_key_values.*`` ``[B, T, kv_heads * head_dim]`` in, ``T >= past + S``: rows
#:   ``past .. past + S - 1`` are don't-care slots for the new tokens, where ``past + S`` is the row count
#:   up to the last position ``attention_mask`` attends (the mask is ``[B, T]`` too, 0 on the free
#:   rows after it); ``present.*`` the same array with those rows written (one ``ScatterElements``
#:   per tensor). A runtime that binds each ``present.*`` to its
#:   ``past_key_values.*`` buffer (:class:`~trt_pipeline.runtime.ort_binding.BoundOrtRunner`) writes
#:   only the new rows, and a host that keeps one growing buffer per tensor
#:   (:class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`) feeds a prefix view of it: no
#:   cache copy per step and one cache in memory instead of two. ``fused`` decoder ops only
#:   (the opset-23 ``Attention`` reads the sequence-major 3-D cache as it is).
KV_CACHES = ("concat", "inplace")

#: The opset-23 ops only the ``fused`` flavour uses (what TensorRT < 10.15 cannot parse in it).
FUSED_ONNX_OPS = ("Attention", "RotaryEmbedding", "RMSNormalization")
#: The lowest opset of each flavour, and the opset an export uses when none is given.
DECODER_OPS_MIN_OPSET = {"portable": 17, "fused": 23}
DECODER_OPS_DEFAULT_OPSET = {"portable": 18, "fused": 23}

_PORTABLE_GRAPH = {
    "ops": "portable",
    "attention": "grouped-query: each KV head's query group as rows of one matmul ([B, kv, groups*S, D]); "
                 "K/V never repeated per query head",
    "rms_norm": "x / sqrt(mean(x^2) + eps) * weight: ONNX Runtime fuses it into SimplifiedLayerNormalization",
    "rotary": "whole-head cos/signed-sin tables built once per step; per layer x*cos + swap_pairs(x)*sin "
              "over query and key heads together",
    "kv_cache": "concat",
    "kv_cache_update": "Concat of past and the new keys/values per layer (present = a new array each step)",
    "per_tensorrt_target": "one graph: every op is parsed by trt-10.3, trt-10.15 and trt-11",
}
_FUSED_GRAPH = {
    "ops": "fused",
    "attention": "ONNX Attention (opset 23): q_num_heads/kv_num_heads grouped-query, additive mask, "
                 "past_key/past_value in, present_key/present_value out, softmax in fp32 (softmax_precision "
                 "float in bf16/fp16 exports)",
    "rms_norm": "ONNX RMSNormalization (opset 23), fp32 stash type",
    "rotary": "ONNX RotaryEmbedding (opset 23), interleaved, rotary_embedding_dim = the partial rotary "
              "width, per-token cos/sin of the host's M-RoPE tables",
    "kv_cache": "concat",
    "kv_cache_update": "inside Attention: present = concat(past, new) (a new array each step)",
    "per_tensorrt_target": "ONNX Runtime >= 1.23, TensorRT >= 10.15 (trt-10.15, trt-11); not trt-10.3 (JetPack 6)",
}


#: Flavour x export dtype pairs refused before anything is written, with the measured reason.
_REFUSED_DTYPES = {
    ("fused", "float16"): (
        "an fp16 graph of opset-23 Attention/RotaryEmbedding fails the fp16 validation on ONNX Runtime's CPU "
        "kernels (tiny checkpoint: logits error 2.7x transformers' own fp16 drift, gate 2x; the portable fp16 "
        "graph passes)"),
}


def check_export_dtype(ops: str, dtype: str) -> None:
    """Refuse a flavour/dtype pair whose graph does not validate (ConfigError saying what to use)."""
    from trt_pipeline.errors import ConfigError

    why = _REFUSED_DTYPES.get((ops, dtype))
    if why is not None:
        raise ConfigError(f"--decoder-ops {ops} with --dtype {dtype}: {why}.",
                          hint="export fused in float32 (or bfloat16) and make fp16 with `autoglm-trt precision fp16` "
                               "(AutoCast keeps Attention in fp32), or export --decoder-ops portable --dtype float16")


_INPLACE_CACHE: dict[str, Any] = {
    "kv_cache": "inplace",
    "kv_cache_update": "ScatterElements of the new rows into past_key_values.* [B, T, kv_heads * head_dim] at rows "
                       "past .. past + S - 1, past + S = the rows up to the last attended position (attention_mask 1) "
                       "(present.* is that array); ONNX Runtime IO binding aliases present to past: no cache copy",
    # rows after the last attended one are free (masked, never written): a host may feed a longer buffer
    # (T > past + S) and bind it once per block of decode steps (trt_pipeline.models.glm4v.kv_arena)
    "kv_cache_free_rows": True,
}


def check_kv_cache(ops: str, kv_cache: str) -> None:
    """Refuse an unknown KV-cache contract or ``inplace`` without the fused ops (ConfigError saying what to use)."""
    from trt_pipeline.errors import ConfigError

    if kv_cache not in KV_CACHES:
        raise ConfigError(f"--kv-cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}.")
    if kv_cache == "inplace" and ops != "fused":
        raise ConfigError(f"--kv-cache inplace needs --decoder-ops fused (got {ops}): the in-place update feeds "
                          "opset-23 Attention the sequence-major cache as it is; the portable attention would "
                          "transpose the whole cache every step.",
                          hint="add --decoder-ops fused, or drop --kv-cache inplace")


def decoder_graph(ops: str, kv_cache: str = "concat") -> dict[str, Any]:
    """How the decoder graph of flavour ``ops`` spells its hot spots (export.json's ``decoder_graph``)."""
    record = dict(_FUSED_GRAPH if ops == "fused" else _PORTABLE_GRAPH)
    if kv_cache == "inplace":
        record.update(_INPLACE_CACHE)
    return record


__all__ = ["DECODER_OPS", "KV_CACHES", "check_export_dtype", "check_kv_cache", "FUSED_ONNX_OPS", "DECODER_OPS_DEFAULT_OPSET", "DECODER_OPS_MIN_OPSET", "decoder_graph"]
