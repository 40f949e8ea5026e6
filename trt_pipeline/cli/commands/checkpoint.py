"""``init-checkpoint`` and ``info``: deterministic random GLM-4.1V checkpoints, and what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.cli.options import AsJson, Overwrite


def init_checkpoint_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created atomically).")],
    preset: Annotated[
        str, typer.Option("--preset", help="Model size: tiny (tests), trained (tiny family, committed trained weights: token gates), small (~110 M, benchmarks), phone-9b (real dims).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="torch.manual_seed for the random weights.")] = 0,
    dtype: Annotated[
        Optional[str],
        typer.Option("--dtype", help="float32 | float16 | bfloat16 (default: float32; phone-9b: bfloat16)."),
    ] = None,
    config_only: Annotated[
        Optional[bool],
        typer.Option(
            "--config-only/--with-weights",
            help="Write config, tokenizer and image processor without weights (default for phone-9b).",
        ),
    ] = None,
    overwrite: Overwrite = False,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Text decoder layers (real width, fewer layers).")] = None,
    vision_layers: Annotated[Optional[int], typer.Option("--vision-layers", help="Vision tower layers.")] = None,
    streaming: Annotated[Optional[bool], typer.Option(
        "--streaming/--in-memory", help="Write weights one tensor at a time [default: phone-9b only].")] = None,
) -> None:
    """Write a deterministic random Hugging Face checkpoint of GLM-4.1V (AutoGLM-Phone-9B) at a preset size."""
    from trt_pipeline.cli.render import checkpoint_summary
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
    from trt_pipeline.models.info import checkpoint_info

    overrides = {k: v for k, v in (("text_num_hidden_layers", layers), ("vision_depth", vision_layers)) if v is not None}
    path = write_checkpoint(out, preset=preset, seed=seed, config_only=config_only, dtype=dtype, overwrite=overwrite,
                            overrides=overrides, streaming=streaming)
    typer.echo(checkpoint_summary(path, preset, checkpoint_info(path)))


def info_command(
    checkpoint: Annotated[Path, typer.Argument(help="Hugging Face checkpoint folder (config.json, *.safetensors).")],
    as_json: AsJson = False,
) -> None:
    """Show a GLM-4.1V checkpoint's dims, parameter counts, sizes and KV-cache cost (reads headers only)."""
    from trt_pipeline.models.info import checkpoint_info

    info = checkpoint_info(checkpoint)
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
        return
    from rich.console import Console

    from trt_pipeline.cli.render import checkpoint_table

    Console().print(checkpoint_table(info))
