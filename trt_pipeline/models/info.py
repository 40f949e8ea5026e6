"""What a GLM-4.1V checkpoint folder holds: dims, parameter counts, sizes, KV-cache cost.

Reads ``config.json`` as plain JSON and the safetensors *headers* only (8-byte little-endian
header length + JSON), so it is instant even on a 20 GB checkpoint and works on config-only
checkpoints. Parameter counts are computed analytically from the config, mirroring
``transformers.models.glm4v.modeling_glm4v`` module by module, and compared with the tensors
actually stored when there are weights.

Engine size estimates are weights only (no TensorRT workspace or tactic overhead) and follow the
artifact contract (docs/artifacts.md): the token embedding table and the vision position table
are host-side lookups, not engine weights.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.errors import CheckpointError

EXPECTED_MODEL_TYPE = "glm4v"

# transformers' Glm4vTextConfig / Glm4vVisionConfig defaults (used when config.json omits a key)
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151552,
    "hidden_size": 4096,
    "intermediate_size": 13696,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
}
_VISION_DEFAULTS: dict[str, Any] = {
    "depth": 24,
    "hidden_size": 1536,
    "num_heads": 12,
    "in_channels": 3,
    "image_size": 336,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 4096,
    "intermediate_size": 13696,
    "attention_bias": False,
    "rms_norm_eps": 1e-5,
}
_TOKEN_FIELDS = (
    "image_token_id",
    "video_token_id",
    "image_start_token_id",
    "image_end_token_id",
    "video_start_token_id",
    "video_end_token_id",
)
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}

# safetensors tensor-name prefix -> component (transformers 5 layout, then the pre-4.52 layout)
_COMPONENT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.language_model.embed_tokens.", "text_embed_tokens"),
    ("model.language_model.layers.", "text_layers"),
    ("model.language_model.norm.", "text_norm"),
    ("model.embed_tokens.", "text_embed_tokens"),
    ("model.layers.", "text_layers"),
    ("model.norm.", "text_norm"),
    ("lm_head.", "lm_head"),
    ("model.visual.", "vision"),
)


# --- config parsing ----------------------------------------------------------------------------


def _as_int_size(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


def text_dims(config: Mapping[str, Any]) -> dict[str, Any]:
    """Text decoder dims from a ``Glm4vConfig`` dict (``config.json`` or ``config.to_dict()``)."""
    raw = dict(config.get("text_config") or {})
    dims = {k: raw.get(k, v) for k, v in _TEXT_DEFAULTS.items()}
    if raw.get("num_key_value_heads") is None:
        dims["num_key_value_heads"] = dims["num_attention_heads"]
    rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    head_dim = dims["hidden_size"] // dims["num_attention_heads"]  # Glm4vTextAttention ignores head_dim
    dims.update(
        head_dim=head_dim,
        rotary_dim=int(head_dim * partial),
        partial_rotary_factor=partial,
        rope_theta=theta,
        mrope_section=list(rope.get("mrope_section", [8, 12, 12])),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", raw.get("tie_word_embeddings", False))),
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
    )
    return dims


def vision_dims(config: Mapping[str, Any]) -> dict[str, Any]:
    """Vision tower dims from a ``Glm4vConfig`` dict."""
    raw = dict(config.get("vision_config") or {})
    dims = {k: raw.get(k, v) for k, v in _VISION_DEFAULTS.items()}
    for key in ("image_size", "patch_size", "temporal_patch_size"):
        dims[key] = _as_int_size(dims[key])
    dims["head_dim"] = dims["hidden_size"] // dims["num_heads"]
    dims["position_table_side"] = dims["image_size"] // dims["patch_size"]
    dims["patch_dim"] = dims["in_channels"] * dims["temporal_patch_size"] * dims["patch_size"] ** 2
    return dims


# --- analytic parameter counts -----------------------------------------------------------------


def _text_layer_parameters(t: Mapping[str, Any]) -> dict[str, int]:
    h, heads, kv, f = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["intermediate_size"]
    hd = h // heads
    q, k = heads * hd, kv * hd
    linear = h * q + 2 * h * k + q * h + h * 2 * f + f * h  # q k v o, gate_up, down
    bias = q + 2 * k  # q/k/v bias
    norms = 4 * h  # input, post_self_attn, post_attention, post_mlp
    return {"linear_weights": linear, "other": bias + norms, "total": linear + bias + norms}


def _vision_parameters(v: Mapping[str, Any]) -> dict[str, int]:
    d, o, i = v["hidden_size"], v["out_hidden_size"], v["intermediate_size"]
    m = v["spatial_merge_size"]
    patch_embed = v["patch_dim"] * d + d  # Conv3d + bias
    position_embedding = v["position_table_side"] ** 2 * d
    block_linear = d * 3 * d + d * d + 3 * d * o  # qkv, proj, mlp (gate/up/down through out_hidden_size)
    block_other = 2 * d + (3 * d if v["attention_bias"] else 0)
    blocks_linear = v["depth"] * block_linear
    blocks = v["depth"] * (block_linear + block_other)
    downsample = d * o * m * m + o  # Conv2d + bias
    merger_linear = o * o + 2 * o * i + i * o  # proj, gate, up, down
    merger = merger_linear + 2 * o  # + LayerNorm weight/bias
    norms = 2 * d  # post_conv_layernorm, post_layernorm
    total = patch_embed + position_embedding + blocks + downsample + merger + norms
    return {
        "patch_embed": patch_embed,
        "position_embedding": position_embedding,
        "blocks": blocks,
        "downsample": downsample,
        "merger": merger,
        "norms": norms,
        "linear_weights": blocks_linear + merger_linear,
        "total": total,
    }


def count_parameters_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter counts per component, from a ``Glm4vConfig`` dict, without building the model.

    Returns a dict with ``text_embed_tokens``, ``text_layers``, ``text_layer`` (one layer),
    ``text_norm``, ``lm_head``, ``text_total``, ``vision`` (breakdown), ``vision_total``,
    ``linear_weights`` (what weight-only INT8 quantizes) and ``total`` (= stored tensor elements).
    """
    t, v = text_dims(config), vision_dims(config)
    layer = _text_layer_parameters(t)
    embed = t["vocab_size"] * t["hidden_size"]
    lm_head = 0 if t["tie_word_embeddings"] else t["vocab_size"] * t["hidden_size"]
    layers = t["num_hidden_layers"] * layer["total"]
    norm = t["hidden_size"]
    vision = _vision_parameters(v)
    text_total = embed + layers + norm + lm_head
    linear = t["num_hidden_layers"] * layer["linear_weights"] + t["vocab_size"] * t["hidden_size"] + vision["linear_weights"]
    return {
        "text_embed_tokens": embed,
        "text_layers": layers,
        "text_layer": layer["total"],
        "text_norm": norm,
        "lm_head": lm_head,
        "text_total": text_total,
        "vision": vision,
        "vision_total": vision["total"],
        "linear_weights": linear,
        "total": text_total + vision["total"],
    }


# --- safetensors headers -----------------------------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one ``.safetensors`` file (tensor name -> dtype, shape, data_offsets)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (shorter than 8 bytes)", path=path)
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8 or length > 100 * 1024 * 1024:
                raise CheckpointError(
                    f"{path} has a corrupt safetensors header (declared length {length}, file size {size})",
                    path=path,
                )
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read safetensors header of {path}: {error}", path=path) from None
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        end = entry["data_offsets"][1]
        if end > data_size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {end}, data section has {data_size}",
                path=path,
                hint="re-download or re-create the checkpoint",
            )
    return header


def weight_files(folder: Path) -> list[Path]:
    """Safetensors files of a checkpoint (from the index when there is one)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"{index} is not a valid safetensors index: {error}", path=index) from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(
                f"{index} lists shards that are missing: {', '.join(f.name for f in missing)}", path=index
            )
        return files
    return sorted(folder.glob("*.safetensors"))


def _component(name: str) -> str:
    for prefix, component in _COMPONENT_PREFIXES:
        if name.startswith(prefix):
            return component
    return "other"


def scan_weights(folder: Path) -> dict[str, Any] | None:
    """Tensor counts from the safetensors headers, or ``None`` when there are no weights."""
    files = weight_files(folder)
    if not files:
        return None
    elements_by_component: dict[str, int] = {}
    bytes_by_dtype: dict[str, int] = {}
    elements_by_dtype: dict[str, int] = {}
    num_tensors = 0
    total = 0
    for file in files:
        for name, entry in read_safetensors_header(file).items():
            if name == "__metadata__":
                continue
            n = math.prod(entry["shape"])
            nbytes = entry["data_offsets"][1] - entry["data_offsets"][0]
            dtype = entry["dtype"]
            num_tensors += 1
            total += n
            elements_by_component[_component(name)] = elements_by_component.get(_component(name), 0) + n
            bytes_by_dtype[dtype] = bytes_by_dtype.get(dtype, 0) + nbytes
            elements_by_dtype[dtype] = elements_by_dtype.get(dtype, 0) + n
    return {
        "files": [f.name for f in files],
        "file_bytes": sum(f.stat().st_size for f in files),
        "num_tensors": num_tensors,
        "total_elements": total,
        "elements_by_component": elements_by_component,
        "elements_by_dtype": elements_by_dtype,
        "bytes_by_dtype": bytes_by_dtype,
        "weight_bytes": sum(bytes_by_dtype.values()),
    }


# --- the report --------------------------------------------------------------------------------


@dataclass
class CheckpointInfo:
    """Summary of a GLM-4.1V checkpoint folder. ``to_dict()`` is JSON-serialisable."""

    path: str
    model_type: str
    architectures: list[str]
    dtype: str | None
    text: dict[str, Any]
    vision: dict[str, Any]
    token_ids: dict[str, Any]
    image_processor: dict[str, Any] | None
    tokenizer: dict[str, Any] | None
    parameters: dict[str, Any]
    has_weights: bool
    weights: dict[str, Any] | None
    weight_bytes: int
    weight_bytes_estimated: bool
    parameters_match_weights: bool | None
    engine_estimates: dict[str, Any]
    kv_cache: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def total_parameters(self) -> int:
        return int(self.parameters["total"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _engine_estimates(params: Mapping[str, Any], t: Mapping[str, Any], v: Mapping[str, Any]) -> dict[str, Any]:
    """FP16 and weight-only INT8 engine weight bytes, per engine, per the artifact contract."""
    vision = params["vision"]
    h, vocab = t["hidden_size"], t["vocab_size"]
    layer_linear = _text_layer_parameters(t)["linear_weights"] * t["num_hidden_layers"]
    lm_head = vocab * h  # the decoder engine always computes logits, tied or not
    decoder_params = params["text_layers"] + params["text_norm"] + lm_head
    decoder_linear = layer_linear + lm_head
    vision_params = vision["total"] - vision["position_embedding"]
    vision_linear = vision["linear_weights"]
    # output channels of the quantized linears: one fp16 scale each (per-channel weight-only INT8)
    hd = h // t["num_attention_heads"]
    per_layer_out = t["num_attention_heads"] * hd + 2 * t["num_key_value_heads"] * hd + h + 2 * t["intermediate_size"] + h
    decoder_scales = t["num_hidden_layers"] * per_layer_out + vocab
    d, o, i = v["hidden_size"], v["out_hidden_size"], v["intermediate_size"]
    vision_scales = v["depth"] * (3 * d + d + 2 * o + d) + (o + 2 * i + o)

    def int8(total: int, linear: int, scales: int) -> int:
        return linear + 2 * (total - linear) + 2 * scales

    host = {
        "embed_tokens_elements": vocab * h,
        "vision_position_embedding_elements": vision["position_embedding"],
    }
    host["fp16_bytes"] = 2 * (host["embed_tokens_elements"] + host["vision_position_embedding_elements"])
    engines = {
        "decoder": {
            "parameters": decoder_params,
            "fp16_bytes": 2 * decoder_params,
            "int8_weight_only_bytes": int8(decoder_params, decoder_linear, decoder_scales),
        },
        "vision_encoder": {
            "parameters": vision_params,
            "fp16_bytes": 2 * vision_params,
            "int8_weight_only_bytes": int8(vision_params, vision_linear, vision_scales),
        },
    }
    return {
        **engines,
        "host_tables": host,
        "total_fp16_bytes": sum(e["fp16_bytes"] for e in engines.values()),
        "total_int8_weight_only_bytes": sum(e["int8_weight_only_bytes"] for e in engines.values()),
        "note": "weights only; embed_tokens and the vision position table stay on the host",
    }


def _kv_cache(t: Mapping[str, Any]) -> dict[str, Any]:
    per_token = 2 * t["num_hidden_layers"] * t["num_key_value_heads"] * t["head_dim"] * 2  # K+V, fp16
    context = int(t["max_position_embeddings"])
    return {
        "bytes_per_token_fp16": per_token,
        "max_context": context,
        "bytes_max_context_fp16": per_token * context,
    }


def _tokenizer_summary(folder: Path, token_ids: Mapping[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        warnings.append(f"{path} is not valid JSON: {error}")
        return None
    added = {tok["content"]: tok["id"] for tok in data.get("added_tokens", [])}
    vocab = data.get("model", {}).get("vocab", {})
    size = max([*vocab.values(), *added.values(), -1]) + 1
    checks = {
        "image_token_id": "<|image|>",
        "video_token_id": "<|video|>",
        "image_start_token_id": "<|begin_of_image|>",
        "image_end_token_id": "<|end_of_image|>",
        "video_start_token_id": "<|begin_of_video|>",
        "video_end_token_id": "<|end_of_video|>",
    }
    for field_name, token in checks.items():
        if token in added and token_ids.get(field_name) is not None and added[token] != token_ids[field_name]:
            warnings.append(f"config {field_name}={token_ids[field_name]} but tokenizer has {token}={added[token]}")
    return {
        "vocab_size": size,
        "special_tokens": {k: v for k, v in added.items() if k.startswith(("<", "["))},
        "chat_template": (folder / "chat_template.jinja").is_file(),
    }


def _image_processor_summary(folder: Path, v: Mapping[str, Any]) -> dict[str, Any] | None:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}", path=path) from None
    size = data.get("size") or {}
    patch = int(data.get("patch_size", v["patch_size"]))
    temporal = int(data.get("temporal_patch_size", v["temporal_patch_size"]))
    merge = int(data.get("merge_size", v["spatial_merge_size"]))
    max_pixels = size.get("longest_edge", data.get("max_pixels"))
    summary = {
        "image_processor_type": data.get("image_processor_type"),
        "min_pixels": size.get("shortest_edge", data.get("min_pixels")),
        "max_pixels": max_pixels,
        "patch_size": patch,
        "temporal_patch_size": temporal,
        "merge_size": merge,
    }
    if max_pixels:
        patches = int(max_pixels) // (temporal * patch * patch)
        summary["max_image_patches"] = patches
        summary["max_image_tokens"] = patches // (merge * merge)
    return summary


def load_config_json(path: Path | str) -> tuple[Path, dict[str, Any]]:
    """``config.json`` of a GLM-4.1V checkpoint folder, checked for existence and model_type.

    Shares the checks of :func:`trt_pipeline.models.glm4v.config.read_config_json`.
    """
    from trt_pipeline.models.glm4v.config import read_config_json

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"checkpoint path {folder} is not a folder", path=folder)
    config_path, config = read_config_json(folder)
    model_type = config.get("model_type")
    if model_type != EXPECTED_MODEL_TYPE:
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r} found, expected {EXPECTED_MODEL_TYPE!r} "
            "(Glm4vForConditionalGeneration: GLM-4.1V / AutoGLM-Phone-9B)",
            path=config_path,
            hint="this pipeline only converts GLM-4.1V checkpoints",
        )
    return folder, config


def checkpoint_info(path: Path | str) -> CheckpointInfo:
    """Inspect a GLM-4.1V checkpoint folder (with or without weights).

    Raises:
        CheckpointError: missing folder or config.json, invalid JSON, a model_type other than
            ``glm4v``, or corrupt/truncated safetensors headers.
    """
    folder, config = load_config_json(path)
    t, v = text_dims(config), vision_dims(config)
    params = count_parameters_from_config(config)
    warnings: list[str] = []
    token_ids = {k: config.get(k) for k in _TOKEN_FIELDS}
    token_ids["eos_token_id"] = t.pop("eos_token_id")
    token_ids["pad_token_id"] = t.pop("pad_token_id")
    generation = folder / "generation_config.json"
    if generation.is_file():
        try:
            gen = json.loads(generation.read_text(encoding="utf-8"))
            token_ids["generation_eos_token_id"] = gen.get("eos_token_id")
        except ValueError:
            warnings.append(f"{generation} is not valid JSON")

    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    weights = scan_weights(folder)
    match: bool | None = None
    if weights is not None:
        weight_bytes = weights["weight_bytes"]
        estimated = False
        match = weights["total_elements"] == params["total"]
        if not match:
            warnings.append(
                f"stored tensors hold {weights['total_elements']:,} elements, the config implies {params['total']:,}"
            )
        expected_components = {
            "text_embed_tokens": params["text_embed_tokens"],
            "text_layers": params["text_layers"],
            "text_norm": params["text_norm"],
            "lm_head": params["lm_head"],
            "vision": params["vision_total"],
        }
        for component, expected in expected_components.items():
            actual = weights["elements_by_component"].get(component, 0)
            if actual != expected:
                warnings.append(f"{component}: {actual:,} stored elements, config implies {expected:,}")
    else:
        weight_bytes = params["total"] * _DTYPE_BYTES.get(str(dtype), 2)
        estimated = True

    return CheckpointInfo(
        path=str(folder),
        model_type=config["model_type"],
        architectures=list(config.get("architectures") or []),
        dtype=dtype,
        text=t,
        vision=v,
        token_ids=token_ids,
        image_processor=_image_processor_summary(folder, v),
        tokenizer=_tokenizer_summary(folder, token_ids, warnings),
        parameters=params,
        has_weights=weights is not None,
        weights=weights,
        weight_bytes=int(weight_bytes),
        weight_bytes_estimated=estimated,
        parameters_match_weights=match,
        engine_estimates=_engine_estimates(params, t, v),
        kv_cache=_kv_cache(t),
        warnings=warnings,
    )


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"  # pragma: no cover


def format_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


__all__ = [
    "CheckpointInfo",
    "checkpoint_info",
    "count_parameters_from_config",
    "format_bytes",
    "format_count",
    "load_config_json",
    "read_safetensors_header",
    "scan_weights",
    "text_dims",
    "vision_dims",
    "weight_files",
]
