"""``precision fp16`` and ``precision int8``: FP16 (ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) ONNX variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from trt_pipeline.cli.options import (
    AsJson,
    Calib,
    CalibSamples,
    Components,
    ExcludeNodes,
    ExportDir,
    Evaluate,
    HeldoutSamples,
    split_list,
)

class PrecisionGroup(TyperGroup):
    """``precision NAME``: an unknown NAME is a ConfigError listing the valid names (the one registry)."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        from trt_pipeline.precisions import DERIVED_PRECISIONS, check_precision

        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            check_precision(name, DERIVED_PRECISIONS, option="precision")
        return super().resolve_command(ctx, args)


precision_app = typer.Typer(
    name="precision",
    cls=PrecisionGroup,
    help="Make FP16 (AutoCast), INT8 (calibrated explicit Q/DQ) or INT4 (weight-only AWQ) ONNX variants of an export, validated on CPU.",
    no_args_is_help=True,
)


def _print_summary(folder: Path, as_json: bool) -> None:
    from trt_pipeline.artifacts import read_json
    from trt_pipeline.cli.render import precision_json, precision_lines

    manifest = read_json(folder / "manifest.json")
    if as_json:
        typer.echo(json.dumps(precision_json(folder, manifest), indent=2))
        return
    for line in precision_lines(folder, manifest):
        typer.echo(line)


@precision_app.command("fp16")
def precision_fp16_command(
    folder: ExportDir,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--no-keep-io-types", help="Keep float32 graph inputs/outputs (the host loop feeds float32).")] = True,
    calib: Calib = None,
    calib_samples: CalibSamples = 8,
    heldout_samples: HeldoutSamples = 8,
    components: Components = "vision_encoder,decoder",
    exclude_nodes: ExcludeNodes = None,
    exclude_op_types: Annotated[Optional[list[str]], typer.Option("--exclude-op-types", help="ONNX op type kept in fp32; repeatable.")] = None,
    data_max: Annotated[float, typer.Option("--data-max", help="Nodes whose I/O exceed this magnitude stay fp32.")] = 512.0,
    evaluate: Evaluate = True,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate: worst held-out cosine of every output (logits, vision features, KV cache).")] = 0.9999,
    max_p99_rel: Annotated[float, typer.Option("--max-p99-rel", help="Gate: worst held-out p99 |x - r| / RMS(r) of every output.")] = 1e-2,
    as_json: AsJson = False,
) -> None:
    """FP16 via ModelOpt AutoCast: OUT/onnx/fp32 -> OUT/onnx/fp16 (+ manifest.json, accuracy.json).

    Gates on the held-out set vs the fp32 ONNX (the fp16 rows of the gate table, as in compare): cosine
    >= 0.9999 and p99 relative error <= 1e-2 on every output
    (exit 5 otherwise; the folder is kept for inspection).
    """
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    cfg = Fp16Config(
        calib=calib, calib_samples=calib_samples, heldout_samples=heldout_samples, keep_io_types=keep_io_types,
        components=split_list(components), nodes_to_exclude=tuple(exclude_nodes or ()),
        op_types_to_exclude=tuple(exclude_op_types or ()), data_max=data_max, evaluate=evaluate,
        min_cosine=min_cosine, max_p99_rel=max_p99_rel,
    )
    _print_summary(make_fp16(folder, cfg), as_json)


@precision_app.command("int8")
def precision_int8_command(
    folder: ExportDir,
    calib: Calib = None,
    method: Annotated[str, typer.Option("--method", help="Activation ranges: entropy | max | percentile.")] = "percentile",
    percentile: Annotated[float, typer.Option("--percentile", help="Percentile of |x| for --method percentile.")] = 99.99,
    calib_samples: CalibSamples = 16,
    heldout_samples: HeldoutSamples = 8,
    vision_precision: Annotated[str, typer.Option("--vision-precision", help="vision_encoder in the int8 folder: int8 | fp16 | fp32.")] = "int8",
    decoder_precision: Annotated[str, typer.Option("--decoder-precision", help="decoder in the int8 folder: int8 | fp16 | fp32.")] = "int8",
    high_precision: Annotated[str, typer.Option("--high-precision", help="dtype of the unquantized ops: fp16 | fp32.")] = "fp16",
    exclude_nodes: ExcludeNodes = None,
    quantize_attention: Annotated[bool, typer.Option("--quantize-attention/--no-quantize-attention", help="Also put Q/DQ on the attention BMMs (costs accuracy).")] = False,
    trt_version: Annotated[str, typer.Option("--trt-version", help="TensorRT 10 release named in calibration.cache's header.")] = "10.3.0",
    evaluate: Evaluate = True,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate: worst held-out cosine of every output (logits, vision features, KV cache).")] = 0.99,
    target_token_agreement: Annotated[Optional[float], typer.Option("--target-token-agreement", help="Keep the most INT8-sensitive decoder node groups in high precision until the held-out teacher-forced token agreement reaches this (0-1].")] = None,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="SmoothQuant-style per-channel scaling of GEMM inputs folded into the weights before calibration.")] = False,
    smooth_alpha: Annotated[float, typer.Option("--smooth-alpha", help="Smoothing strength: s = max|X|^a / max|W|^(1-a).")] = 0.5,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per held-out prompt for the token agreement.")] = 8,
    as_json: AsJson = False,
) -> None:
    """INT8 via ModelOpt ONNX PTQ (explicit Q/DQ, calibrated on CPU): OUT/onnx/fp32 -> OUT/onnx/int8.

    Also writes calibration.cache for TensorRT 10 implicit-INT8 builds. Gate on the held-out set vs
    the fp32 ONNX: cosine >= 0.99 on every output (the int8 rows of the gate table; exit 5 otherwise).
    With --target-token-agreement T the decoder's node groups are ranked by INT8 sensitivity and the
    fewest most sensitive ones stay in high precision so that the held-out teacher-forced agreement
    reaches T (exit 5 and no folder when T cannot be reached).
    """
    from trt_pipeline.config import Int8Config
    from trt_pipeline.quantize.precision import make_int8

    cfg = Int8Config(
        calib=calib, method=method, percentile=percentile, calib_samples=calib_samples,
        heldout_samples=heldout_samples,
        components={"vision_encoder": vision_precision, "decoder": decoder_precision},
        nodes_to_exclude=tuple(exclude_nodes or ()), disable_mha_qdq=not quantize_attention,
        high_precision_dtype=high_precision, trt_version=trt_version, evaluate=evaluate, min_cosine=min_cosine,
        target_token_agreement=target_token_agreement, smooth=smooth, smooth_alpha=smooth_alpha,
        max_new_tokens=max_new_tokens,
    )
    _print_summary(make_int8(folder, cfg), as_json)


@precision_app.command("int4")
def precision_int4_command(
    folder: ExportDir,
    calib: Calib = None,
    method: Annotated[str, typer.Option("--method", help="awq (AWQ scale search + weight clipping, ModelOpt awq_full; falls back to rtn, saying why, when it cannot run) | awq-lite (scale search only) | awq-clip (clipping only) | rtn.")] = "awq",
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Weight rows per INT4 scale: a power of two >= 16 dividing every quantized K [default: 128, smaller when the narrowest K would get fewer than 8 blocks per column].")] = None,
    activations: Annotated[str, typer.Option("--activations", help="fp16 (TensorRT, strongly typed) | fp32 (ONNX Runtime CPU: fuses into MatMulNBits).")] = "fp16",
    quantize_lm_head: Annotated[bool, typer.Option("--quantize-lm-head/--no-quantize-lm-head", help="Also quantize the LM head (kept in floating point by default).")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset of the int4 graphs (>= 21: DequantizeLinear block_size); a lower export is upgraded and checked.")] = 21,
    calib_samples: CalibSamples = 16,
    heldout_samples: HeldoutSamples = 8,
    vision_precision: Annotated[str, typer.Option("--vision-precision", help="vision_encoder in the int4 folder: fp16 | fp32 | int4.")] = "fp16",
    decoder_precision: Annotated[str, typer.Option("--decoder-precision", help="decoder in the int4 folder: int4 | fp16 | fp32.")] = "int4",
    exclude_nodes: ExcludeNodes = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per held-out prompt in the token agreement check.")] = 8,
    evaluate: Evaluate = True,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Gate: worst held-out cosine of every output (default: the gate table's int4 rows, 0.99).")] = None,
    as_json: AsJson = False,
) -> None:
    """Weight-only INT4 via ModelOpt (AWQ / RTN, block-quantized DequantizeLinear, opset 21): OUT/onnx/fp32 -> OUT/onnx/int4.

    The vision encoder stays fp16 by default. Gate on the held-out set vs the fp32 ONNX: the int4 rows
    of the gate table (cosine >= 0.99 on every output; exit 5 otherwise, the folder is kept).
    """
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.precision import make_int4

    cfg = Int4Config(
        calib=calib, method=method, block_size=block_size, activations=activations,
        quantize_lm_head=quantize_lm_head, nodes_to_exclude=tuple(exclude_nodes or ()), opset=opset,
        calib_samples=calib_samples, heldout_samples=heldout_samples,
        components={"vision_encoder": vision_precision, "decoder": decoder_precision},
        max_new_tokens=max_new_tokens, evaluate=evaluate, min_cosine=min_cosine,
    )
    _print_summary(make_int4(folder, cfg), as_json)
