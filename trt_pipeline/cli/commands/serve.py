"""``serve``: an OpenAI-compatible server over an export folder (library: :func:`trt_pipeline.serve.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.cli.options import InterOpThreads, IoBinding, OnnxPrecision, OrtExecutionMode, OrtSpinning, Threads


def serve_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Export folder written by `export`/`pipeline` (e.g. engines/demo).")],
    backend: Annotated[str, typer.Option("--backend", help="ort (ONNX Runtime), trt (TensorRT, GPU) or torch.")] = "ort",
    precision: OnnxPrecision = "fp32",
    host: Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    served_model_name: Annotated[str, typer.Option("--served-model-name", help="Model id clients send.")] = "autoglm-phone-9b",
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Require `Authorization: Bearer KEY`.")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests beyond the batch; more get 429.")] = 64,
    prefix_cache: Annotated[int, typer.Option("--prefix-cache", help="Conversations whose KV is kept for reuse (0: off).")] = 8,
    prefill_chunk: Annotated[Optional[int], typer.Option(
        "--prefill-chunk", min=1, help="Prompt tokens per decoder call between two decode steps of the running "
        "replies (default 512, at most the export's sequence_length).")] = None,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Largest image accepted (width x height); larger: 413.")] = 5_000_000,
    allowed_media_path: Annotated[
        Optional[list[str]], typer.Option("--allowed-media-path", help="Prefix of file paths / http URLs images may come from.")
    ] = None,
    threads: Threads = None,
    inter_op_threads: InterOpThreads = None,
    ort_execution_mode: OrtExecutionMode = "sequential",
    io_binding: IoBinding = True,
    ort_spinning: OrtSpinning = False,
) -> None:
    """Serve OUT over an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health, /metrics)."""
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings
    from trt_pipeline.serve import serve
    from trt_pipeline.serve.chat import MediaPolicy
    from trt_pipeline.serve.model import ServeConfig

    media = MediaPolicy(max_pixels=max_pixels, allowed_prefixes=tuple(allowed_media_path or ()))
    # spinning off by default: the server's own threads (HTTP, sampling) need the cores between runs
    ort = OrtSettings(threads, inter_op_threads, ort_execution_mode, io_binding=io_binding, spinning=ort_spinning)
    serve(ServeConfig(out, backend, precision, host, port, served_model_name, api_key, max_queue, prefix_cache,
                      prefill_chunk=prefill_chunk, media=media, ort=ort))
