"""Symbolic axis ranges of an export (min/opt/max), derived from options and the checkpoint.

These ranges are recorded in export.json, checked against ``max_position_embeddings`` and the
image-processor limits, used for the validation grid, and later turned into TensorRT
optimization profiles.
"""

from __future__ import annotations

import json
from pathlib import Path

from trt_pipeline.config import DimRange, ExportConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.models.glm4v.config import Glm4vDims

# Symbolic dims that are sums/quotients of others (TensorRT profiles must stay consistent).
DERIVED = {
    "total_sequence_length": "past_sequence_length + sequence_length",
    "num_image_tokens": "num_patches / merge^2",
}


def processor_max_patches(checkpoint: Path, dims: Glm4vDims) -> int | None:
    """Largest patch count the checkpoint's image processor can produce for one image."""
    path = checkpoint / "preprocessor_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    size = config.get("size") or {}
    longest = size.get("longest_edge") or config.get("max_pixels")
    if not longest:
        return None
    v = dims.vision
    return int(longest) // (v.temporal_patch_size * v.patch_size * v.patch_size)


def export_dims(cfg: ExportConfig, dims: Glm4vDims, checkpoint: Path) -> dict[str, DimRange]:
    """min/opt/max for every symbolic axis; refuses ranges the model cannot serve."""
    max_pos = dims.text.max_position_embeddings
    if cfg.max_seq + cfg.max_kv > max_pos:
        raise ConfigError(
            f"--max-seq {cfg.max_seq} + --max-kv {cfg.max_kv} = {cfg.max_seq + cfg.max_kv} exceeds the model's "
            f"max_position_embeddings {max_pos} ({checkpoint / 'config.json'}).",
            path=checkpoint / "config.json",
            hint=f"lower --max-seq/--max-kv so that their sum is <= {max_pos}.",
        )
    merge2 = dims.vision.spatial_merge_size**2
    max_tokens = cfg.max_image_tokens
    if max_tokens is None:
        max_patches = processor_max_patches(checkpoint, dims)
        max_tokens = max(cfg.min_image_tokens, (max_patches or 1024 * merge2) // merge2)
    if max_tokens > cfg.max_seq:
        max_tokens_note = f"image tokens ({max_tokens}) exceed --max-seq {cfg.max_seq}"
        raise ConfigError(
            f"{max_tokens_note}: a prompt carrying the largest image would not fit in one prefill.",
            path=checkpoint / "preprocessor_config.json",
            hint="raise --max-seq or pass a smaller --max-image-tokens.",
        )
    ranges = {
        "batch_size": DimRange(1, 1, cfg.max_batch),
        "sequence_length": DimRange(1, min(128, cfg.max_seq), cfg.max_seq),
        "past_sequence_length": DimRange(0, cfg.max_kv // 2, cfg.max_kv),
        "total_sequence_length": DimRange(1, min(128, cfg.max_seq) + cfg.max_kv // 2, cfg.max_seq + cfg.max_kv),
        "num_image_tokens": DimRange(cfg.min_image_tokens, (cfg.min_image_tokens + max_tokens) // 2, max_tokens),
        # positions the LM head runs on: usually the last one, every position for validation
        "num_logits": DimRange(1, 1, cfg.max_seq),
    }
    tokens = ranges["num_image_tokens"]
    ranges["num_patches"] = DimRange(tokens.min * merge2, tokens.opt * merge2, tokens.max * merge2)
    return ranges


def dims_to_json(ranges: dict[str, DimRange]) -> dict[str, dict]:
    out = {}
    for name, r in ranges.items():
        entry = {"min": r.min, "opt": r.opt, "max": r.max}
        if name in DERIVED:
            entry["expr"] = DERIVED[name]
        out[name] = entry
    return out


def dims_from_json(data: dict[str, dict]) -> dict[str, DimRange]:
    return {name: DimRange(v["min"], v["opt"], v["max"]) for name, v in data.items()}
