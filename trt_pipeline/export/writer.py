"""Writing an export: HF checkpoint -> OUT/ with ONNX components, host tables and export.json.

:func:`trt_pipeline.export.exporter.export` is this plus validation; the twin validation
(:mod:`trt_pipeline.export.twin_validate`) writes its twins with this function directly.

Everything is written into a temporary sibling folder and renamed onto OUT at the end, so a
failure (bad checkpoint, exporter error, disk full, Ctrl-C) never leaves a partial OUT behind.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import (
    FileDigest,
    OutputLayout,
    atomic_output_dir,
    check_output_target,
    sha256_tree,
    tool_versions,
    write_json_atomic,
)
from trt_pipeline.artifacts.layout import external_data_path
from trt_pipeline.artifacts.manifests import EXPORT_FORMAT_VERSION
from trt_pipeline.config import ExportConfig, SimplifyConfig
from trt_pipeline.config.stages import COMPONENTS
from trt_pipeline.errors import DiskSpaceError
from trt_pipeline.export.dims import dims_to_json, export_dims
from trt_pipeline.models.glm4v.assets import check_serving_assets
from trt_pipeline.models.glm4v.config import Glm4vDims, load_dims
from trt_pipeline.progress import log, progress_bar

HF_FILE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
TOOLS = ("torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxsim", "polygraphy")


def copy_hf_files(checkpoint: Path, dest: Path) -> list[str]:
    """Copy config, generation config, tokenizer, chat template and processor config."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for file in sorted(checkpoint.iterdir()):
        if file.is_file() and file.suffix in HF_FILE_SUFFIXES and not file.name.endswith(".index.json"):
            shutil.copy2(file, dest / file.name)
            copied.append(file.name)
    return copied


def estimated_bytes(dims: Glm4vDims, bytes_per_param: int = 4, components: Sequence[str] = COMPONENTS) -> int:
    """Rough size of an export of ``components`` (their weights once + the host embedding table, which every
    export writes) for the disk check: a vision-only export of the 9B needs 6 GB in fp32, not 43."""
    from trt_pipeline.models.glm4v.sizes import parameter_counts

    counts = parameter_counts(dims)
    params = counts["text_embed_tokens"]
    if "vision_encoder" in components:
        params += counts["vision_total"]
    if "decoder" in components:  # the LM head is a graph weight even when the checkpoint ties it to the table
        params += counts["text_layers"] + counts["text_norm"] + (counts["lm_head"] or counts["text_embed_tokens"])
    return int(params * bytes_per_param * 1.05)


def check_disk_space(out: Path, needed: int) -> None:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise DiskSpaceError(
            f"not enough free disk in {parent}: the export needs about {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free.",
            path=parent,
            hint="free some space or pass --out on a larger disk.",
        )


def write_export(
    checkpoint: Path | str, out: Path | str, cfg: ExportConfig = ExportConfig(), show_progress: bool = True,
    *, overwrite: bool = False,
) -> Path:
    """Export the components of a GLM-4.1V checkpoint and simplify them if asked (no validation).

    Returns ``out``. Raises CheckpointError / ConfigError / DiskSpaceError / OutputFolderError
    before writing anything (``out`` may be new, empty, or, with ``overwrite``, an earlier export;
    a folder this tool did not write is never replaced), OnnxModelError if the exporter or checker
    fails.
    """
    from trt_pipeline.export import streaming as streamer
    from trt_pipeline.export.dtypes import precision_folder, resolve_export_dtype
    from trt_pipeline.models.glm4v.decoder_ops import check_export_dtype, check_vision_ops
    from trt_pipeline.models.hub import resolve_checkpoint

    checkpoint, out = resolve_checkpoint(checkpoint), Path(out)  # a folder or a Hub id (via the HF cache)
    check_output_target(out, overwrite=overwrite)
    dims = load_dims(checkpoint)
    warnings = check_serving_assets(checkpoint, allow_missing=cfg.allow_missing_tokenizer)
    for warning in warnings:
        log(f"[yellow]warning:[/] {warning}")
    dtype = resolve_export_dtype(cfg.dtype, checkpoint)
    check_export_dtype(cfg.decoder_ops, dtype)
    check_vision_ops(cfg.vision_ops, dtype)
    precision = precision_folder(dtype)
    ranges, workload = export_dims(cfg, dims, checkpoint)
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    needed = estimated_bytes(dims, itemsize, cfg.components)
    check_disk_space(out, needed)
    log(streamer.describe_needs(checkpoint, needed, cfg.streaming))
    timings: dict[str, float] = {}
    with progress_bar(show_progress) as progress:
        task = progress.add_task("export", total=len(cfg.components) + 3)
        progress.update(task, description="loading checkpoint")
        start = time.perf_counter()
        streaming = streamer.use_streaming(cfg.streaming, checkpoint)
        model, entries = _load(checkpoint, dims, dtype, streaming)
        model.decoder.use_graph(cfg.decoder_ops, cfg.kv_cache)
        model.visual.use_ops(cfg.vision_ops)
        timings["load"] = time.perf_counter() - start
        progress.advance(task)
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            layout = OutputLayout(tmp)
            progress.update(task, description="host tables + hf files")
            copy_hf_files(checkpoint, layout.hf_dir)
            _save_tables(model, layout, entries)
            progress.advance(task)
            onnx_dir = layout.onnx_dir(precision)
            components = _export_components(model, dims, dtype, precision, layout, cfg, entries if streaming else None,
                                            progress, task, timings)
            del model  # the weights must not stay alive through onnxsim (+1 checkpoint of RSS)
            if cfg.simplify and not streaming:  # streaming: simplified weight-free before the weights went in
                progress.update(task, description="simplifying")
                start = time.perf_counter()
                _simplify(onnx_dir, components, precision)
                timings["simplify"] = time.perf_counter() - start
            progress.advance(task)
            for name, entry in components.items():
                _record_digests(entry, onnx_dir / entry["file"])
            write_json_atomic(layout.precision_manifest(precision), {
                "precision": precision,
                "dtype": dtype,
                "stage": "export",
                "components": components,
                "tool_versions": tool_versions(*TOOLS),
            })
            manifest = _export_manifest(checkpoint, dims, cfg, dtype, precision, streaming, ranges, workload,
                                        layout, components, timings, warnings)
            write_json_atomic(layout.export_manifest, manifest)
    log(f"exported {', '.join(cfg.components)} to {out}")
    return out



def _export_components(
    model: Any, dims: Glm4vDims, dtype: str, precision: str, layout: OutputLayout, cfg: ExportConfig,
    entries: dict[str, Any] | None, progress: Any, task: Any, timings: dict[str, float],
) -> dict[str, Any]:
    """Trace each requested component to ``onnx/<precision>/``; returns their manifest entries."""
    from trt_pipeline.export.examples import DECODER_FIRST_PAST, decoder_example, vision_example
    from trt_pipeline.models.glm4v.io_spec import DECODER, VISION, component_spec

    components: dict[str, Any] = {}
    examples = {VISION: (vision_example, None), DECODER: (decoder_example, DECODER_FIRST_PAST)}
    modules = {VISION: model.vision_encoder, DECODER: model.decoder}
    for name in cfg.components:
        progress.update(task, description=f"exporting {name}")
        start = time.perf_counter()
        spec = component_spec(dims, name, dtype, cfg.kv_cache)
        make_example, variadic = examples[name]
        facts = _export_one(modules[name], spec, make_example(model), layout.onnx_path(precision, name),
                            cfg, variadic, entries)
        timings[name] = time.perf_counter() - start
        components[name] = {**facts, **spec.to_dict()}
        progress.advance(task)
    return components


def _export_manifest(
    checkpoint: Path, dims: Glm4vDims, cfg: ExportConfig, dtype: str, precision: str, streaming: bool,
    ranges: Any, workload: Any, layout: OutputLayout, components: dict[str, Any], timings: dict[str, float],
    warnings: list[str],
) -> dict[str, Any]:
    """The content of export.json (read back by :mod:`trt_pipeline.artifacts.manifests`)."""
    onnx_dir = layout.onnx_dir(precision)
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "model_type": "glm4v",
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_tree(checkpoint), "dims": dims.to_dict()},
        "opset": cfg.opset,
        "dtype": dtype,
        "precision": precision,
        "streamed": streaming,
        "config": cfg.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": tool_versions(*TOOLS),
        "dims": dims_to_json(ranges, dims.vision.spatial_merge_size),
        "workload": workload.to_json(),
        "components": {name: {**entry, "file": layout.rel(onnx_dir / entry["file"])} for name, entry in components.items()},
        "files": {layout.rel(p): FileDigest.of(p).to_json() for p in (layout.embed_tokens, layout.vision_pos_embed)},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "warnings": warnings,
        **_graph_record(onnx_dir, components, cfg),
    }


def _graph_record(onnx_dir: Path, components: dict[str, Any], cfg: ExportConfig) -> dict[str, Any]:
    """How the decoder and vision graphs are spelled and which TensorRT targets' parsers take every op of every graph."""
    from trt_pipeline.engine.onnx_ops import parse_report
    from trt_pipeline.models.glm4v.decoder_ops import decoder_graph, vision_graph

    record: dict[str, Any] = {"tensorrt_parse": parse_report({n: onnx_dir / e["file"] for n, e in components.items()})}
    if "decoder" in components:
        record["decoder_graph"] = decoder_graph(cfg.decoder_ops, cfg.kv_cache)
    if "vision_encoder" in components:
        record["vision_graph"] = vision_graph(cfg.vision_ops)
    return record


def _load(checkpoint: Path, dims: Glm4vDims, dtype: str, streaming: bool) -> tuple[Any, dict[str, Any] | None]:
    """(model, checkpoint entries): streaming -> a meta-device model and the checked tensor headers
    (weights are read later, one at a time; export/streaming.py); else the weights in memory."""
    import torch

    from trt_pipeline.export import streaming as streamer
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    if not streaming:
        return Glm4vExportModel.from_pretrained(checkpoint, dtype=dtype), None
    model = streamer.meta_model(dims, getattr(torch, dtype))
    return model, streamer.checked_entries(checkpoint, model)


def _export_one(module: Any, spec: Any, example: Any, path: Path, cfg: ExportConfig, variadic: int | None,
                entries: dict[str, Any] | None) -> dict[str, Any]:
    """One component: streamed from ``entries`` when given, else from the in-memory module."""
    if entries is not None:
        from trt_pipeline.export.streaming import export_component_streaming

        return export_component_streaming(module, spec, example, path, cfg.opset, variadic, entries,
                                          next(module.parameters()).dtype)
    from trt_pipeline.export.onnx_export import export_component

    return export_component(module, spec, example, path, cfg.opset, cfg.external_data, variadic_from=variadic)


def _simplify(onnx_dir: Path, components: dict[str, Any], precision: str) -> None:
    """onnxsim, verified on ONNX Runtime; skipped for bf16 (ORT CPU has no bf16 kernels to verify with)."""
    if precision == "bf16":
        log("simplify skipped for bf16: ONNX Runtime CPU cannot run the graph to verify it")
        for entry in components.values():
            entry["simplify"] = {"skipped": "bf16: ONNX Runtime CPU has no bf16 kernels to verify with"}
        return
    from trt_pipeline.graph.simplify import simplify_folder

    for name, report in simplify_folder(onnx_dir, SimplifyConfig(), show_progress=False).items():
        components[name]["simplify"] = report


def _record_digests(entry: dict[str, Any], path: Path) -> None:
    """sha256 and size of a component's ONNX file and external weights (checked before every load)."""
    digest = FileDigest.of(path)
    entry["sha256"], entry["size"] = digest.sha256, digest.size
    if entry.get("external_data"):
        data = FileDigest.of(external_data_path(path))
        entry["external_data_sha256"], entry["external_data_size"] = data.sha256, data.size


def _save_tables(model: Any, layout: OutputLayout, entries: dict[str, Any] | None = None) -> None:
    """Host-side tables: token embeddings (lookup + image merge) and the vision position table."""
    if entries is not None:  # streaming: copied tensor by tensor from the checkpoint
        from trt_pipeline.export.streaming import save_tables_streaming

        return save_tables_streaming(entries, layout.embeddings_dir, model.dtype)
    from safetensors.torch import save_file

    layout.embeddings_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": model.embed_table.contiguous()}, str(layout.embed_tokens))
    save_file({"weight": model.vision_position_table.contiguous()}, str(layout.vision_pos_embed))


__all__ = ["copy_hf_files", "write_export"]
