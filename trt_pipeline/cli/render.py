"""Every rich table and human-readable summary the CLI prints.

Library calls return data (``CheckpointInfo``, ``InspectReport``, ``PipelineSummary``, ``BenchReport``,
precision manifests); turning it into tables for a terminal is the CLI's job alone, so no library
module imports ``rich``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trt_pipeline.models.info import format_bytes, format_count


def _table(title: str, columns: tuple[str, ...], **kwargs: Any) -> Table:
    table = Table(title=title, **kwargs)
    for column in columns:
        table.add_column(column)
    return table


# --- info ------------------------------------------------------------------------------------------
def _model_rows(info: Any) -> list[tuple[str, str]]:
    t, v, p = info.text, info.vision, info.parameters
    return [
        ("architecture", f"{', '.join(info.architectures) or '?'} (model_type {info.model_type})"),
        ("dtype", str(info.dtype)),
        ("text decoder",
         f"hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, {t['num_attention_heads']} heads / "
         f"{t['num_key_value_heads']} KV, head_dim {t['head_dim']}, FFN {t['intermediate_size']}, "
         f"vocab {t['vocab_size']}"),
        ("rope",
         f"theta {t['rope_theta']}, rotary dim {t['rotary_dim']} (partial {t['partial_rotary_factor']}), "
         f"mrope_section {t['mrope_section']}, max positions {t['max_position_embeddings']}"),
        ("vision tower",
         f"depth {v['depth']}, hidden {v['hidden_size']}, {v['num_heads']} heads, patch {v['patch_size']}, "
         f"temporal {v['temporal_patch_size']}, merge {v['spatial_merge_size']}, out {v['out_hidden_size']}, "
         f"position table {v['position_table_side']}x{v['position_table_side']}"),
        ("parameters",
         f"{format_count(p['total'])} total = text {format_count(p['text_total'])} "
         f"(embed {format_count(p['text_embed_tokens'])}, layers {format_count(p['text_layers'])}, "
         f"lm_head {format_count(p['lm_head'])}) + vision {format_count(p['vision_total'])}"),
    ]


def _size_rows(info: Any) -> list[tuple[str, str]]:
    rows = []
    if info.weights is not None:
        w = info.weights
        check = "matches config" if info.parameters_match_weights else "DOES NOT match config"
        rows.append(("weights",
                     f"{len(w['files'])} file(s), {w['num_tensors']} tensors, {w['total_elements']:,} elements ({check}); "
                     + ", ".join(f"{k} {format_bytes(b)}" for k, b in sorted(w["bytes_by_dtype"].items()))))
    else:
        rows.append(("weights", f"none (config only); {format_bytes(info.weight_bytes)} estimated as {info.dtype}"))
    e = info.engine_estimates
    rows.append((
        "engine weights (est.)",
        f"FP16 {format_bytes(e['total_fp16_bytes'])}, INT8 weight-only {format_bytes(e['total_int8_weight_only_bytes'])} "
        f"(decoder {format_bytes(e['decoder']['fp16_bytes'])} / {format_bytes(e['decoder']['int8_weight_only_bytes'])}, "
        f"vision {format_bytes(e['vision_encoder']['fp16_bytes'])} / {format_bytes(e['vision_encoder']['int8_weight_only_bytes'])}); "
        f"host tables {format_bytes(e['host_tables']['fp16_bytes'])}",
    ))
    kv = info.kv_cache
    rows.append(("KV cache (fp16)", f"{format_bytes(kv['bytes_per_token_fp16'])} per token, "
                                    f"{format_bytes(kv['bytes_max_context_fp16'])} at {kv['max_context']} tokens"))
    return rows


def _processing_rows(info: Any) -> list[tuple[str, str]]:
    rows = []
    if info.image_processor:
        ip = info.image_processor
        rows.append(("image processor", f"min_pixels {ip['min_pixels']}, max_pixels {ip['max_pixels']} -> up to "
                                        f"{ip.get('max_image_patches')} patches / {ip.get('max_image_tokens')} image tokens"))
    if info.tokenizer:
        tok, ids = info.tokenizer, info.token_ids
        rows.append(("tokenizer", f"vocab {tok['vocab_size']}, <|image|> {ids.get('image_token_id')}, "
                                  f"eos {ids.get('eos_token_id')}, chat template {'yes' if tok['chat_template'] else 'no'}"))
    rows += [("[yellow]warning[/yellow]", warning) for warning in info.warnings]
    return rows


def checkpoint_table(info: Any) -> Table:
    """``autoglm-trt info``: one row per fact of a ``CheckpointInfo``."""
    table = Table(title=f"{info.path}", show_header=True, header_style="bold")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for key, value in _model_rows(info) + _size_rows(info) + _processing_rows(info):
        table.add_row(key, value)
    return table


def checkpoint_summary(path: Path, preset: str, info: Any) -> str:
    """One line for ``autoglm-trt init-checkpoint``."""
    weights = (f"{len(info.weights['files'])} safetensors file(s), {format_bytes(info.weight_bytes)}"
               if info.weights else "no weights (config only)")
    return f"wrote {path}: preset {preset}, {format_count(info.total_parameters)} parameters, {info.dtype}, {weights}"


# --- inspect ---------------------------------------------------------------------------------------
def print_engine_report(engine: Path, report: Any, summary: list[tuple[str, str]], max_layers: int) -> None:
    """``autoglm-trt inspect``: manifest, warnings, profiles and (with TensorRT) I/O and layers."""
    console = Console()
    table = Table(title=str(engine), show_header=False)
    for label, value in summary:
        table.add_row(label, value)
    console.print(table)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    profiles = _table("optimization profiles (manifest)", ("profile", "input", "min", "opt", "max"))
    for profile in report.manifest.profiles:
        for name, rng in profile.shapes.items():
            profiles.add_row(profile.name, name, *("x".join(map(str, s)) for s in (rng.min, rng.opt, rng.max)))
    console.print(profiles)
    if report.io is not None:
        io = _table("I/O tensors (engine)", ("name", "mode", "dtype", "shape"))
        for item in report.io:
            io.add_row(item["name"], item["mode"], item["dtype"], "x".join(map(str, item["shape"])))
        console.print(io)
    if report.layers is not None:
        shown = report.layers if max_layers <= 0 else report.layers[:max_layers]
        layers = _table(f"layers ({len(shown)} of {len(report.layers)})", ("#", "name", "type", "output format/dtype", "tactic"))
        for index, layer in enumerate(shown):
            layers.add_row(str(index), layer.name, layer.type or "", layer.precision or "", layer.tactic or "")
        console.print(layers)


# --- precision -------------------------------------------------------------------------------------
def _names(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def precision_lines(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """``autoglm-trt precision``: per component, what was kept in fp32, quantized or excluded."""
    lines = []
    for name, entry in manifest["components"].items():
        kept, excluded = entry.get("nodes_kept_fp32"), entry.get("nodes_excluded")
        details = []
        if kept is not None:
            details.append(f"{len(kept)} node(s) kept in fp32" + (f": {_names(kept)}" if kept else ""))
        if entry.get("nodes_quantized") is not None:
            details.append(f"{len(entry['nodes_quantized'])} node(s) quantized, {len(excluded or {})} excluded"
                           + (f": {', '.join(list(excluded)[:8])}" if excluded else ""))
        if entry.get("int4"):
            details.append(_int4_details(entry["int4"]))
        lines.append(f"{name} [{entry['precision']}]: " + "; ".join(details))
    search = manifest.get("search")
    if search:
        kept = search["kept_high_precision"]
        lines.append(f"search: {len(kept)}/{len(search['order'])} decoder node group(s) kept in high precision "
                     f"({', '.join(kept) or 'none'}): teacher-forced agreement {search['teacher_forced_agreement']:.4f} "
                     f">= {search['target_token_agreement']:g}; chart {search['chart']}")
    lines.append(f"written to {folder} (manifest.json, accuracy.json)")
    return lines


def _int4_details(int4: dict[str, Any]) -> str:
    """Method actually used (and why AWQ fell back), block size, activations, weight bytes."""
    auto = " (auto)" if str(int4.get("block_size_source", "")).startswith("auto") else ""
    text = (f"{int4['method_used']} ({int4['modelopt_method']}), block {int4['block_size']}{auto}, "
            f"{int4['activations']} activations, opset {int4['opset_from']} -> {int4['opset']}, "
            f"weights {int4['weight_bytes']['total'] / 1e6:.2f} MB")
    if int4.get("fallback_reason"):
        text += f"; fell back from {int4['method']} to rtn: {int4['fallback_reason']}"
    return text


def precision_json(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``autoglm-trt precision --json``: the folder, its accuracy and each component's file and hash."""
    keep = ("file", "precision", "sha256")
    return {"folder": str(folder), "accuracy": manifest.get("accuracy"),
            "components": {c: {k: v for k, v in e.items() if k in keep} for c, e in manifest["components"].items()}}


# --- pipeline / bench ------------------------------------------------------------------------------
def print_pipeline_summary(summary: Any) -> None:
    """``autoglm-trt pipeline``: one row per stage (on stderr; stdout keeps the report path)."""
    table = _table(f"pipeline {summary.out}", ("stage", "status", "seconds", "why"))
    for result in summary.results:
        reason = result.reason if len(result.reason) <= 90 else result.reason[:87] + "..."
        table.add_row(result.name, result.status, f"{result.seconds:.1f}" if result.seconds else "", reason)
    Console(stderr=True).print(table)


def print_bench_table(folder: Path, report: Any) -> None:
    """``autoglm-trt bench``: latency percentiles, throughput and peak RSS per backend and phase."""
    table = _table(f"bench {folder} ({report.config['threads']} threads, {report.bandwidth['best_gbps']} GB/s)",
                   ("backend", "phase", "tokens", "p50 ms", "p90 ms", "p99 ms", "tokens/s", "peak RSS MB"))
    for name, entry in report.backends.items():
        if entry.get("status") != "ok":  # already reported as a "skipped: bench NAME (...)" line
            continue
        for phase, key in (("prefill", "length"), ("decode", "context")):
            for row in entry[phase]:
                table.add_row(name, phase, str(row[key]), f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}",
                              f"{row['p99_ms']:.2f}", f"{row['tokens_per_s']}", f"{entry['peak_rss_bytes'] / 1e6:.0f}")
    Console().print(table)


# --- bundle verify --run --------------------------------------------------------------------------
def replay_table(checks: Any) -> Table:
    """One row per replayed call of an ONNX Runtime bundle: its outputs' worst cosine / error, the arg-max token."""
    table = _table("reference calls replayed", ("call", "graph", "outputs", "lowest cosine", "max abs error",
                                                "arg-max token", "result"))
    calls: dict[int, list[Any]] = {}
    for check in checks:
        calls.setdefault(check.call, []).append(check)
    for call, outputs in calls.items():
        worst = min(outputs, key=lambda c: c.cosine if c.cosine == c.cosine else float("-inf"))  # NaN first
        argmax = [c.argmax_equal for c in outputs if c.argmax_equal is not None]
        failed = [c.output for c in outputs if not c.passed]
        table.add_row(str(call), outputs[0].component, str(len(outputs)), f"{worst.cosine:.6f} ({worst.output})",
                      f"{max(c.max_abs_error for c in outputs):.3g}",
                      "" if not argmax else ("same" if all(argmax) else "differs"),
                      "pass" if not failed else "FAIL: " + ", ".join(failed[:3]) + (" ..." if len(failed) > 3 else ""))
    return table
