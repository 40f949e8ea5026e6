"""Symbolic axis ranges of an export (min/opt/max), derived from options and the checkpoint.

These ranges are recorded in export.json, checked against ``max_position_embeddings`` and the
image-processor limits, used for the validation grid, and later turned into TensorRT
optimization profiles.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trt_pipeline.config import DimRange, ExportConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.export.workloads import (
    ResolvedWorkload,
    default_workload,
    get_workload,
    image_token_bounds,
    processor_longest_edge,
    resolve_workload,
)
from trt_pipeline.models.glm4v.config import Glm4vDims

def derived_exprs(spatial_merge_size: int) -> dict[str, str]:
    """Symbolic dims that are sums/quotients of others (TensorRT profiles must stay consistent).

    The expressions only name other dims and integer literals (``merge^2`` is written out as its
    value), so :func:`trt_pipeline.engine.profiles.eval_dim_expr` can evaluate every one of them.
    """
    return {
        "total_sequence_length": "past_sequence_length + sequence_length",
        "num_image_tokens": f"num_patches / {spatial_merge_size**2}",
    }


def processor_pixel_limits(checkpoint: Path) -> tuple[int, int | None]:
    """(shortest_edge, longest_edge) of the checkpoint's image processor (``t * h * w`` pixels)."""
    path = checkpoint / "preprocessor_config.json"
    if not path.is_file():
        return 112 * 112, None
    config = json.loads(path.read_text(encoding="utf-8"))
    size = config.get("size") or {}
    shortest = size.get("shortest_edge") or config.get("min_pixels") or 112 * 112
    longest = size.get("longest_edge") or config.get("max_pixels")
    return int(shortest), (int(longest) if longest else None)


def resolve_export_workload(cfg: ExportConfig, dims: Glm4vDims, checkpoint: Path) -> ResolvedWorkload:
    """The workload's dims with the export flags applied, and where each number came from."""
    workload = get_workload(cfg.workload) if cfg.workload else default_workload(dims.text.hidden_size)
    v = dims.vision
    shortest, longest = processor_pixel_limits(checkpoint)
    source = f"processor {checkpoint / 'preprocessor_config.json'}"
    max_pixels = cfg.max_pixels or workload.max_pixels
    if max_pixels is not None:
        longest = processor_longest_edge(max_pixels, v.temporal_patch_size)
        source = f"{'flag --max-pixels' if cfg.max_pixels else f'workload {workload.name} max_pixels'} {max_pixels}"
    if longest is None:
        longest = 1024 * (v.patch_size * v.spatial_merge_size) ** 2 * v.temporal_patch_size
        source = "default 1024 image tokens (no preprocessor_config.json)"
    bounds = image_token_bounds(shortest, longest, v.temporal_patch_size, v.spatial_merge_size, v.patch_size)
    overrides = {name: getattr(cfg, name) for name in ("max_batch", "max_seq", "max_kv", "min_image_tokens", "max_image_tokens")}
    resolved = resolve_workload(workload, image_tokens=bounds, image_tokens_source=source, overrides=overrides)
    return dataclasses.replace(resolved, max_pixels=max_pixels)


def export_dims(cfg: ExportConfig, dims: Glm4vDims, checkpoint: Path) -> tuple[dict[str, DimRange], ResolvedWorkload]:
    """min/opt/max for every symbolic axis, and the workload they came from.

    Refuses ranges the model cannot serve (beyond ``max_position_embeddings``, or an image
    larger than the whole context).
    """
    resolved = resolve_export_workload(cfg, dims, checkpoint)
    (_, _, batch), (_, seq_opt, seq), (_, past_opt, past), tokens = (
        resolved.dims[name] for name in ("batch_size", "sequence_length", "past_sequence_length", "num_image_tokens")
    )
    max_pos = dims.text.max_position_embeddings
    if seq + past > max_pos:
        raise ConfigError(
            f"sequence_length {seq} ({resolved.sources['sequence_length']}) + past_sequence_length {past} "
            f"({resolved.sources['past_sequence_length']}) = {seq + past} exceeds the model's "
            f"max_position_embeddings {max_pos} ({checkpoint / 'config.json'}).",
            path=checkpoint / "config.json",
            hint=f"pass --max-seq/--max-kv whose sum is <= {max_pos}, or another --workload.",
        )
    if tokens[2] > seq + past:
        raise ConfigError(
            f"image tokens up to {tokens[2]} ({resolved.sources['num_image_tokens']}) do not fit in a context of "
            f"{seq + past} tokens (--max-seq {seq} + --max-kv {past}).",
            path=checkpoint / "preprocessor_config.json",
            hint="raise --max-kv, or pass a smaller --max-pixels / --max-image-tokens.",
        )
    merge2 = dims.vision.spatial_merge_size**2
    ranges = {
        "batch_size": DimRange(1, 1, batch),
        "sequence_length": DimRange(1, seq_opt, seq),
        "past_sequence_length": DimRange(0, past_opt, past),
        "total_sequence_length": DimRange(1, seq_opt + past_opt, seq + past),
        "num_image_tokens": DimRange(*tokens),
        # positions the LM head runs on: usually the last one, every position for validation
        "num_logits": DimRange(1, 1, seq),
    }
    ranges["num_patches"] = DimRange(tokens[0] * merge2, tokens[1] * merge2, tokens[2] * merge2)
    return ranges, resolved


def dims_to_json(ranges: dict[str, DimRange], spatial_merge_size: int) -> dict[str, dict]:
    """The ``dims`` section of export.json (read back by :mod:`trt_pipeline.artifacts.manifests`)."""
    derived = derived_exprs(spatial_merge_size)
    out = {}
    for name, r in ranges.items():
        entry: dict[str, object] = {"min": r.min, "opt": r.opt, "max": r.max}
        if name in derived:
            entry["expr"] = derived[name]
        out[name] = entry
    return out
