"""What a GLM-4.1V checkpoint folder holds: dims, parameter counts, sizes, KV-cache cost.

This module only assembles the report of ``autoglm-trt info``; the facts come from the model
package, the same code the exporter uses, so ``info`` and ``export`` accept and refuse the same
checkpoints: :func:`~trt_pipeline.models.glm4v.config.load_dims` (the one config.json parser),
:mod:`~trt_pipeline.models.glm4v.weights` (safetensors headers via ``safe_open``, never tensor
data, so it is instant on a 20 GB checkpoint and works on config-only checkpoints) and
:mod:`~trt_pipeline.models.glm4v.sizes` (analytic parameter counts, engine and KV-cache sizes),
whose counts are compared with the tensors actually stored when there are weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.errors import CheckpointError
from trt_pipeline.units import format_bytes
from trt_pipeline.models.glm4v.config import SPECIAL_TOKEN_FIELDS, Glm4vDims, VisionDims, load_dims
from trt_pipeline.models.glm4v.sizes import engine_estimates, kv_cache, parameter_counts
from trt_pipeline.models.glm4v.weights import find_weight_files, scan_files

#: config.json token-id field -> the special token it must name in tokenizer.json
TOKEN_FIELDS = SPECIAL_TOKEN_FIELDS
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def text_summary(dims: Glm4vDims) -> dict[str, Any]:
    """Text decoder dims as a JSON-ready dict (with the derived head and rotary dims)."""
    t = dims.text
    return {**asdict(t), "mrope_section": list(t.mrope_section), "head_dim": t.head_dim,
            "rotary_dim": t.rotary_dim, "tie_word_embeddings": dims.tie_word_embeddings}


def vision_summary(dims: Glm4vDims) -> dict[str, Any]:
    """Vision tower dims as a JSON-ready dict (with head dim, patch length, position table side)."""
    v = dims.vision
    return {**asdict(v), "head_dim": v.head_dim, "patch_dim": v.patch_dim, "position_table_side": v.position_grid}


def scan_weights(folder: Path) -> dict[str, Any] | None:
    """Tensor counts from the safetensors headers, or ``None`` when there are no weights."""
    files = find_weight_files(folder)
    if not files:
        return None
    elements_by_component: dict[str, int] = {}
    bytes_by_dtype: dict[str, int] = {}
    elements_by_dtype: dict[str, int] = {}
    entries = scan_files(files)
    for entry in entries.values():
        n, dtype = entry.numel, entry.dtype
        elements_by_component[entry.component] = elements_by_component.get(entry.component, 0) + n
        bytes_by_dtype[dtype] = bytes_by_dtype.get(dtype, 0) + entry.nbytes
        elements_by_dtype[dtype] = elements_by_dtype.get(dtype, 0) + n
    return {
        "files": [f.name for f in files],
        "file_bytes": sum(f.stat().st_size for f in files),
        "num_tensors": len(entries),
        "total_elements": sum(elements_by_dtype.values()),
        "elements_by_component": elements_by_component,
        "elements_by_dtype": elements_by_dtype,
        "bytes_by_dtype": bytes_by_dtype,
        "weight_bytes": sum(bytes_by_dtype.values()),
    }


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
    for field_name, token in TOKEN_FIELDS.items():
        if token in added and token_ids.get(field_name) is not None and added[token] != token_ids[field_name]:
            warnings.append(f"config {field_name}={token_ids[field_name]} but tokenizer has {token}={added[token]}")
    return {
        "vocab_size": size,
        "special_tokens": {k: v for k, v in added.items() if k.startswith(("<", "["))},
        "chat_template": (folder / "chat_template.jinja").is_file(),
    }


def _image_processor_summary(folder: Path, v: VisionDims) -> dict[str, Any] | None:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}", path=path) from None
    size = data.get("size") or {}
    patch = int(data.get("patch_size", v.patch_size))
    temporal = int(data.get("temporal_patch_size", v.temporal_patch_size))
    merge = int(data.get("merge_size", v.spatial_merge_size))
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


def _token_ids(folder: Path, dims: Glm4vDims, warnings: list[str]) -> dict[str, Any]:
    """Special-token ids as config.json states them (``None`` when absent), plus generation eos."""
    text = dims.raw.get("text_config") or {}
    token_ids: dict[str, Any] = {k: dims.raw.get(k) for k in TOKEN_FIELDS}
    token_ids["eos_token_id"] = text.get("eos_token_id")
    token_ids["pad_token_id"] = text.get("pad_token_id")
    generation = folder / "generation_config.json"
    if generation.is_file():
        try:
            token_ids["generation_eos_token_id"] = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        except (ValueError, AttributeError):
            warnings.append(f"{generation} is not valid JSON")
    return token_ids


def _check_stored(weights: Mapping[str, Any], params: Mapping[str, Any], warnings: list[str]) -> bool:
    """Whether the stored tensors hold what the config implies; a warning per disagreeing part."""
    match = weights["total_elements"] == params["total"]
    if not match:
        warnings.append(f"stored tensors hold {weights['total_elements']:,} elements, the config implies {params['total']:,}")
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
    return match


def checkpoint_info(path: Path | str) -> CheckpointInfo:
    """Inspect a GLM-4.1V checkpoint folder (with or without weights).

    Raises:
        CheckpointError: missing folder or config.json, invalid JSON, a model_type other than
            ``glm4v``, missing keys, wrong value types or non-positive sizes in config.json,
            pickle-only weights, or corrupt/truncated safetensors files.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"checkpoint path {folder} is not a folder", path=folder)
    dims = load_dims(folder)
    params = parameter_counts(dims)
    warnings: list[str] = []
    token_ids = _token_ids(folder, dims, warnings)
    weights = scan_weights(folder)
    match = None if weights is None else _check_stored(weights, params, warnings)
    if weights is not None:
        weight_bytes, estimated = weights["weight_bytes"], False
    else:
        weight_bytes, estimated = params["total"] * _DTYPE_BYTES.get(str(dims.torch_dtype), 2), True
    return CheckpointInfo(
        path=str(folder),
        model_type=str(dims.raw["model_type"]),
        architectures=list(dims.raw.get("architectures") or []),
        dtype=dims.torch_dtype,
        text=text_summary(dims),
        vision=vision_summary(dims),
        token_ids=token_ids,
        image_processor=_image_processor_summary(folder, dims.vision),
        tokenizer=_tokenizer_summary(folder, token_ids, warnings),
        parameters=params,
        has_weights=weights is not None,
        weights=weights,
        weight_bytes=int(weight_bytes),
        weight_bytes_estimated=estimated,
        parameters_match_weights=match,
        engine_estimates=engine_estimates(dims, params),
        kv_cache=kv_cache(dims.text),
        warnings=warnings,
    )




def format_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


__all__ = [
    "CheckpointInfo",
    "checkpoint_info",
    "format_bytes",
    "format_count",
    "scan_weights",
    "text_summary",
    "vision_summary",
]
