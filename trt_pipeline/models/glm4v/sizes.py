"""Analytic sizes of a GLM-4.1V model from its dims: parameter counts, engine weights, KV cache.

The one place that knows how many parameters each module of
``transformers.models.glm4v.modeling_glm4v`` holds, so ``info``, the export's disk check and the
checkpoint factory's RAM check agree. Counts equal the stored tensor elements exactly (tested
against a meta-device ``Glm4vForConditionalGeneration`` of the real 9B config), and need neither
torch nor the weights, so they work on config-only checkpoints.

Engine estimates are weights only (no TensorRT workspace or tactic overhead) and follow the
artifact contract (docs/artifacts.md): the token embedding table and the vision position table
are host-side lookups, not engine weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trt_pipeline.models.glm4v.config import Glm4vDims, TextDims, VisionDims, dims_from_dict


def text_layer_parameters(t: TextDims) -> dict[str, int]:
    """One decoder layer: ``linear_weights`` (what weight-only INT8 quantizes), ``other``, ``total``."""
    h, hd, f = t.hidden_size, t.head_dim, t.intermediate_size
    q, k = t.num_attention_heads * hd, t.num_key_value_heads * hd
    linear = h * q + 2 * h * k + q * h + h * 2 * f + f * h  # q k v o, gate_up, down
    bias = q + 2 * k  # q/k/v bias
    norms = 4 * h  # input, post_self_attn, post_attention, post_mlp
    return {"linear_weights": linear, "other": bias + norms, "total": linear + bias + norms}


def vision_parameters(v: VisionDims) -> dict[str, int]:
    """The vision tower by part, plus ``linear_weights`` and ``total``."""
    d, o, i, m = v.hidden_size, v.out_hidden_size, v.intermediate_size, v.spatial_merge_size
    patch_embed = v.patch_dim * d + d  # Conv3d + bias
    position_embedding = v.position_grid**2 * d
    block_linear = d * 3 * d + d * d + 3 * d * o  # qkv, proj, mlp (gate/up/down through out_hidden_size)
    block_other = 2 * d + (3 * d if v.attention_bias else 0)
    blocks = v.depth * (block_linear + block_other)
    downsample = d * o * m * m + o  # Conv2d + bias
    merger_linear = o * o + 2 * o * i + i * o  # proj, gate, up, down
    merger = merger_linear + 2 * o  # + LayerNorm weight/bias
    norms = 2 * d  # post_conv_layernorm, post_layernorm
    return {
        "patch_embed": patch_embed,
        "position_embedding": position_embedding,
        "blocks": blocks,
        "downsample": downsample,
        "merger": merger,
        "norms": norms,
        "linear_weights": v.depth * block_linear + merger_linear,
        "total": patch_embed + position_embedding + blocks + downsample + merger + norms,
    }


def parameter_counts(dims: Glm4vDims) -> dict[str, Any]:
    """Parameter counts per component, without building the model.

    Keys: ``text_embed_tokens``, ``text_layers``, ``text_layer`` (one layer), ``text_norm``,
    ``lm_head``, ``text_total``, ``vision`` (breakdown), ``vision_total``, ``linear_weights``
    (what weight-only INT8 quantizes) and ``total`` (= stored tensor elements).
    """
    t = dims.text
    layer = text_layer_parameters(t)
    embed = t.vocab_size * t.hidden_size
    lm_head = 0 if dims.tie_word_embeddings else embed
    layers = t.num_hidden_layers * layer["total"]
    vision = vision_parameters(dims.vision)
    text_total = embed + layers + t.hidden_size + lm_head
    return {
        "text_embed_tokens": embed,
        "text_layers": layers,
        "text_layer": layer["total"],
        "text_norm": t.hidden_size,
        "lm_head": lm_head,
        "text_total": text_total,
        "vision": vision,
        "vision_total": vision["total"],
        "linear_weights": t.num_hidden_layers * layer["linear_weights"] + embed + vision["linear_weights"],
        "total": text_total + vision["total"],
    }


def count_parameters_from_config(config: Mapping[str, Any], path: Path | str = "config.json") -> dict[str, Any]:
    """:func:`parameter_counts` of a ``Glm4vConfig`` dict (``config.json`` or ``config.to_dict()``).

    The dict goes through the same checks as a checkpoint's config.json (``path`` names it in errors).
    """
    return parameter_counts(dims_from_dict(dict(config), Path(path)))


def _int8_weight_only_bytes(total: int, linear: int, scales: int) -> int:
    """INT8 linear weights, fp16 everything else, one fp16 scale per output channel."""
    return linear + 2 * (total - linear) + 2 * scales


def engine_estimates(dims: Glm4vDims, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """FP16 and weight-only INT8 engine weight bytes, per engine, per the artifact contract."""
    t, v = dims.text, dims.vision
    params = params if params is not None else parameter_counts(dims)
    vision = params["vision"]
    lm_head = t.vocab_size * t.hidden_size  # the decoder engine always computes logits, tied or not
    decoder_params = params["text_layers"] + params["text_norm"] + lm_head
    decoder_linear = text_layer_parameters(t)["linear_weights"] * t.num_hidden_layers + lm_head
    vision_params = vision["total"] - vision["position_embedding"]
    # output channels of the quantized linears: one fp16 scale each (per-channel weight-only INT8)
    hd = t.head_dim
    per_layer_out = t.num_attention_heads * hd + 2 * t.num_key_value_heads * hd + 2 * t.hidden_size + 2 * t.intermediate_size
    decoder_scales = t.num_hidden_layers * per_layer_out + t.vocab_size
    d, o, i = v.hidden_size, v.out_hidden_size, v.intermediate_size
    vision_scales = v.depth * (3 * d + d + 2 * o + d) + (o + 2 * i + o)
    host = {"embed_tokens_elements": lm_head, "vision_position_embedding_elements": vision["position_embedding"]}
    host["fp16_bytes"] = 2 * (host["embed_tokens_elements"] + host["vision_position_embedding_elements"])
    engines = {
        "decoder": {
            "parameters": decoder_params,
            "fp16_bytes": 2 * decoder_params,
            "int8_weight_only_bytes": _int8_weight_only_bytes(decoder_params, decoder_linear, decoder_scales),
        },
        "vision_encoder": {
            "parameters": vision_params,
            "fp16_bytes": 2 * vision_params,
            "int8_weight_only_bytes": _int8_weight_only_bytes(vision_params, vision["linear_weights"], vision_scales),
        },
    }
    return {
        **engines,
        "host_tables": host,
        "total_fp16_bytes": sum(e["fp16_bytes"] for e in engines.values()),
        "total_int8_weight_only_bytes": sum(e["int8_weight_only_bytes"] for e in engines.values()),
        "note": "weights only; embed_tokens and the vision position table stay on the host",
    }


def kv_cache(t: TextDims) -> dict[str, int]:
    """fp16 K+V bytes per token and at the model's longest context."""
    per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * 2
    return {
        "bytes_per_token_fp16": per_token,
        "max_context": t.max_position_embeddings,
        "bytes_max_context_fp16": per_token * t.max_position_embeddings,
    }


__all__ = [
    "count_parameters_from_config",
    "engine_estimates",
    "kv_cache",
    "parameter_counts",
    "text_layer_parameters",
    "vision_parameters",
]
