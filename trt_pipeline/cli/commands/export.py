"""``export``, ``simplify``, ``validate`` and ``generate``: ONNX out of a checkpoint, and checks of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.cli.options import (
    AsJson,
    CheckpointDir,
    Components,
    ExportDir,
    InterOpThreads,
    IoBinding,
    MaxNewTokens,
    OnnxPrecision,
    OrtExecutionMode,
    Overwrite,
    ReferenceCheckpoint,
    Threads,
    Verify,
    split_list,
)


def export_command(
    checkpoint: CheckpointDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")] = Path("engines/export"),
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset [default: 18 for portable, 23 for fused / onnxruntime decoder ops].")] = None,
    decoder_ops: Annotated[str, typer.Option("--decoder-ops", help=(
        "portable: ops every TensorRT parses (JetPack 6's 10.3 too). fused: opset-23 Attention/RotaryEmbedding/"
        "RMSNormalization, faster on ONNX Runtime (Android, CPU) and parsed by TensorRT >= 10.15 / 11, not 10.3. "
        "onnxruntime: ONNX Runtime only (com.microsoft GroupQueryAttention / SkipSimplifiedLayerNormalization, "
        "as onnxruntime-genai's graphs), the fastest on CPUs; no TensorRT parses it."))] = "portable",
    kv_cache: Annotated[Optional[str], typer.Option("--kv-cache", help=(
        "concat: each step returns the whole KV cache anew. inplace (with --decoder-ops fused): the cache is "
        "updated in place (ScatterElements), so ONNX Runtime writes only the new rows and holds one cache, not two. "
        "shared (with --decoder-ops onnxruntime): GroupQueryAttention writes the new rows into the bound buffer "
        "[default: concat; shared for onnxruntime]."))] = None,
    vision_ops: Annotated[Optional[str], typer.Option("--vision-ops", help=(
        "portable: the vision encoder's attention as MatMul/Softmax/MatMul, which TensorRT fuses; ONNX Runtime's "
        "CPU then holds every heads x patches x patches score (9.57 GB for one attention of the real vision tower "
        "on a 1080x2400 screenshot). onnxruntime: com.microsoft MultiHeadAttention, flash attention on ONNX "
        "Runtime's CPU (0.66 GB, 2.7x faster); ONNX Runtime only [default: onnxruntime with --decoder-ops "
        "onnxruntime, else portable]."))] = None,
    components: Components = "vision_encoder,decoder",
    workload: Annotated[Optional[str], typer.Option("--workload", help=(
        "Request shapes the export is made for: phone-agent | tiny [default: phone-agent for real-width "
        "checkpoints, tiny otherwise]. The flags below override single numbers."))] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", help="Largest batch_size [default: the workload's].")] = None,
    max_seq: Annotated[Optional[int], typer.Option("--max-seq", help=(
        "Largest sequence_length: tokens per decoder call; longer prompts are prefilled in chunks [default: the workload's].")
    )] = None,
    max_kv: Annotated[Optional[int], typer.Option("--max-kv", help="Largest past_sequence_length (KV-cache tokens) [default: the workload's].")] = None,
    min_image_tokens: Annotated[Optional[int], typer.Option("--min-image-tokens", help="Smallest image-token count [default: the workload's].")] = None,
    max_image_tokens: Annotated[Optional[int], typer.Option(
        "--max-image-tokens", help="Largest image-token count [default: from the pixel limit].")] = None,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help=(
        "Largest image in pixels (height x width) [default: the workload's, else preprocessor_config.json]."))] = None,
    external_data: Annotated[Optional[bool], typer.Option(
        "--external-data/--no-external-data", help="Force weights into .onnx.data files [default: automatic above 2 GB].")] = None,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim (verified on ONNX Runtime).")] = True,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Compare with transformers on the dim grid.")] = True,
    allow_missing_tokenizer: Annotated[bool, typer.Option("--allow-missing-tokenizer", help="Export a checkpoint that lacks its tokenizer, chat template or image processor config (a warning in export.json).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (the checkpoint's dtype) | bfloat16 | float16 | float32.")] = "auto",
    streaming: Annotated[Optional[bool], typer.Option("--streaming/--in-memory", help=(
        "Trace weight-free and stream the weights into external data [default: above 2 GiB of weights]."))] = None,
    overwrite: Overwrite = False,
) -> None:
    """Export the vision encoder and decoder to ONNX with dynamic axes, simplify and validate them."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(
        opset=opset, decoder_ops=decoder_ops, kv_cache=kv_cache, vision_ops=vision_ops, components=split_list(components), workload=workload, max_batch=max_batch, max_seq=max_seq,
        max_kv=max_kv, min_image_tokens=min_image_tokens, max_image_tokens=max_image_tokens, max_pixels=max_pixels, external_data=external_data,
        simplify=simplify, validate=validate, allow_missing_tokenizer=allow_missing_tokenizer, dtype=dtype,
        streaming=streaming,
    )
    export(checkpoint, out, cfg, overwrite=overwrite)
    typer.echo(f"export written to {out}")


def simplify_command(
    folder: Annotated[Path, typer.Argument(help="Export folder (OUT) or a precision folder holding *.onnx.")],
    precision: OnnxPrecision = "fp32",
) -> None:
    """Simplify ONNX models with onnxsim, keeping dynamic axes; verified equal on ONNX Runtime."""
    from trt_pipeline.graph.simplify import simplify_folder

    target = folder / "onnx" / precision if (folder / "onnx").is_dir() else folder
    for name, report in simplify_folder(target).items():
        if "skipped" in report:
            typer.echo(f"{name}: skipped ({report['skipped']})")
        else:
            typer.echo(f"{name}: {report['nodes_before']} -> {report['nodes_after']} nodes, "
                       f"max abs diff {report['max_abs_diff']:.3g}")


def validate_command(
    folder: ExportDir,
    checkpoint: ReferenceCheckpoint = None,
    precision: Annotated[Optional[str], typer.Option(help="Which OUT/onnx/PRECISION to check [default: the export's own].")] = None,
    atol_logits: Annotated[float, typer.Option("--atol-logits")] = 1e-4,
    atol_vision: Annotated[float, typer.Option("--atol-vision")] = 1e-5,
    verify: Verify = True,
    twin: Annotated[Optional[bool], typer.Option("--twin/--full", help=(
        "Validate a 2-layer twin of the model plus a layer-by-layer structure and hash check of the export "
        "(--twin), or the whole export (--full) [default: twin when the whole would not fit in memory]."))] = None,
) -> None:
    """ONNX Runtime (CPU) vs transformers over every dynamic axis (min / interior / max), or on the twin."""
    from trt_pipeline.export.twin_validate import validate_export

    mode = None if twin is None else ("twin" if twin else "full")
    report = validate_export(folder, checkpoint, precision=precision, mode=mode, atol_logits=atol_logits,
                             atol_vision=atol_vision, verify=verify)
    typer.echo(f"validation passed ({report.mode}): {len(report.results)} checks, report in {folder / 'reports'}")


def generate_command(
    src: Annotated[Path, typer.Argument(help="Export folder, or a checkpoint folder for --backend torch.")],
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="Instruction text; repeat for a batch.")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", "-i", help="Image for the (first) prompt; repeatable.")] = None,
    conversation: Annotated[Optional[Path], typer.Option(
        "--conversation", help="OpenAI-style messages (JSON): a reply after every user turn, each turn appended "
                               "to the KV cache (images as data:/file:// URLs or paths).")] = None,
    backend: Annotated[str, typer.Option(help="torch (transformers), torch-export, ort or trt.")] = "torch",
    precision: OnnxPrecision = "fp32",
    max_new_tokens: MaxNewTokens = 32,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help=(
        "Largest image in pixels (height x width), applied to every backend's image processing "
        "[default: preprocessor_config.json]."))] = None,
    as_json: AsJson = False,
    verify: Verify = True,
    threads: Threads = None,
    inter_op_threads: InterOpThreads = None,
    ort_execution_mode: OrtExecutionMode = "sequential",
    io_binding: IoBinding = True,
) -> None:
    """Greedy generation through the checkpoint's tokenizer, chat template and image processor."""
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.generate import GenerateRequest, generate, generate_conversation
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings

    ort = OrtSettings(threads, inter_op_threads, ort_execution_mode, io_binding=io_binding)
    if backend in ("ort", "trt"):  # this process only feeds the runtime: host torch ops on one thread
        from trt_pipeline.runtime.host_threads import single_thread_host_torch

        single_thread_host_torch()

    if conversation is not None:
        replay = generate_conversation(GenerateRequest(src, [], [], backend, precision, max_new_tokens,
                                                       max_pixels=max_pixels, ort=ort), conversation)
        if as_json:
            typer.echo(json.dumps(replay.to_dict(), ensure_ascii=False))
            return
        for turn in replay.turns:
            typer.echo(f"[message {turn.message_index}: {turn.prompt_tokens} prompt tokens, "
                       f"{turn.reused_tokens} from the cache] {turn.text}")
        return
    if not prompt:
        raise ConfigError("pass --prompt (repeatable) or --conversation FILE.json.")
    images = [list(image or [])] + [[] for _ in prompt[1:]]
    result = generate(GenerateRequest(src, list(prompt), images, backend, precision, max_new_tokens,
                                      max_pixels=max_pixels, verify=verify, ort=ort))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        for text in result.texts:
            typer.echo(text)
