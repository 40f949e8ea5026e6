"""``compare``: every backend against the PyTorch reference, with per-output gates and greedy tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.cli.options import ExportDir, MaxNewTokens, ReferenceCheckpoint, Verify, split_list, tolerance_pairs


def _forced(tokens: object) -> str:
    forced = tokens.teacher_forced_agreement
    return "" if forced is None else f" ({forced:.0%} teacher-forced)"


def _passed_line(result: object) -> str:
    compared = ", ".join(b["name"] for b in result.backends)
    tokens = (f", tokens {', '.join(f'{t.backend} {t.exact_match_rate:.0%}' + _forced(t) for t in result.tokens)}"
              if result.tokens else "")
    return (f"compare passed: {compared} vs transformers ({len(result.tensors)} output checks{tokens}); "
            f"report: {result.files.get('markdown')}")


def compare_command(
    folder: ExportDir,
    precisions: Annotated[Optional[str], typer.Option(
        "--precisions", help="Comma-separated fp32,fp16,int8. Given: a missing OUT/onnx/PRECISION is an error. "
        "Default: every existing precision folder (missing ones are skipped with a line).")] = None,
    engines: Annotated[bool, typer.Option("--engines", help="Also compare OUT/engines/COMPONENT.PRECISION.engine (TensorRT + GPU).")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Held-out folder (prompts.jsonl + images) [default: calibration/heldout].")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder for compare.json/.md/_errors.png [default: DIR/reports].")] = None,
    checkpoint: ReferenceCheckpoint = None,
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Use only the first N held-out items.")] = None,
    max_new_tokens: MaxNewTokens = 16,
    tokens: Annotated[bool, typer.Option("--tokens/--no-tokens", help="Run the token-level check.")] = True,
    extremes: Annotated[bool, typer.Option("--extremes/--no-extremes", help="Add inputs at the profile extremes (min/max of every axis).")] = True,
    torch_export: Annotated[bool, typer.Option("--torch-export/--no-torch-export", help="Also compare the export-friendly torch modules.")] = True,
    tol: Annotated[Optional[list[str]], typer.Option(
        "--tol", metavar="KEY=VALUE", help="Override a gate, repeatable: PRECISION.GROUP.METRIC=VALUE (GROUP image_features|logits|present, "
        "METRIC atol|cosine|p99_rel, VALUE a number or off), PRECISION.tokens=RATE (exact sequences) or PRECISION.teacher_forced=RATE.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Polygraphy's comparison log.")] = False,
    verify: Verify = True,
) -> None:
    """Compare torch-export, ONNX Runtime (fp32/fp16/int8) and TensorRT with transformers: per-output gates + greedy tokens.

    Exits non-zero (5) naming the failing output, backend and numbers when a gate fails; the report
    (JSON, Markdown, PNG of error distributions) is written either way.
    """
    from trt_pipeline.compare import compare
    from trt_pipeline.config import CompareConfig

    cfg = CompareConfig(
        precisions=split_list(precisions) if precisions is not None else None,
        engines=engines, data=data, report_dir=report, checkpoint=checkpoint, max_items=max_items,
        max_new_tokens=max_new_tokens, tokens=tokens, extremes=extremes, torch_export=torch_export,
        tolerances=tolerance_pairs(tol), verbose=verbose,
    )
    typer.echo(_passed_line(compare(folder, cfg, verify=verify)))
