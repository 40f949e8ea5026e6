"""ONNX Runtime's ``com.microsoft`` ops of the ``onnxruntime`` decoder flavour: traced as those nodes, run eagerly as their math.

The ``onnxruntime`` flavour (:data:`~trt_pipeline.models.glm4v.decoder_ops.DECODER_OPS`) spells its
attention and residual norms the way onnxruntime-genai's graphs do, so ONNX Runtime runs one kernel
where the standard-op graphs dispatch three to five nodes. Under ``torch.onnx.export`` each function
here becomes one ``torch.onnx.ops.symbolic_multi_out`` node of that op; outside an export it
computes the same numbers with torch ops, so the module stays a reference the export is validated
against (and a test that runs both catches a wrong input order or attribute).

No TensorRT parses these ops: an export of this flavour is for ONNX Runtime hosts only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The contrib domain and the version of its ops used here.
MS_DOMAIN = "com.microsoft"
MS_VERSION = 1


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _on(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device``: the traced op's stand-in outputs are made on the CPU, while the weight-free
    trace (``export --streaming``) runs on the meta device. A trace on the CPU moves nothing."""
    return tuple(t if t.device == device else t.to(device) for t in tensors)


def skip_rms_norm(x: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rms_norm(x + skip) * weight, x + skip)``: ``SkipSimplifiedLayerNormalization`` (its outputs 0 and 3).

    The residual add and the RMSNorm after it in one node; the sum output is the residual stream
    the layer carries on with. float32 only (the flavour's dtype).
    """
    if _exporting():
        stats = (*x.shape[:-1], 1)
        normed, _, _, total = torch.onnx.ops.symbolic_multi_out(
            f"{MS_DOMAIN}::SkipSimplifiedLayerNormalization", [x, skip, weight], {"epsilon": float(eps)},
            dtypes=[x.dtype, torch.float32, torch.float32, x.dtype], shapes=[x.shape, stats, stats, x.shape],
            version=MS_VERSION)
        return _on(x.device, normed, total)  # type: ignore[return-value]
    total = x + skip
    return F.rms_norm(total, (total.shape[-1],), weight, eps), total


def group_query_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, past_key: torch.Tensor, past_value: torch.Tensor,
    bias: torch.Tensor, seqlens_k: torch.Tensor, total_length: torch.Tensor, *, num_heads: int, kv_num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``GroupQueryAttention`` over a shared ``[B, kv, T, D]`` cache -> (output ``[B, S, heads * D]``, present key, value).

    ``query`` ``[B, S, heads * D]`` and ``key``/``value`` ``[B, S, kv * D]`` are the new tokens' (rotary
    applied); they are written at rows ``seqlens_k - S + 1 .. seqlens_k`` of the cache (``seqlens_k``
    int32 ``[B]``: the last attended row, the same for every row of a left-padded batch), and each
    query attends the rows up to its own position, plus ``bias`` ``[B, 1, S, T]`` (the causal and
    padding bias the other flavours use; ``T`` = ``total_length``, an int32 scalar: the fed rows).
    ONNX Runtime writes into the fed buffer when ``present`` is bound to it (past/present share
    one buffer) and reads no row after ``seqlens_k``: free rows cost nothing.
    """
    if _exporting():
        out, present_key, present_value = torch.onnx.ops.symbolic_multi_out(
            f"{MS_DOMAIN}::GroupQueryAttention",
            [query, key, value, past_key, past_value, seqlens_k, total_length, None, None, None, bias],
            {"num_heads": num_heads, "kv_num_heads": kv_num_heads, "scale": float(scale)},
            dtypes=[query.dtype, past_key.dtype, past_value.dtype], shapes=[query.shape, past_key.shape, past_value.shape],
            version=MS_VERSION)
        return _on(query.device, out, present_key, present_value)  # type: ignore[return-value]
    from torch.onnx import ops

    batch, length = query.shape[0], query.shape[1]
    head_dim = past_key.shape[-1]
    start = seqlens_k.long()[0] - length + 1
    index = (torch.arange(length, device=query.device) + start).view(1, 1, length, 1)
    index = index.expand(batch, kv_num_heads, length, head_dim)

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, S, kv * D] -> [B, kv, S, D]
        return x.view(batch, length, kv_num_heads, head_dim).transpose(1, 2)

    present_key = past_key.scatter(2, index, heads(key))
    present_value = past_value.scatter(2, index, heads(value))
    out = ops.attention(query.view(batch, length, num_heads, head_dim).transpose(1, 2), present_key, present_value,
                        bias, q_num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale)[0]
    return out.transpose(1, 2).reshape(batch, length, num_heads * head_dim), present_key, present_value


def multi_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, num_heads: int,
                         scale: float) -> torch.Tensor:
    """``MultiHeadAttention`` without mask or cache: ``[B, N, heads * D]`` query/key/value -> ``[B, N, heads * D]``.

    The vision encoder's full attention over one image's patches. ONNX Runtime's CPU kernel runs it
    as flash attention, in tiles, where the standard MatMul -> Softmax -> MatMul (and opset 23's
    ``Attention``, as ONNX Runtime 1.24 runs it) holds the whole ``heads x N x N`` score matrix:
    9.57 GB against 0.66 GB of peak memory for one attention of the real vision tower on a 1080x2400
    screenshot (13,416 patches), and 2.7x faster (``benchmarks/vision_attention.py``).
    """
    if _exporting():
        out = torch.onnx.ops.symbolic(f"{MS_DOMAIN}::MultiHeadAttention", [query, key, value],
                                      {"num_heads": num_heads, "scale": float(scale)},
                                      dtype=query.dtype, shape=query.shape, version=MS_VERSION)
        return _on(query.device, out)[0]
    batch, length, _ = query.shape

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, N, H * D] -> [B, H, N, D]
        return x.view(batch, length, num_heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), scale=scale)
    return out.transpose(1, 2).reshape(batch, length, -1)


__all__ = ["MS_DOMAIN", "MS_VERSION", "group_query_attention", "multi_head_attention", "skip_rms_norm"]
