"""Typer command-line interface.

Thin by design: each command turns options into a frozen config, makes one library call and
maps :class:`~trt_pipeline.errors.PipelineError` to a one-line message and an exit code. All
imports of heavy modules happen inside the commands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from trt_pipeline.errors import PipelineError

app = typer.Typer(
    name="autoglm-trt",
    help="Turn an AutoGLM-Phone-9B (GLM-4.1V) checkpoint into validated ONNX, FP16/INT8 ONNX and TensorRT engines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn PipelineErrors into a red message on stderr and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PipelineError as error:
            typer.secho(f"error: {error.render()}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=error.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """autoglm-trt command line."""
    if version:
        from trt_pipeline import __version__

        typer.echo(__version__)
        raise typer.Exit()


# --- commands are registered below, one block per stage -------------------------------------


# --- init-checkpoint / info: deterministic random GLM-4.1V checkpoints and what a checkpoint holds ---


@app.command("init-checkpoint")
@handle_errors
def init_checkpoint_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created atomically).")],
    preset: Annotated[
        str, typer.Option("--preset", help="Model size: tiny (tests), small (~110 M, benchmarks), phone-9b (real dims).")
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Write a deterministic random Hugging Face checkpoint of GLM-4.1V (AutoGLM-Phone-9B) at a preset size."""
    from trt_pipeline.models.checkpoint_factory import write_checkpoint
    from trt_pipeline.models.info import checkpoint_info, format_bytes, format_count

    path = write_checkpoint(
        out, preset=preset, seed=seed, config_only=config_only, dtype=dtype, overwrite=overwrite
    )
    info = checkpoint_info(path)
    weights = (
        f"{len(info.weights['files'])} safetensors file(s), {format_bytes(info.weight_bytes)}"
        if info.weights
        else "no weights (config only)"
    )
    typer.echo(
        f"wrote {path}: preset {preset}, {format_count(info.total_parameters)} parameters, {info.dtype}, {weights}"
    )


@app.command("info")
@handle_errors
def info_command(
    checkpoint: Annotated[Path, typer.Argument(help="Hugging Face checkpoint folder (config.json, *.safetensors).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show a GLM-4.1V checkpoint's dims, parameter counts, sizes and KV-cache cost (reads headers only)."""
    import json as _json

    from trt_pipeline.models.info import checkpoint_info, render_table

    info = checkpoint_info(checkpoint)
    if as_json:
        typer.echo(_json.dumps(info.to_dict(), indent=2))
        return
    from rich.console import Console

    Console().print(render_table(info))


# --- export / simplify / validate / generate ---------------------------------------------------
def _components(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@app.command("export")
@handle_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Hugging Face checkpoint folder (config.json + safetensors).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")] = Path("engines/export"),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    components: Annotated[str, typer.Option(help="Comma-separated: vision_encoder,decoder.")] = "vision_encoder,decoder",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch_size.")] = 4,
    max_seq: Annotated[int, typer.Option("--max-seq", help="Largest sequence_length (prompt tokens per prefill).")] = 256,
    max_kv: Annotated[int, typer.Option("--max-kv", help="Largest past_sequence_length (KV-cache tokens).")] = 512,
    min_image_tokens: Annotated[int, typer.Option("--min-image-tokens", help="Smallest image-token count.")] = 4,
    max_image_tokens: Annotated[Optional[int], typer.Option("--max-image-tokens", help="Largest image-token count [default: from preprocessor_config.json].")] = None,
    external_data: Annotated[Optional[bool], typer.Option("--external-data/--no-external-data", help="Force weights into .onnx.data files [default: automatic above 2 GB].")] = None,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim (verified on ONNX Runtime).")] = True,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Compare with transformers on the dim grid.")] = True,
) -> None:
    """Export the vision encoder and decoder to ONNX with dynamic axes, simplify and validate them."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(
        opset=opset, components=_components(components), max_batch=max_batch, max_seq=max_seq, max_kv=max_kv,
        min_image_tokens=min_image_tokens, max_image_tokens=max_image_tokens, external_data=external_data,
        simplify=simplify, validate=validate,
    )
    export(checkpoint, out, cfg)
    typer.echo(f"export written to {out}")


@app.command("simplify")
@handle_errors
def simplify_command(
    folder: Annotated[Path, typer.Argument(help="Export folder (OUT) or a precision folder holding *.onnx.")],
    precision: Annotated[str, typer.Option(help="Precision folder inside OUT/onnx.")] = "fp32",
) -> None:
    """Simplify ONNX models with onnxsim, keeping dynamic axes; verified equal on ONNX Runtime."""
    from trt_pipeline.graph.simplify import simplify_folder

    target = folder / "onnx" / precision if (folder / "onnx").is_dir() else folder
    for name, report in simplify_folder(target).items():
        if "skipped" in report:
            typer.echo(f"{name}: skipped ({report['skipped']})")
        else:
            typer.echo(f"{name}: {report['nodes_before']} -> {report['nodes_after']} nodes, max abs diff {report['max_abs_diff']:.3g}")


@app.command("validate")
@handle_errors
def validate_command(
    folder: Annotated[Path, typer.Argument(help="Export folder (has export.json).")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Reference checkpoint [default: the one named in export.json].")] = None,
    precision: Annotated[str, typer.Option(help="Which OUT/onnx/PRECISION to check.")] = "fp32",
    atol_logits: Annotated[float, typer.Option("--atol-logits")] = 1e-4,
    atol_vision: Annotated[float, typer.Option("--atol-vision")] = 1e-5,
) -> None:
    """ONNX Runtime (CPU) vs transformers over every dynamic axis (min / interior / max)."""
    from trt_pipeline.export.exporter import read_export_manifest
    from trt_pipeline.export.validate import validate

    source = checkpoint or Path(read_export_manifest(folder)["checkpoint"]["path"])
    report = validate(folder, source, precision=precision, atol_logits=atol_logits, atol_vision=atol_vision)
    typer.echo(f"validation passed: {len(report.results)} checks, report in {folder / 'reports'}")


@app.command("generate")
@handle_errors
def generate_command(
    src: Annotated[Path, typer.Argument(help="Export folder, or a checkpoint folder for --backend torch.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Instruction text; repeat for a batch.")],
    image: Annotated[Optional[list[Path]], typer.Option("--image", "-i", help="Image for the (first) prompt; repeatable.")] = None,
    backend: Annotated[str, typer.Option(help="torch (transformers), torch-export, ort or trt.")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (ort/trt backends).")] = "fp32",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print token ids and text as JSON.")] = False,
) -> None:
    """Greedy generation through the checkpoint's tokenizer, chat template and image processor."""
    import json

    from trt_pipeline.generate import GenerateRequest, generate

    images = [list(image or [])] + [[] for _ in prompt[1:]]
    result = generate(GenerateRequest(src, list(prompt), images, backend, precision, max_new_tokens))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        for text in result.texts:
            typer.echo(text)


# --- TensorRT engines: build / inspect (engine stage) ------------------------------------------

import enum as _enum  # noqa: E402


class HardwareCompatChoice(str, _enum.Enum):
    """``--hardware-compat`` values (TensorRT HardwareCompatibilityLevel NONE / AMPERE_PLUS / SAME_COMPUTE_CAPABILITY)."""

    none = "none"
    ampere_plus = "ampere+"
    same_cc = "same-cc"


@app.command("build")
@handle_errors
def build_command(
    src: Annotated[Path, typer.Argument(metavar="DIR", help="Export folder: export.json + onnx/PRECISION/ (+ manifest.json).")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Compile the fp16 ONNX variant (strongly typed).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Compile the int8 (Q/DQ) ONNX variant (strongly typed).")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="Compile the fp32 ONNX (the default, as trtexec).")] = False,
    workspace: Annotated[
        Optional[str], typer.Option("--workspace", help="Workspace memory-pool limit: 4GiB, 512MiB, 2G or GiB as a number. Default: TensorRT's (all device memory).")
    ] = None,
    opt_level: Annotated[int, typer.Option("--opt-level", help="Builder optimization level, 0-5 (TensorRT default 3).")] = 3,
    timing_cache: Annotated[
        Optional[Path], typer.Option("--timing-cache", metavar="FILE", help="Timing cache loaded, reused and saved across builds. Default: DIR/engines/timing.cache.")
    ] = None,
    min_shapes: Annotated[Optional[str], typer.Option("--min-shapes", metavar="NAME:DIMS,...", help="Override profile minimum shapes, e.g. inputs_embeds:1x1x4096.")] = None,
    opt_shapes: Annotated[Optional[str], typer.Option("--opt-shapes", metavar="NAME:DIMS,...", help="Override profile optimum shapes.")] = None,
    max_shapes: Annotated[Optional[str], typer.Option("--max-shapes", metavar="NAME:DIMS,...", help="Override profile maximum shapes.")] = None,
    hardware_compat: Annotated[
        HardwareCompatChoice, typer.Option("--hardware-compat", help="Hardware compatibility level of the engine.")
    ] = HardwareCompatChoice.none,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Build a version-compatible engine (runs on newer TensorRT).")] = False,
    legacy_precision_flags: Annotated[
        bool, typer.Option("--legacy-precision-flags", help="TensorRT 10.x only: FP16/INT8 builder flags + calibration cache on the fp32 ONNX instead of strong typing.")
    ] = False,
) -> None:
    """Build TensorRT engines DIR/engines/COMPONENT.PRECISION.engine (+ .engine.json manifests). Needs TensorRT and a GPU."""
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.engine.tensorrt_import import require_tensorrt

    cfg = BuildConfig.from_options(
        src, fp16=fp16, int8=int8, fp32=fp32, workspace=workspace, opt_level=opt_level, timing_cache=timing_cache,
        min_shapes=min_shapes, opt_shapes=opt_shapes, max_shapes=max_shapes, hardware_compat=HardwareCompatChoice(hardware_compat).value,
        version_compatible=version_compatible, legacy_precision_flags=legacy_precision_flags,
    )
    ctx = require_tensorrt(cfg.device_index)
    for result in build_engines(cfg, ctx=ctx):
        typer.echo(str(result.engine_path))


@app.command("inspect")
@handle_errors
def inspect_command(
    engine: Annotated[Path, typer.Argument(metavar="ENGINE", help="A COMPONENT.PRECISION.engine file (its .engine.json beside it).")],
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only read the manifest (works without TensorRT).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_layers: Annotated[int, typer.Option("--max-layers", help="Layers to list (0 = all).")] = 50,
) -> None:
    """Show an engine's manifest and, with TensorRT + GPU, its I/O, profiles and layers (engine inspector)."""
    import json as _json

    from rich.console import Console
    from rich.table import Table

    from trt_pipeline.engine.inspect import inspect_engine
    from trt_pipeline.engine.manifest import summarize

    report = inspect_engine(engine, manifest_only=manifest_only)
    if as_json:
        typer.echo(_json.dumps(report.to_json(), indent=2, default=str))
        return
    console = Console()
    table = Table(title=str(engine), show_header=False)
    for label, value in summarize(report.manifest):
        table.add_row(label, value)
    console.print(table)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", highlight=False)
    profiles = Table(title="optimization profiles (manifest)")
    for column in ("profile", "input", "min", "opt", "max"):
        profiles.add_column(column)
    for profile in report.manifest.profiles:
        for name, rng in profile.shapes.items():
            profiles.add_row(profile.name, name, *("x".join(map(str, s)) for s in (rng.min, rng.opt, rng.max)))
    console.print(profiles)
    if report.io is not None:
        io = Table(title="I/O tensors (engine)")
        for column in ("name", "mode", "dtype", "shape"):
            io.add_column(column)
        for item in report.io:
            io.add_row(item["name"], item["mode"], item["dtype"], "x".join(map(str, item["shape"])))
        console.print(io)
    if report.layers is not None:
        shown = report.layers if max_layers <= 0 else report.layers[:max_layers]
        layers = Table(title=f"layers ({len(shown)} of {len(report.layers)})")
        for column in ("#", "name", "type", "output format/dtype", "tactic"):
            layers.add_column(column)
        for index, layer in enumerate(shown):
            layers.add_row(str(index), layer.name, layer.type or "", layer.precision or "", layer.tactic or "")
        console.print(layers)


# --- compare: accuracy gates against the PyTorch reference (issue 6) ----------------------------


def _tolerance_pairs(values: Optional[list[str]]) -> list[tuple[str, str]]:
    from trt_pipeline.errors import ConfigError

    pairs = []
    for value in values or []:
        key, sep, number = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tol {value!r}: expected KEY=VALUE, e.g. fp16.logits.cosine=0.999 or int8.tokens=0.25.")
        pairs.append((key.strip(), number.strip()))
    return pairs


@app.command("compare")
@handle_errors
def compare_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Export folder (export.json, onnx/PRECISION/, engines/).")],
    precisions: Annotated[
        Optional[str],
        typer.Option("--precisions", help="Comma-separated fp32,fp16,int8. Given: a missing OUT/onnx/PRECISION is an error. "
                     "Default: every existing precision folder (missing ones are skipped with a line)."),
    ] = None,
    engines: Annotated[bool, typer.Option("--engines", help="Also compare OUT/engines/COMPONENT.PRECISION.engine (TensorRT + GPU).")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Held-out folder (prompts.jsonl + images) [default: calibration/heldout].")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report folder for compare.json/.md/_errors.png [default: DIR/reports].")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Reference checkpoint [default: the one named in export.json].")] = None,
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Use only the first N held-out items.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per prompt in the token-level check.")] = 16,
    tokens: Annotated[bool, typer.Option("--tokens/--no-tokens", help="Run the token-level check.")] = True,
    extremes: Annotated[bool, typer.Option("--extremes/--no-extremes", help="Add inputs at the profile extremes (min/max of every axis).")] = True,
    torch_export: Annotated[bool, typer.Option("--torch-export/--no-torch-export", help="Also compare the export-friendly torch modules.")] = True,
    tol: Annotated[
        Optional[list[str]],
        typer.Option("--tol", metavar="KEY=VALUE", help="Override a gate, repeatable: PRECISION.GROUP.METRIC=VALUE (GROUP image_features|logits|present, "
                     "METRIC atol|cosine|p99_rel, VALUE a number or off) or PRECISION.tokens=RATE."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Polygraphy's comparison log.")] = False,
) -> None:
    """Compare torch-export, ONNX Runtime (fp32/fp16/int8) and TensorRT with transformers: per-output gates + greedy tokens.

    Exits non-zero (5) naming the failing output, backend and numbers when a gate fails; the report
    (JSON, Markdown, PNG of error distributions) is written either way.
    """
    from trt_pipeline.compare import compare
    from trt_pipeline.config import CompareConfig

    cfg = CompareConfig(
        precisions=_components(precisions) if precisions is not None else None,
        engines=engines, data=data, report_dir=report, checkpoint=checkpoint, max_items=max_items,
        max_new_tokens=max_new_tokens, tokens=tokens, extremes=extremes, torch_export=torch_export,
        tolerances=_tolerance_pairs(tol), verbose=verbose,
    )
    result = compare(folder, cfg)
    compared = ", ".join(b["name"] for b in result.backends)
    typer.echo(f"compare passed: {compared} vs transformers ({len(result.tensors)} output checks"
               + (f", tokens {', '.join(f'{t.backend} {t.exact_match_rate:.0%}' for t in result.tokens)}" if result.tokens else "")
               + f"); report: {result.files.get('markdown')}")


# --- precision: FP16 (ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) ONNX variants (issue 4) -------
precision_app = typer.Typer(
    name="precision",
    help="Make FP16 (AutoCast) or INT8 (calibrated explicit Q/DQ) ONNX variants of an export, validated on CPU.",
    no_args_is_help=True,
)
app.add_typer(precision_app, name="precision")


def _precision_summary(folder: Path, as_json: bool) -> None:
    import json

    from trt_pipeline.artifacts import read_json

    manifest = read_json(folder / "manifest.json")
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), "accuracy": manifest.get("accuracy"),
                               "components": {c: {k: v for k, v in e.items() if k in ("file", "precision", "sha256")}
                                              for c, e in manifest["components"].items()}}, indent=2))
        return
    for name, entry in manifest["components"].items():
        kept = entry.get("nodes_kept_fp32")
        excluded = entry.get("nodes_excluded")
        details = []
        if kept is not None:
            details.append(f"{len(kept)} node(s) kept in fp32" + (f": {', '.join(kept[:8])}" + (" ..." if len(kept) > 8 else "") if kept else ""))
        if entry.get("nodes_quantized") is not None:
            details.append(f"{len(entry['nodes_quantized'])} node(s) quantized, {len(excluded or {})} excluded"
                           + (f": {', '.join(list(excluded)[:8])}" if excluded else ""))
        typer.echo(f"{name} [{entry['precision']}]: " + "; ".join(details))
    typer.echo(f"written to {folder} (manifest.json, accuracy.json)")


@precision_app.command("fp16")
@handle_errors
def precision_fp16_command(
    folder: Annotated[Path, typer.Argument(help="Export folder (export.json + onnx/fp32).")],
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--no-keep-io-types", help="Keep float32 graph inputs/outputs (the host loop feeds float32).")] = True,
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Calibration root with calib/ and heldout/ (default: calibration/ of the repository).")] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="Calibration items for AutoCast's reference run.")] = 8,
    heldout_samples: Annotated[int, typer.Option("--heldout-samples", help="Held-out items for the accuracy check.")] = 8,
    components: Annotated[str, typer.Option(help="Comma-separated: vision_encoder,decoder.")] = "vision_encoder,decoder",
    exclude_nodes: Annotated[Optional[list[str]], typer.Option("--exclude-nodes", help="Node-name regex kept in fp32; repeatable.")] = None,
    exclude_op_types: Annotated[Optional[list[str]], typer.Option("--exclude-op-types", help="ONNX op type kept in fp32; repeatable.")] = None,
    data_max: Annotated[float, typer.Option("--data-max", help="Nodes whose I/O exceed this magnitude stay fp32.")] = 512.0,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Check the variant against the fp32 ONNX on the held-out set.")] = True,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate: worst held-out cosine of the logits.")] = 0.9999,
    max_p99_rel: Annotated[float, typer.Option("--max-p99-rel", help="Gate: worst held-out p99 relative error of the logits.")] = 1e-2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the accuracy summary as JSON.")] = False,
) -> None:
    """FP16 via ModelOpt AutoCast: OUT/onnx/fp32 -> OUT/onnx/fp16 (+ manifest.json, accuracy.json).

    Gates on the held-out set vs the fp32 ONNX: logits cosine >= 0.9999 and p99 relative error <= 1e-2
    (exit 5 otherwise; the folder is kept for inspection).
    """
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    cfg = Fp16Config(
        calib=calib, calib_samples=calib_samples, heldout_samples=heldout_samples, keep_io_types=keep_io_types,
        components=_components(components), nodes_to_exclude=tuple(exclude_nodes or ()),
        op_types_to_exclude=tuple(exclude_op_types or ()), data_max=data_max, evaluate=evaluate,
        min_cosine=min_cosine, max_p99_rel=max_p99_rel,
    )
    _precision_summary(make_fp16(folder, cfg), as_json)


@precision_app.command("int8")
@handle_errors
def precision_int8_command(
    folder: Annotated[Path, typer.Argument(help="Export folder (export.json + onnx/fp32).")],
    calib: Annotated[Optional[Path], typer.Option("--calib", help="Calibration root with calib/ and heldout/ (default: calibration/ of the repository).")] = None,
    method: Annotated[str, typer.Option("--method", help="Activation ranges: entropy | max | percentile.")] = "percentile",
    percentile: Annotated[float, typer.Option("--percentile", help="Percentile of |x| for --method percentile.")] = 99.99,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="Calibration items (each gives a vision feed, a prefill and a decode feed).")] = 16,
    heldout_samples: Annotated[int, typer.Option("--heldout-samples", help="Held-out items for the accuracy check.")] = 8,
    vision_precision: Annotated[str, typer.Option("--vision-precision", help="vision_encoder in the int8 folder: int8 | fp16 | fp32.")] = "int8",
    decoder_precision: Annotated[str, typer.Option("--decoder-precision", help="decoder in the int8 folder: int8 | fp16 | fp32.")] = "int8",
    high_precision: Annotated[str, typer.Option("--high-precision", help="dtype of the unquantized ops: fp16 | fp32.")] = "fp16",
    exclude_nodes: Annotated[Optional[list[str]], typer.Option("--exclude-nodes", help="Node-name regex left unquantized; repeatable.")] = None,
    quantize_attention: Annotated[bool, typer.Option("--quantize-attention/--no-quantize-attention", help="Also put Q/DQ on the attention BMMs (costs accuracy).")] = False,
    trt_version: Annotated[str, typer.Option("--trt-version", help="TensorRT 10 release named in calibration.cache's header.")] = "10.3.0",
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Check the variant against the fp32 ONNX on the held-out set.")] = True,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="Gate: worst held-out cosine of the logits and the vision features.")] = 0.99,
    as_json: Annotated[bool, typer.Option("--json", help="Print the accuracy summary as JSON.")] = False,
) -> None:
    """INT8 via ModelOpt ONNX PTQ (explicit Q/DQ, calibrated on CPU): OUT/onnx/fp32 -> OUT/onnx/int8.

    Also writes calibration.cache for TensorRT 10 implicit-INT8 builds. Gate on the held-out set vs
    the fp32 ONNX: cosine >= 0.99 on the logits and the vision features (exit 5 otherwise).
    """
    from trt_pipeline.config import Int8Config
    from trt_pipeline.quantize.precision import make_int8

    cfg = Int8Config(
        calib=calib, method=method, percentile=percentile, calib_samples=calib_samples,
        heldout_samples=heldout_samples,
        components={"vision_encoder": vision_precision, "decoder": decoder_precision},
        nodes_to_exclude=tuple(exclude_nodes or ()), disable_mha_qdq=not quantize_attention,
        high_precision_dtype=high_precision, trt_version=trt_version, evaluate=evaluate, min_cosine=min_cosine,
    )
    _precision_summary(make_int8(folder, cfg), as_json)


# --- pipeline / bench: one resumable command from checkpoint to report (issue 7) ---------------


@app.command("pipeline")
@handle_errors
def pipeline_command(
    checkpoint: Annotated[
        Optional[Path],
        typer.Argument(help="Hugging Face checkpoint folder (default: make and use the built-in tiny one)."),
    ] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline.toml (see examples/pipeline.toml).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: engines/NAME).")] = None,
    force: Annotated[Optional[str], typer.Option("--force", help="Re-run this stage and every stage after it "
                                                 "(checkpoint, export, fp16, int8, build, compare, bench, report).")] = None,
    rehash: Annotated[bool, typer.Option("--rehash", help="Re-read every file for the skip decisions (ignore the size/mtime hash cache).")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Checkpoint -> export -> simplify -> fp16 -> int8 -> build -> compare -> bench -> report; unchanged stages are skipped."""
    import json as _json

    from trt_pipeline.pipeline import run_pipeline
    from trt_pipeline.config.pipeline import load_pipeline_config

    cfg = load_pipeline_config(config, checkpoint=checkpoint, out=out, force=force, rehash=rehash or None)
    summary = run_pipeline(cfg, show_progress=progress)
    if as_json:
        typer.echo(_json.dumps(summary.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pipeline {summary.out}")
    for column in ("stage", "status", "seconds", "why"):
        table.add_column(column)
    for result in summary.results:
        reason = result.reason if len(result.reason) <= 90 else result.reason[:87] + "..."
        table.add_row(result.name, result.status, f"{result.seconds:.1f}" if result.seconds else "", reason)
    Console(stderr=True).print(table)
    typer.echo(f"pipeline finished in {summary.seconds:.1f} s; report: {summary.report}")


def _int_list(value: Optional[str]) -> Optional[tuple[int, ...]]:
    from trt_pipeline.errors import ConfigError

    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {value!r}.") from None


@app.command("bench")
@handle_errors
def bench_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Export folder (export.json, onnx/PRECISION/, engines/).")],
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
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Take [bench] from this pipeline.toml (options override it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print bench.json to stdout.")] = False,
) -> None:
    """Prefill/decode latency (p50/p90/p99), tokens/s, peak RSS and a memory roofline -> DIR/reports/bench.{json,png}."""
    import dataclasses as _dc
    import json as _json

    from trt_pipeline.bench.run import bench
    from trt_pipeline.config import BenchConfig

    base = BenchConfig()
    if config is not None:
        from trt_pipeline.config.pipeline import load_pipeline_config

        base = load_pipeline_config(config).bench
    changes = {
        "backends": tuple(p.strip() for p in backends.split(",") if p.strip()) if backends else None,
        "prompt_lengths": _int_list(prompt_lengths), "context_lengths": _int_list(context_lengths),
        "iterations": iterations, "decode_steps": decode_steps, "warmup": warmup, "threads": threads,
        "batch_size": batch_size, "image_patches": image_patches, "isolate": isolate,
    }
    cfg = _dc.replace(base, **{k: v for k, v in changes.items() if v is not None})
    report = bench(folder, cfg)
    if as_json:
        typer.echo(_json.dumps(report.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench {folder} ({report.config['threads']} threads, {report.bandwidth['best_gbps']} GB/s)")
    for column in ("backend", "phase", "tokens", "p50 ms", "p90 ms", "p99 ms", "tokens/s", "peak RSS MB"):
        table.add_column(column)
    for name, entry in report.backends.items():
        if entry.get("status") != "ok":  # already reported as a "skipped: bench NAME (...)" line
            continue
        for phase, key in (("prefill", "length"), ("decode", "context")):
            for row in entry[phase]:
                table.add_row(name, phase, str(row[key]), f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}",
                              f"{row['p99_ms']:.2f}", f"{row['tokens_per_s']}", f"{entry['peak_rss_bytes'] / 1e6:.0f}")
    Console().print(table)
    typer.echo(f"bench written to {report.json_path} and {report.png_path}")
