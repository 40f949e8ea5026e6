"""``calib-import``: real screenshots + instructions -> a calibration root for ``precision int8 --calib``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def calib_import_command(
    screenshots: Annotated[Path, typer.Argument(help="Folder of PNG/JPEG screenshots (not searched recursively).")],
    prompts: Annotated[Path, typer.Option("--prompts", help=".jsonl lines {image, instruction[, lang]}, or .txt: one instruction per screenshot in file-name order.")],
    out: Annotated[Path, typer.Option("--out", help="Calibration root to write (calib/, heldout/); then use precision int8 --calib OUT.")],
    heldout_share: Annotated[float, typer.Option("--heldout-share", help="Share of screenshots held out for the accuracy gate (split by image).")] = 0.25,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic calib/heldout split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the calib/ and heldout/ of an existing calibration set.")] = False,
) -> None:
    """Import your own screenshots + instructions as INT8 calibration data (the committed set is a CI fixture)."""
    from trt_pipeline.quantize.calib_import import import_screenshots

    result = import_screenshots(screenshots, prompts, out, heldout_share=heldout_share, seed=seed, overwrite=overwrite)
    for split, n in result.prompts.items():
        typer.echo(f"{split}: {n} prompts, {result.images[split]} images")
    typer.echo(f"wrote {result.root}; calibrate with `autoglm-trt precision int8 EXPORT --calib {result.root}`")
