"""``pipeline`` and ``bench``: one resumable run from checkpoint to report, and the latency benchmark."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.cli.options import AsJson, ExportDir, PipelineToml, Progress, int_list, split_list


def pipeline_command(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Hugging Face checkpoint folder (default: make and use the built-in tiny one).")] = None,
    config: PipelineToml = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: engines/NAME).")] = None,
    force: Annotated[Optional[str], typer.Option("--force", help="Re-run this stage and every stage after it "
                                                 "(checkpoint, export, fp16, int8, build, compare, bench, report).")] = None,
    rehash: Annotated[bool, typer.Option("--rehash", help="Re-read every file for the skip decisions (ignore the size/mtime hash cache).")] = False,
    progress: Progress = True,
    as_json: AsJson = False,
) -> None:
    """Checkpoint -> export -> simplify -> fp16 -> int8 -> build -> compare -> bench -> report; unchanged stages are skipped."""
    from trt_pipeline.config.pipeline import load_pipeline_config
    from trt_pipeline.pipeline import run_pipeline

    cfg = load_pipeline_config(config, checkpoint=checkpoint, out=out, force=force, rehash=rehash or None)
    summary = run_pipeline(cfg, show_progress=progress)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    from trt_pipeline.cli.render import print_pipeline_summary

    print_pipeline_summary(summary)
    typer.echo(f"pipeline finished in {summary.seconds:.1f} s; report: {summary.report}")


def bench_command(
    folder: ExportDir,
    backends: Annotated[Optional[str], typer.Option(
        "--backends", help="Comma-separated: torch (transformers eager), torch-export, ort-fp32, ort-fp16, ort-int8, "
        "trt-fp16, trt-int8, trt-fp32 (default: torch,ort-fp32,ort-fp16,ort-int8,trt-fp16; missing ones are skipped).")] = None,
    prompt_lengths: Annotated[Optional[str], typer.Option("--prompt-lengths", help="Prefill lengths, e.g. 16,64,256.")] = None,
    context_lengths: Annotated[Optional[str], typer.Option("--context-lengths", help="Decode contexts, e.g. 64,256,512.")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", help="Timed prefill/image runs per length.")] = None,
    decode_steps: Annotated[Optional[int], typer.Option("--decode-steps", help="Timed decode steps per context.")] = None,
    warmup: Annotated[Optional[int], typer.Option("--warmup", help="Untimed runs before each measurement.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Intra-op threads for torch AND ONNX Runtime (default: all cores).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    image_patches: Annotated[Optional[int], typer.Option("--image-patches", help="Vision prefill size (default: export opt; 0: off).")] = None,
    isolate: Annotated[Optional[bool], typer.Option("--isolate/--no-isolate", help="Each backend in its own process (clean peak RSS).")] = None,
    inter_op_threads: Annotated[Optional[int], typer.Option("--inter-op-threads", help="ONNX Runtime inter-op threads (default 1).")] = None,
    io_binding: Annotated[Optional[bool], typer.Option("--io-binding/--no-io-binding", help="ONNX Runtime outputs into reused buffers (default on).")] = None,
    clock: Annotated[Optional[str], typer.Option("--clock", help="wall (elapsed) or cpu (CPU time of the one "
                                                 "measuring thread, needs --threads 1; robust on a loaded machine).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Take [bench] from this pipeline.toml (options override it).")] = None,
    as_json: AsJson = False,
) -> None:
    """Prefill/decode latency (p50/p90/p99), tokens/s, peak RSS and a memory roofline -> DIR/reports/bench.{json,png}."""
    from trt_pipeline.bench.run import bench
    from trt_pipeline.config import BenchConfig
    from trt_pipeline.config.pipeline import load_pipeline_config

    base = load_pipeline_config(config).bench if config is not None else BenchConfig()
    changes = {
        "backends": split_list(backends) if backends else None,
        "prompt_lengths": int_list(prompt_lengths), "context_lengths": int_list(context_lengths),
        "iterations": iterations, "decode_steps": decode_steps, "warmup": warmup, "threads": threads,
        "batch_size": batch_size, "image_patches": image_patches, "isolate": isolate,
        "inter_op_threads": inter_op_threads, "io_binding": io_binding, "clock": clock,
    }
    report = bench(folder, dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None}))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    from trt_pipeline.cli.render import print_bench_table

    print_bench_table(folder, report)
    typer.echo(f"bench written to {report.json_path} and {report.png_path}")
