"""The decoder graph's flavours: which ops the exported decoder spells its hot spots with.

Torch-free (the config layer checks ``--decoder-ops`` / ``--opset`` against it without importing
the model); :class:`~trt_pipeline.models.glm4v.text.TextDecoder` traces the chosen flavour and
export.json records :func:`decoder_graph` of it.
"""

from __future__ import annotations

from collections.abc import Iterable
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
#: * ``onnxruntime``: ONNX Runtime only (no TensorRT parses ``com.microsoft`` ops): ``fused`` with its
#:   attention and residual norms in ONNX Runtime's contrib ops, as onnxruntime-genai's graphs spell
#:   them. One ``GroupQueryAttention`` per layer writes the new keys/values into the shared
#:   ``[B, kv_heads, T, head_dim]`` cache itself and reads only the attended rows (``seqlens_k``), so
#:   free rows cost nothing and the whole buffer is bound once; ``SkipSimplifiedLayerNormalization``
#:   does the residual add and the next RMSNorm in one node (2 a layer). On the small preset's int4
#:   decoder: 228 nodes after ONNX Runtime's optimizer instead of 274 (``fused`` + ``inplace``); a whole
#:   int4 decode step through the stepper 0.99-1.06x as fast (``benchmarks/graph_ab.py``, README "Against
#:   onnxruntime-genai"). The flavour exists because the standard-op graphs measured slower than
#:   onnxruntime-genai's int4 (issue 16); export a standard flavour for TensorRT.
DECODER_OPS = ("portable", "fused", "onnxruntime")
#: The decoder's KV-cache contracts (``autoglm-trt export --kv-cache``; the first is the default).
#:
#: * ``concat``: ``past_key_values.*`` ``[B, kv_heads, past, head_dim]`` in, ``present.*``
#:   ``[B, kv_heads, past + S, head_dim]`` out: every step writes the whole cache anew (a copy per
#:   step that grows with the context). The standard flavours, every runtime.
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
#: * ``shared``: ``past_key_values.*`` ``[B, kv_heads, T, head_dim]`` (transformers' layout), ``T >= past + S``,
#:   the same rules for free rows as ``inplace``; ``present.*`` is that buffer with the new rows written by
#:   ``GroupQueryAttention`` (past and present share it when bound to one buffer, as ONNX Runtime IO
#:   binding does). The ``onnxruntime`` flavour's cache, and only its.
KV_CACHES = ("concat", "inplace", "shared")
#: The KV-cache contracts each flavour can trace (the first is the flavour's default).
KV_CACHES_OF = {"portable": ("concat",), "fused": ("concat", "inplace"), "onnxruntime": ("shared",)}

#: The vision encoder's graph flavours (``autoglm-trt export --vision-ops``; by default the one the decoder's
#: flavour implies, :func:`default_vision_ops`).
#:
#: * ``portable``: each block's attention over one image's patches as MatMul -> Softmax -> MatMul, the
#:   pattern every TensorRT fuses into one attention kernel. ONNX Runtime's CPU runs it as written and
#:   holds the whole ``heads x N x N`` score matrix: on the real vision tower (12 heads) and a 1080x2400
#:   screenshot (13,416 patches) 8.6 GB a copy, 9.57 GB of peak memory for one attention.
#: * ``onnxruntime``: each block's attention as ``com.microsoft`` ``MultiHeadAttention``, which ONNX
#:   Runtime's CPU kernel runs as flash attention in tiles: 0.66 GB for the same attention, 2.7x faster
#:   (``benchmarks/vision_attention.py``). ONNX Runtime only; float32 and float16 (no bf16 CPU kernel).
#:   The default of ``--decoder-ops onnxruntime`` exports (ONNX Runtime hosts only anyway).
VISION_OPS = ("portable", "onnxruntime")
#: The ``com.microsoft`` op of the ``onnxruntime`` vision flavour.
VISION_CONTRIB_OPS = ("MultiHeadAttention",)

#: The opset-23 ops only the ``fused`` flavour uses (what TensorRT < 10.15 cannot parse in it).
FUSED_ONNX_OPS = ("Attention", "RotaryEmbedding", "RMSNormalization")
#: The ``com.microsoft`` ops of the ``onnxruntime`` flavour (what no TensorRT parses in it).
ONNXRUNTIME_CONTRIB_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization")
#: The lowest opset of each flavour, and the opset an export uses when none is given.
DECODER_OPS_MIN_OPSET = {"portable": 17, "fused": 23, "onnxruntime": 23}
DECODER_OPS_DEFAULT_OPSET = {"portable": 18, "fused": 23, "onnxruntime": 23}

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
_ONNXRUNTIME_GRAPH = {
    "ops": "onnxruntime",
    "attention": "com.microsoft GroupQueryAttention: num_heads/kv_num_heads, the additive causal/padding bias as "
                 "attention_bias, seqlens_k = the last attended row, total_sequence_length = the fed rows; it writes "
                 "the new keys/values into the shared past/present buffer",
    "rms_norm": "com.microsoft SkipSimplifiedLayerNormalization for each residual add + RMSNorm (its sum output is "
                "the residual stream); ONNX RMSNormalization (opset 23) for the others",
    "rotary": _FUSED_GRAPH["rotary"],
    "kv_cache": "shared",
    "kv_cache_update": "inside GroupQueryAttention: the new rows past .. past + S - 1 of past_key_values.* "
                       "[B, kv_heads, T, head_dim] (present.* is that buffer when bound to it, as ONNX Runtime IO "
                       "binding does; otherwise a copy of the rows up to the fed length)",
    "kv_cache_free_rows": True,
    "per_tensorrt_target": "ONNX Runtime >= 1.24 only (com.microsoft contrib ops): no TensorRT target parses it",
}
_GRAPHS = {"portable": _PORTABLE_GRAPH, "fused": _FUSED_GRAPH, "onnxruntime": _ONNXRUNTIME_GRAPH}
_VISION_GRAPHS = {
    "portable": {
        "ops": "portable",
        "attention": "MatMul -> Softmax -> MatMul over one image's patches (the pattern TensorRT fuses into one "
                     "attention kernel; ONNX Runtime's CPU holds the heads x N x N scores)",
        "per_tensorrt_target": "every target",
    },
    "onnxruntime": {
        "ops": "onnxruntime",
        "attention": "com.microsoft MultiHeadAttention over one image's patches ([1, N, heads * head_dim], no mask): "
                     "ONNX Runtime's CPU kernel runs it as flash attention, without the N x N scores in memory",
        "per_tensorrt_target": "ONNX Runtime only (a com.microsoft contrib op): no TensorRT target parses it",
    },
}


#: Flavour x export dtype pairs refused before anything is written, with the measured reason.
_REFUSED_DTYPES = {
    ("fused", "float16"): (
        "an fp16 graph of opset-23 Attention/RotaryEmbedding fails the fp16 validation on ONNX Runtime's CPU "
        "kernels (tiny checkpoint: logits error 2.7x transformers' own fp16 drift, gate 2x; the portable fp16 "
        "graph passes)"),
    **{("onnxruntime", half): "ONNX Runtime's CPU GroupQueryAttention and SkipSimplifiedLayerNormalization are "
                              "float32 kernels (the flavour is for CPU hosts)" for half in ("float16", "bfloat16")},
}


def default_vision_ops(decoder_ops: str) -> str:
    """The vision flavour an export gets unless ``--vision-ops`` says otherwise: the ONNX Runtime one with the
    ONNX Runtime decoder (that export runs on ONNX Runtime only anyway), else the portable one."""
    return "onnxruntime" if decoder_ops == "onnxruntime" else "portable"


def vision_graph(ops: str) -> dict[str, Any]:
    """How the vision encoder graph of flavour ``ops`` spells its attention (export.json's ``vision_graph``)."""
    return dict(_VISION_GRAPHS[ops])


def check_vision_ops(ops: str, dtype: str) -> None:
    """Refuse an unknown vision flavour, or one whose op has no ONNX Runtime CPU kernel in ``dtype`` (ConfigError)."""
    from trt_pipeline.errors import ConfigError

    if ops not in VISION_OPS:
        raise ConfigError(f"--vision-ops must be one of {', '.join(VISION_OPS)}, got {ops!r}.")
    if ops == "onnxruntime" and dtype == "bfloat16":
        raise ConfigError("--vision-ops onnxruntime with --dtype bfloat16: ONNX Runtime's MultiHeadAttention has no "
                          "bfloat16 CPU kernel.",
                          hint="export with --dtype float32 or float16, or with --vision-ops portable")


def check_export_dtype(ops: str, dtype: str) -> None:
    """Refuse a flavour/dtype pair whose graph does not validate (ConfigError saying what to use)."""
    from trt_pipeline.errors import ConfigError

    why = _REFUSED_DTYPES.get((ops, dtype))
    if why is not None:
        hint = ("export fused in float32 (or bfloat16) and make fp16 with `autoglm-trt precision fp16` "
                "(AutoCast keeps Attention in fp32), or export --decoder-ops portable --dtype float16")
        if ops == "onnxruntime":
            hint = ("export with --dtype float32 (and `autoglm-trt precision int4 --activations fp32` for 4-bit "
                    "weights on ONNX Runtime), or pick a standard flavour for half precision")
        raise ConfigError(f"--decoder-ops {ops} with --dtype {dtype}: {why}.", hint=hint)


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
    """Refuse an unknown KV-cache contract or one flavour ``ops`` cannot trace (ConfigError saying what to use)."""
    from trt_pipeline.errors import ConfigError

    if kv_cache not in KV_CACHES:
        raise ConfigError(f"--kv-cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}.")
    why = kv_cache_refusal(ops, kv_cache)
    if why is not None:
        owners = [flavour for flavour, caches in KV_CACHES_OF.items() if kv_cache in caches]
        raise ConfigError(f"--kv-cache {kv_cache} needs --decoder-ops {' or '.join(owners)} (got {ops}): {why}.",
                          hint=f"add --decoder-ops {owners[0]}, or leave --kv-cache out (--decoder-ops {ops} takes "
                               f"--kv-cache {' or '.join(KV_CACHES_OF[ops])})")


def default_kv_cache(ops: str) -> str:
    """The KV-cache contract flavour ``ops`` traces when none is asked for."""
    return KV_CACHES_OF[ops][0]


def kv_cache_refusal(ops: str, kv_cache: str) -> str | None:
    """Why flavour ``ops`` cannot trace the ``kv_cache`` contract (None: it can): the one statement of that rule."""
    if kv_cache in KV_CACHES_OF.get(ops, ()):
        return None
    if kv_cache == "inplace":
        return ("the in-place update feeds opset-23 Attention the sequence-major cache as it is; only the fused "
                "flavour has that op (the portable attention would transpose the whole cache every step)")
    if kv_cache == "shared":
        return "the shared [B, kv_heads, T, head_dim] buffer is written by GroupQueryAttention, an onnxruntime-flavour op"
    return "GroupQueryAttention writes its cache in place: the onnxruntime flavour traces the shared cache only"


#: what to do with an ``onnxruntime``-flavour graph where TensorRT should run it
ONNXRUNTIME_ONLY_HINT = ("re-export with `--decoder-ops fused` (TensorRT >= 10.15) or `--decoder-ops portable` (every "
                         "TensorRT, JetPack 6 included) for TensorRT; the onnxruntime flavour is for ONNX Runtime hosts")


def tensorrt_hint(op_types: Iterable[str]) -> str | None:
    """What to do when a TensorRT cannot parse a decoder graph holding ``op_types`` (None: no flavour's ops in it)."""
    ops = set(op_types)
    vision = sorted(ops & set(VISION_CONTRIB_OPS))
    if vision:
        return (f"this graph uses {', '.join(vision)} (`export --vision-ops onnxruntime`, the default with "
                "`--decoder-ops onnxruntime`: a com.microsoft op, ONNX Runtime only), which no TensorRT parses; "
                "re-export with `--vision-ops portable` and a standard --decoder-ops for TensorRT")
    contrib = sorted(ops & set(ONNXRUNTIME_CONTRIB_OPS))
    if contrib:
        return (f"this graph uses {', '.join(contrib)} (`export --decoder-ops onnxruntime`: com.microsoft ops, ONNX "
                f"Runtime only), which no TensorRT parses; {ONNXRUNTIME_ONLY_HINT}")
    fused = sorted(ops & set(FUSED_ONNX_OPS))
    if fused:
        return (f"this graph uses {', '.join(fused)} (`export --decoder-ops fused`, opset 23), which TensorRT parses "
                "from 10.15 on; re-export with `--decoder-ops portable` (the default) for an older TensorRT, or build "
                "with TensorRT >= 10.15")
    return None


def step_refusal(kv_cache: str, batch: int, new: int, past: int) -> str | None:
    """Why a decoder of the ``kv_cache`` contract cannot take ``batch`` rows of ``new`` tokens onto ``past``
    cached ones in ONE call (None: it can): ONNX Runtime's GroupQueryAttention runs a multi-token call onto a
    filled cache (chunked prefill) for a batch of one only.
    :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper` runs such calls one row at a time."""
    if kv_cache == "shared" and batch > 1 and new > 1 and past > 0:
        return (f"the onnxruntime flavour's GroupQueryAttention takes several new tokens onto a filled cache for a "
                f"batch of one only (got {batch} rows of {new} tokens onto {past})")
    return None


def decoder_graph(ops: str, kv_cache: str = "concat") -> dict[str, Any]:
    """How the decoder graph of flavour ``ops`` spells its hot spots (export.json's ``decoder_graph``)."""
    record = dict(_GRAPHS[ops])
    if kv_cache == "inplace":
        record.update(_INPLACE_CACHE)
    return record


__all__ = ["VISION_OPS", "VISION_CONTRIB_OPS", "default_vision_ops", "vision_graph", "check_vision_ops", "DECODER_OPS", "KV_CACHES", "KV_CACHES_OF", "ONNXRUNTIME_CONTRIB_OPS", "check_export_dtype", "check_kv_cache",
           "default_kv_cache", "kv_cache_refusal", "step_refusal",
           "tensorrt_hint", "ONNXRUNTIME_ONLY_HINT", "FUSED_ONNX_OPS", "DECODER_OPS_DEFAULT_OPSET", "DECODER_OPS_MIN_OPSET", "decoder_graph"]
