"""Precision stages: ``OUT/onnx/fp32`` -> ``OUT/onnx/fp16`` (AutoCast) and ``OUT/onnx/int8`` (Q/DQ).

Both stages follow the same steps, all on a CPU:

1. read the export manifest and the calibration root (``calib/`` fits, ``heldout/`` evaluates);
2. tokenize/preprocess the calibration and held-out items and check every one against the
   exported ranges (:class:`~trt_pipeline.quantize.calibration_reader.CalibrationReader`), so a bad
   item fails before anything is written;
3. build real calibration feeds (fp32 ONNX on ONNX Runtime provides image features and KV caches);
4. in a temporary sibling folder (:func:`~trt_pipeline.artifacts.atomic_output_dir`): convert each
   component (AutoCast for fp16; ModelOpt PTQ, AutoCast or a copy for the int8 folder's per-component
   precisions), write ``manifest.json`` (inputs' sha256, config, sample counts, method, nodes kept in
   fp32 / excluded from INT8, per-component I/O dtypes, tool versions), evaluate the variant against the
   fp32 ONNX on the held-out set (``accuracy.json``) and, for int8, write the calibration caches;
5. rename the folder into place; if an accuracy gate failed, raise
   :class:`~trt_pipeline.errors.AccuracyError` afterwards (the complete folder and its
   ``accuracy.json`` are kept for inspection, as ``export`` does with its validation report).

Any other failure (missing/empty calibration folder, undecodable image, out-of-range input, a
ModelOpt error) leaves no ``onnx/fp16`` / ``onnx/int8`` folder behind (an existing one stays as it was).

INT8 calibration caches: ``calibration.cache`` is the single TensorRT 10 legacy cache the engine
builder replays for ``--int8 --legacy-precision-flags`` builds of any component. Tensor names of the
two graphs overlap (both exporters name outputs ``linear_3``, ``matmul``...), so names present in
more than one int8 component are left out of ``calibration.cache`` (those layers then build in
higher precision, never with another graph's scale) and listed in the manifest;
``COMPONENT.calibration.cache`` holds each component's complete cache.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import (
    FileDigest,
    OutputLayout,
    atomic_output_dir,
    sha256_file,
    sha256_tree,
    tool_versions,
    write_json_atomic,
)
from trt_pipeline.artifacts.layout import (
    CALIBRATION_CACHE,
    PRECISION_MANIFEST,
    component_calibration_cache_name,
    external_data_path,
    onnx_file_name,
)
from trt_pipeline.artifacts.manifests import (
    ExportManifest,
    read_export_manifest,
    read_precision_manifest,
    verified_onnx,
)
from trt_pipeline.config import Fp16Config, Int8Config
from trt_pipeline.errors import CalibrationError, ConfigError
from trt_pipeline.progress import log, progress_bar
from trt_pipeline.units import format_bytes

TOOLS = ("onnx", "onnxruntime-gpu", "onnxruntime", "nvidia-modelopt", "onnx-graphsurgeon", "polygraphy",
         "numpy", "torch", "transformers")
CALIB_SPLIT, HELDOUT_SPLIT = "calib", "heldout"
SENSITIVITY_CHART = "sensitivity.png"


# --- inputs ---------------------------------------------------------------------------------
def calibration_folders(calib: Path | str | None, need_heldout: bool = True) -> tuple[Path, Path | None]:
    """(calibration split, held-out split) of a calibration root.

    ``calib`` is the root holding ``calib/`` and ``heldout/`` (default: ``calibration/`` of the
    source checkout); a split folder itself (with ``prompts.jsonl``) is accepted too, its held-out
    sibling then being ``../heldout``.
    """
    from trt_pipeline.quantize.dataset import PROMPTS_FILE, default_root

    root = Path(calib) if calib is not None else default_root()
    if not root.is_dir():
        raise CalibrationError(
            f"calibration folder {root} does not exist.", path=root,
            hint="pass --calib DIR with DIR/calib/prompts.jsonl (+ images/) and DIR/heldout/, "
                 "e.g. the repository's calibration/ folder.",
        )
    if (root / PROMPTS_FILE).is_file():
        calib_dir, heldout_dir = root, root.parent / HELDOUT_SPLIT
    else:
        calib_dir, heldout_dir = root / CALIB_SPLIT, root / HELDOUT_SPLIT
        if not calib_dir.is_dir():
            raise CalibrationError(
                f"calibration folder {root} has no {CALIB_SPLIT}/ split (and no {PROMPTS_FILE}): it is empty or "
                "not a calibration root.", path=root,
                hint=f"expected {root / CALIB_SPLIT / PROMPTS_FILE} and {root / HELDOUT_SPLIT / PROMPTS_FILE}; "
                     "import screenshots with `autoglm-trt calib-import DIR --prompts FILE --out ROOT` or "
                     "regenerate the synthetic set with `python -m tools.make_calibration --out ROOT`.",
            )
    if need_heldout and not heldout_dir.is_dir():
        raise CalibrationError(
            f"held-out split {heldout_dir} not found: the variant cannot be evaluated.", path=heldout_dir,
            hint=f"put the held-out split beside the calibration split ({HELDOUT_SPLIT}/prompts.jsonl + images/).",
        )
    return calib_dir, heldout_dir if heldout_dir.is_dir() else None


def refuse_half_export(manifest: ExportManifest, precision: str) -> None:
    """The precisions start from fp32 weights: a bf16/fp16 export (``--dtype auto`` keeps the real 9B's
    bf16) has no ``onnx/fp32`` folder. Say so, and what to export instead, rather than "not found"."""
    if manifest.precision == "fp32":
        return
    folder = manifest.layout.onnx_dir(manifest.precision)
    fp32 = "`--dtype float32` (streamed like this one; the 9B's fp32 graphs are ~41 GB on disk)"
    if precision == manifest.precision:  # an fp16 export asked for `precision fp16`: it is that already
        instead = f"this export already is {precision}: build or bundle it as it is"
    elif precision == "fp16":
        instead = f"re-export with `--dtype float16`, which writes the fp16 graph itself, or with {fp32}"
    else:
        instead = f"re-export with {fp32} and run `precision {precision}` on that"
    raise ConfigError(
        f"{manifest.path} is a {manifest.raw.get('dtype', manifest.precision)} export ({folder}); `precision "
        f"{precision}` starts from an fp32 export, which writes {manifest.layout.onnx_dir('fp32')}.",
        path=manifest.path,
        hint=f"{instead}. A {manifest.precision} export builds and runs on TensorRT as it is.")


def _components(manifest: ExportManifest, wanted: list[str], out_dir: Path) -> list[str]:
    """The ``wanted`` components the export has, their fp32 graphs present (not yet verified: for the 9B
    that hashes 37 GB, a minute, which the memory refusals come before)."""
    available = list(manifest.components)
    chosen = [c for c in wanted if c in available]
    if not chosen:
        raise ConfigError(
            f"none of the components {wanted} is in {manifest.path} (it has {available}).",
            path=manifest.path,
        )
    for component in chosen:
        verified_onnx(out_dir, "fp32", component, verify=False)  # raises OnnxModelError when missing
    return chosen


def _input_hashes(out_dir: Path, components: list[str], calib_dir: Path, heldout_dir: Path | None) -> dict[str, str]:
    """sha256 of every input. The fp32 graphs' are their manifest's, which :func:`_prepare` has just
    verified against their bytes: hashing them again read the 9B's 37 GB a second time (a minute)."""
    layout = OutputLayout(out_dir)
    fp32 = read_precision_manifest(out_dir, "fp32")
    hashes = {}
    for component in components:
        entry = fp32.component(component)
        path, data = entry.path, external_data_path(entry.path)
        hashes[layout.rel(path)] = entry.digest.sha256 if entry.digest else sha256_file(path)
        if data.is_file():
            verified = entry.external_digest if entry.external_data == data else None
            hashes[layout.rel(data)] = verified.sha256 if verified else sha256_file(data)
    hashes[layout.rel(layout.export_manifest)] = sha256_file(layout.export_manifest)
    hashes[f"calibration:{calib_dir}"] = sha256_tree(calib_dir)
    if heldout_dir is not None:
        hashes[f"heldout:{heldout_dir}"] = sha256_tree(heldout_dir)
    return hashes


def _readers(out_dir: Path, calib_dir: Path, heldout_dir: Path | None, calib_samples: int | None,
             heldout_samples: int | None, decode_steps: int, evaluate: bool, show_progress: bool) -> tuple[Any, Any]:
    """Calibration and held-out readers, prepared (ranges checked) before anything is written."""
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split

    calib = CalibrationReader(out_dir, load_split(calib_dir), calib_samples, decode_steps=decode_steps,
                              show_progress=show_progress, description="calibration inputs")
    calib.prepare()
    heldout = None
    if evaluate and heldout_dir is not None:
        heldout = CalibrationReader(out_dir, load_split(heldout_dir), heldout_samples, decode_steps=decode_steps,
                                    show_progress=show_progress, description="held-out inputs")
        heldout.prepare()
    return calib, heldout


def _component_entry(folder: Path, component: str, precision: str) -> dict[str, Any]:
    from trt_pipeline.graph.autocast import io_dtypes

    path = folder / onnx_file_name(component)
    data = external_data_path(path)
    digest = FileDigest.of(path)
    entry: dict[str, Any] = {
        "file": path.name,
        "external_data": data.name if data.is_file() else None,
        "sha256": digest.sha256,
        "size": digest.size,
        "precision": precision,
        **io_dtypes(path),
    }
    if data.is_file():
        data_digest = FileDigest.of(data)
        entry["external_data_sha256"], entry["external_data_size"] = data_digest.sha256, data_digest.size
    return entry


def _accuracy_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    keep = ("cosine_min", "cosine_mean", "max_abs", "p99_rel", "top1_agreement")
    return {
        "passed": report["passed"],
        "file": "accuracy.json",
        "metrics": {k: {m: v[m] for m in keep if m in v} for k, v in report["metrics"].items() if v},
        "tokens": {k: v for k, v in (report.get("tokens") or {}).items() if k != "per_prompt"},
        "gates": report["gates"],
    }


def _base_manifest(precision: str, stage: str, cfg: Any, hashes: dict[str, str], calib: Any, heldout: Any,
                   calib_dir: Path, heldout_dir: Path | None) -> dict[str, Any]:
    return {
        "precision": precision,
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": hashes,
        "config": cfg.to_dict(),
        "calibration": {"folder": str(calib_dir), **calib.summary(build=False)},
        "heldout": {"folder": str(heldout_dir), **heldout.summary()} if heldout is not None else None,
        "tool_versions": tool_versions(*TOOLS),
    }


def _evaluate(out_dir: Path, precision: str, tmp: Path, heldout: Any, cfg: Any, gates: Any) -> dict[str, Any] | None:
    from trt_pipeline.quantize.accuracy import evaluate_variant

    if heldout is None:
        return None
    return evaluate_variant(out_dir, precision, heldout.items, variant_dir=tmp, reader=heldout, gates=gates,
                            max_new_tokens=cfg.max_new_tokens, raise_on_failure=False,
                            show_progress=heldout.show_progress)


def _finish(target: Path, precision: str, report: dict[str, Any] | None, seconds: float) -> Path:
    from trt_pipeline.quantize.accuracy import ACCURACY_FILE, accuracy_error

    if report is None:
        log(f"{precision} variant written to {target} in {seconds:.1f} s (not evaluated)")
        return target
    metrics, tokens = report["metrics"], report.get("tokens") or {}
    parts = []
    if metrics.get("logits"):
        parts.append(f"logits cosine {metrics['logits']['cosine_min']:.7f}, p99 rel {metrics['logits']['p99_rel']:.3g}")
    if metrics.get("image_features"):
        parts.append(f"vision cosine {metrics['image_features']['cosine_min']:.7f}")
    if tokens:
        forced = tokens.get("teacher_forced_agreement")
        parts.append(f"tokens exact {tokens['exact_matches']}/{tokens['prompts']}, teacher-forced "
                     + ("n/a" if forced is None else f"{forced:.1%}"))
    log(f"{precision} variant written to {target} in {seconds:.1f} s: " + ", ".join(parts))
    if not report["passed"]:
        raise accuracy_error(report, target / ACCURACY_FILE)
    return target


# --- shared set-up ----------------------------------------------------------------------------
def _prepare(out_dir: Path, cfg: Any, show_progress: bool, precision: str,
             calibration_hint: Any = None) -> tuple[list[str], Path, Path | None, Any, Any, dict]:
    """Everything both variants do before writing: components, data folders, readers, input hashes.

    All input errors (missing export, calibration data missing/empty/undecodable/out of range)
    surface here, before the output folder is touched. The calibration feeds are built (every fp32 graph
    runs on them: the decoder's prompts are embedded with the vision encoder's features) when a stage reads
    them: ``calibration_hint(components)`` is then what to do where they do not fit in memory, else None
    (no ``calibration_hint``: every stage reads them, and the hint is the precision's
    :data:`CALIBRATION_ALTERNATIVES` entry).
    """
    manifest = read_export_manifest(out_dir)
    refuse_half_export(manifest, precision)
    components = _components(manifest, list(cfg.components), out_dir)
    hint = CALIBRATION_ALTERNATIVES[precision] if calibration_hint is None else calibration_hint(components)
    # before the graphs are verified and the inputs hashed (both read every byte): a refusal comes at once
    check_memory_up_front(out_dir, precision, components, hint, evaluate=cfg.evaluate)
    for component in components:
        verified_onnx(out_dir, "fp32", component)  # ArtifactIntegrityError when its bytes are not the manifest's
    calib_dir, heldout_dir = calibration_folders(cfg.calib, need_heldout=cfg.evaluate)
    calib, heldout = _readers(out_dir, calib_dir, heldout_dir, cfg.calib_samples, cfg.heldout_samples,
                              cfg.decode_steps, cfg.evaluate, show_progress)
    hashes = _input_hashes(out_dir, components, calib_dir, heldout_dir)
    if hint is not None:
        calib.build()
    return components, calib_dir, heldout_dir, calib, heldout, hashes


# --- fp16 -----------------------------------------------------------------------------------
def make_fp16(out_dir: Path | str, cfg: Fp16Config = Fp16Config(), show_progress: bool = True) -> Path:
    """AutoCast every component of ``OUT/onnx/fp32`` into ``OUT/onnx/fp16``; returns that folder.

    Raises CalibrationError (data missing/empty/undecodable/out of range) or OnnxModelError before
    anything is written, AccuracyError after writing a variant that fails its gate.
    """
    from trt_pipeline.graph.autocast import autocast_file
    from trt_pipeline.quantize.accuracy import gates_for

    start = time.perf_counter()
    out_dir = Path(out_dir)
    refuse_flavour_limits(out_dir, {component: "fp16" for component in cfg.components})
    components, calib_dir, heldout_dir, calib, heldout, hashes = _prepare(out_dir, cfg, show_progress, "fp16")
    layout = OutputLayout(out_dir)
    target = layout.onnx_dir("fp16")
    report = None
    with atomic_output_dir(target) as tmp:
        entries: dict[str, Any] = {}
        with progress_bar(show_progress) as progress:
            task = progress.add_task("autocast fp16", total=len(components))
            for component in components:
                progress.update(task, description=f"autocast {component}")
                result = autocast_file(
                    layout.onnx_path("fp32", component), tmp / onnx_file_name(component),
                    calib.feeds(component), keep_io_types=cfg.keep_io_types, data_max=cfg.data_max,
                    init_max=cfg.init_max, op_types_to_exclude=cfg.op_types_to_exclude,
                    nodes_to_exclude=cfg.nodes_to_exclude,
                )
                entries[component] = {
                    **_component_entry(tmp, component, "fp16"),
                    "nodes_kept_fp32": result.nodes_kept_fp32,
                    "autocast": result.to_dict(),
                }
                progress.advance(task)
        data = _base_manifest("fp16", "autocast", cfg, hashes, calib, heldout, calib_dir, heldout_dir)
        data["components"] = entries
        report = _evaluate(out_dir, "fp16", tmp, heldout, cfg, gates_for("fp16", cfg.min_cosine, cfg.max_p99_rel))
        data["accuracy"] = _accuracy_summary(report)
        data["seconds"] = round(time.perf_counter() - start, 3)
        write_json_atomic(tmp / PRECISION_MANIFEST, data)
    return _finish(target, "fp16", report, time.perf_counter() - start)


@dataclass(frozen=True)
class FlavourLimit:
    """A variant of one component that an export's graph flavour cannot have (refused before anything is written)."""

    component: str
    flag: str  # the ExportManifest property / export flag: decoder_ops (--decoder-ops), vision_ops (--vision-ops)
    flavour: str
    precisions: tuple[str, ...]
    detail: str  # what is refused and why; {precision} is the variant asked for
    hint: str


#: Why each flavour lacks some variants:
#:
#: * ``--decoder-ops onnxruntime``: its GroupQueryAttention and SkipSimplifiedLayerNormalization are float32
#:   kernels on ONNX Runtime's CPU provider, the flavour's only runtime, and INT8 Q/DQ is the TensorRT
#:   variant, which no TensorRT builds from this graph; its precisions are fp32 and int4.
#: * ``--decoder-ops fused``: ModelOpt's INT8 pass re-infers shapes without data propagation; a biased q/k/v
#:   projection comes out of the exporter as Reshape -> Gemm -> Reshape to a computed shape, the opset-23
#:   Attention after it then gets an empty last axis, and ONNX Runtime refuses the graph during
#:   calibration (seen on the trained fixture; a checkpoint whose biases are all zero slips through).
#:   INT8 Q/DQ is the TensorRT variant, and the portable graph serves every TensorRT.
#: * ``--vision-ops onnxruntime``: no TensorRT parses its MultiHeadAttention, and ModelOpt's INT8 pass would
#:   take that op for a TensorRT plugin; fp16 (AutoCast, through stand-ins) and fp32 work.
FLAVOUR_LIMITS = (
    FlavourLimit("decoder", "decoder_ops", "onnxruntime", ("fp16", "int8"),
                 "its decoder has no {precision} variant (ONNX Runtime's GroupQueryAttention / "
                 "SkipSimplifiedLayerNormalization run in float32 on CPUs, and no TensorRT parses the graph).",
                 "make `autoglm-trt precision int4 --activations fp32` for 4-bit weights on ONNX Runtime, or export "
                 "--decoder-ops fused / portable for fp16 and INT8"),
    FlavourLimit("decoder", "decoder_ops", "fused", ("int8",),
                 "its decoder cannot be INT8-quantized by ModelOpt (shape inference stops at the opset-23 Attention "
                 "after the biased projections).",
                 "make INT8 from a portable export (`autoglm-trt export ... --decoder-ops portable`, the default); "
                 "fp16 and int4 work on a fused export"),
    FlavourLimit("vision_encoder", "vision_ops", "onnxruntime", ("int8",),
                 "its vision encoder (ONNX Runtime's MultiHeadAttention) has no INT8 variant (INT8 Q/DQ is for "
                 "TensorRT, which cannot parse it).",
                 "keep the vision encoder fp16 or fp32 (--vision-precision), or export with --vision-ops portable "
                 "for TensorRT"),
)


def refuse_flavour_limits(out_dir: Path, wanted: Mapping[str, str]) -> None:
    """ConfigError, before anything is written, when a component's variant in ``wanted`` (component ->
    precision) is one the export's graph flavour cannot have (:data:`FLAVOUR_LIMITS`)."""
    manifest = read_export_manifest(out_dir)
    for limit in FLAVOUR_LIMITS:
        precision = wanted.get(limit.component)
        if precision in limit.precisions and getattr(manifest, limit.flag) == limit.flavour:
            raise ConfigError(f"{out_dir} is a `--{limit.flag.replace('_', '-')} {limit.flavour}` export: "
                              + limit.detail.format(precision=precision), path=manifest.path, hint=limit.hint)


# --- int8 -----------------------------------------------------------------------------------
def make_int8(out_dir: Path | str, cfg: Int8Config = Int8Config(), show_progress: bool = True) -> Path:
    """ModelOpt INT8 PTQ (explicit Q/DQ, CPU calibration) of ``OUT/onnx/fp32`` into ``OUT/onnx/int8``.

    Components get the precision ``cfg.components`` names (int8 / fp16 AutoCast / fp32 copy).
    Writes ``calibration.cache`` (+ per-component caches) for legacy TensorRT 10 implicit-INT8 builds.
    With ``cfg.target_token_agreement`` the decoder keeps its most INT8-sensitive node groups in
    high precision until the held-out agreement reaches the target
    (:mod:`~trt_pipeline.quantize.int8_search`; ``sensitivity.png`` beside the manifest); an
    unreachable target raises AccuracyError and leaves no folder.
    """
    from trt_pipeline.quantize.accuracy import gates_for
    from trt_pipeline.quantize.int8 import write_calibration_cache

    start = time.perf_counter()
    out_dir = Path(out_dir)
    refuse_flavour_limits(out_dir, cfg.components)
    components, calib_dir, heldout_dir, calib, heldout, hashes = _prepare(out_dir, cfg, show_progress, "int8")
    layout = OutputLayout(out_dir)
    target = layout.onnx_dir("int8")
    report = None
    with atomic_output_dir(target) as tmp:
        entries: dict[str, Any] = {}
        caches: dict[str, dict[str, float]] = {}
        with progress_bar(show_progress) as progress:
            task = progress.add_task("int8", total=len(components))
            for component in components:
                progress.update(task, description=f"{cfg.components[component]} {component}")
                entries[component] = _int8_folder_component(out_dir, component, tmp, calib, heldout, cfg, caches)
                progress.advance(task)
        data = _base_manifest("int8", "int8-ptq", cfg, hashes, calib, heldout, calib_dir, heldout_dir)
        data["method"] = cfg.method
        data["components"] = entries
        if caches:
            data["calibration_cache"] = _write_caches(tmp, caches, cfg.trt_version, write_calibration_cache)
        search = entries.get("decoder", {}).pop("search", None)
        if search is not None:
            data["search"] = {**search, "chart": _sensitivity_chart(tmp, search, cfg.target_token_agreement)}
        report = _evaluate(out_dir, "int8", tmp, heldout, cfg, gates_for("int8", cfg.min_cosine))
        data["accuracy"] = _accuracy_summary(report)
        data["seconds"] = round(time.perf_counter() - start, 3)
        write_json_atomic(tmp / PRECISION_MANIFEST, data)
    return _finish(target, "int8", report, time.perf_counter() - start)


def _int8_folder_component(out_dir: Path, component: str, tmp: Path, calib: Any, heldout: Any, cfg: Int8Config,
                           caches: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One component of the int8 folder at its configured precision; its manifest entry."""
    import tempfile

    from trt_pipeline.graph.autocast import autocast_file
    from trt_pipeline.graph.weight_folding import folded_weights_file
    from trt_pipeline.quantize.int8_search import HeldoutReference, quantize_int8_component

    layout = OutputLayout(out_dir)
    precision = cfg.components[component]
    src, dst = layout.onnx_path("fp32", component), tmp / onnx_file_name(component)
    if precision == "int8":
        reference = HeldoutReference(out_dir, heldout, cfg.max_new_tokens) if heldout is not None else None
        vision = tmp / onnx_file_name("vision_encoder")
        with tempfile.TemporaryDirectory(prefix=".int8-work.", dir=tmp.parent) as scratch:
            src = folded_weights_file(src, Path(scratch) / "folded")  # a streamed export's weights, as initializers
            result, extra = quantize_int8_component(
                component, src, dst, calib.feeds(component), cfg, Path(scratch), reference=reference,
                vision_variant=vision if vision.is_file() else layout.onnx_path("fp32", "vision_encoder"))
        if cfg.smooth:  # scales of the smoothed graph: no legacy cache for the unsmoothed fp32 ONNX
            extra["legacy_calibration_cache"] = "not written: --smooth changes the graph the scales belong to"
        else:
            caches[component] = result.cache_scales
        return {**_component_entry(tmp, component, precision), "nodes_quantized": result.nodes_quantized,
                "nodes_excluded": result.nodes_excluded, "qdq_counts": result.qdq_counts, "int8": result.to_dict(),
                **extra}
    if precision == "fp16":
        fp16 = cfg.fp16_config()
        auto = autocast_file(src, dst, calib.feeds(component), keep_io_types=fp16.keep_io_types,
                             data_max=fp16.data_max, init_max=fp16.init_max)
        return {**_component_entry(tmp, component, precision), "nodes_kept_fp32": auto.nodes_kept_fp32,
                "autocast": auto.to_dict()}
    _copy_model(src, dst)
    return _component_entry(tmp, component, precision)


def _sensitivity_chart(folder: Path, search: dict[str, Any], target: float | None) -> str:
    """``sensitivity.png`` (per-group KL, kept groups marked) in ``folder``; its file name."""
    from trt_pipeline.quantize.sensitivity import GroupSensitivity, sensitivity_chart

    results = [GroupSensitivity(**row) for row in search["sensitivity"]]
    return sensitivity_chart(folder / SENSITIVITY_CHART, results, search["kept_high_precision"], target).name

# --- int4 -----------------------------------------------------------------------------------
def make_int4(out_dir: Path | str, cfg: Any = None, show_progress: bool = True) -> Path:
    """Weight-only INT4 (ModelOpt AWQ / RTN, :mod:`trt_pipeline.quantize.int4`) into ``OUT/onnx/int4``.

    Components get the precision ``cfg.components`` names (int4 / fp16 AutoCast / fp32 copy; the
    vision encoder is fp16 by default). Same inputs, manifest, evaluation and gates as int8.
    """
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.accuracy import gates_for

    cfg = cfg if cfg is not None else Int4Config()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    components, calib_dir, heldout_dir, calib, heldout, hashes = _prepare(
        out_dir, cfg, show_progress, "int4",
        lambda components: int4_calibration_hint(int4_feed_needs(out_dir, cfg, components)))
    layout = OutputLayout(out_dir)
    target = layout.onnx_dir("int4")
    with atomic_output_dir(target) as tmp:
        entries: dict[str, Any] = {}
        with progress_bar(show_progress) as progress:
            task = progress.add_task("int4", total=len(components))
            for component in components:
                progress.update(task, description=f"{cfg.components[component]} {component}")
                def on_weight(done: int, total: int, component: str = component) -> None:
                    progress.update(task, description=f"{cfg.components[component]} {component}: weight {done}/{total}")

                entries[component] = _int4_component(out_dir, tmp, component, cfg, calib, on_weight)
                progress.advance(task)
        data = _base_manifest("int4", "int4-weight-only", cfg, hashes, calib, heldout, calib_dir, heldout_dir)
        data["method"] = cfg.method
        data["components"] = entries
        report = _evaluate(out_dir, "int4", tmp, heldout, cfg, gates_for("int4", cfg.min_cosine))
        data["accuracy"] = _accuracy_summary(report)
        data["seconds"] = round(time.perf_counter() - start, 3)
        write_json_atomic(tmp / PRECISION_MANIFEST, data)
    return _finish(target, "int4", report, time.perf_counter() - start)


#: the ``precision int4`` option that sets each component's precision in the int4 folder
INT4_PRECISION_FLAGS = {"vision_encoder": "--vision-precision", "decoder": "--decoder-precision"}
#: what spares an int4 component its calibration run (ONNX Runtime's int4: quantized one weight at a time)
INT4_WITHOUT_FEEDS = "--method rtn --activations fp32"


def int4_feed_needs(out_dir: Path, cfg: Any, components: list[str]) -> dict[str, str]:
    """The components whose ``precision int4`` stage reads calibration feeds (whose building runs fp32 graphs:
    the real 9B's decoder is 35 GB in ONNX Runtime), each with the option that spares it them ("" when none
    does). AWQ needs the activations and fp16 activations AutoCast's reference run; an fp16 component (the
    vision encoder by default) AutoCast's reference run; a graph under 2 GB the opset upgrade's check. RTN of
    a large graph to fp32 activations (ONNX Runtime's int4 of the 9B) and an fp32 copy need none."""
    from trt_pipeline.graph.autocast import has_external_data

    layout = OutputLayout(out_dir)
    needs = {}
    for component in components:
        precision = cfg.components[component]
        if precision == "fp16":
            needs[component] = f"{INT4_PRECISION_FLAGS[component]} fp32"
        elif precision == "int4" and (cfg.method != "rtn" or cfg.activations == "fp16"):
            needs[component] = INT4_WITHOUT_FEEDS
        elif precision == "int4" and not has_external_data(layout.onnx_path("fp32", component)):
            needs[component] = ""
    return needs


def int4_calibration_hint(needs: Mapping[str, str]) -> str | None:
    """What to do when the feeds of :func:`int4_feed_needs` do not fit (None: no stage reads feeds): the options
    that spare each component its calibration run, together (a user who follows the hint is not refused again
    for another component)."""
    if not needs:
        return None
    options = [option for option in dict.fromkeys(needs.values()) if option]
    spare = (f"pass {' '.join(options)} (no calibration run: fp32 copies, ONNX Runtime's int4 quantized one "
             "weight at a time), or " if options else "")
    return spare + "calibrate on a machine with more memory."


#: what to do instead of evaluating, when the fp32 decoder does not fit in memory
EVALUATION_ALTERNATIVE = ("pass --no-evaluate (the variant is written, not compared), or evaluate on a machine with "
                          "more memory.")

#: what to do instead of calibrating, per precision, when the fp32 graphs do not fit in memory (int4's
#: depends on what reads the feeds: :func:`int4_calibration_hint`)
CALIBRATION_ALTERNATIVES = {
    "fp16": "export with --dtype float16 (it writes an fp16 graph itself, with no calibration run), or run "
            "precision fp16 on a machine with more memory.",
    "int8": "calibrate on a machine with more memory (INT8 needs the activations of the fp32 graphs).",
}


def check_memory_up_front(out_dir: Path, precision: str, components: list[str], calibration_hint: str | None, *,
                          evaluate: bool) -> None:
    """The stages of a precision run that load whole fp32 graphs into ONNX Runtime, checked before any work:
    the accuracy gates (the fp32 decoder) when ``evaluate``, and building the calibration feeds (the fp32
    graphs of ``components``, all open at once) when a stage reads them (``calibration_hint``: what to do
    instead; None: none does). The 9B's fp32 decoder alone is 35 GB, so on an ordinary machine the kernel
    would otherwise kill the run after the variant is made.

    Every stage that cannot fit is named in ONE ConfigError, with every flag that avoids it: a user who
    fixes the first refusal is not refused again by the second.
    """
    from trt_pipeline.quantize.memory_needs import memory_shortfall

    layout = OutputLayout(out_dir)
    stages = []
    if evaluate:
        stages.append(("the accuracy gates run", [layout.onnx_path("fp32", "decoder")], EVALUATION_ALTERNATIVE))
    if calibration_hint is not None:
        stages.append((f"building the {precision} calibration feeds runs",
                       [layout.onnx_path("fp32", component) for component in components], calibration_hint))
    refused, hints, available = [], [], 0
    for doing, graphs, hint in stages:
        shortfall = memory_shortfall(graphs)
        if shortfall is not None:
            size, available = shortfall
            names = ", ".join(str(graph) for graph in graphs if graph.is_file())
            refused.append((f"{doing} {names} ({format_bytes(size, 1)}) in ONNX Runtime", graphs[0]))
            hints.append(hint)
    if refused:
        raise ConfigError(f"{'; and '.join(text for text, _ in refused)}: more than the "
                          f"{format_bytes(available, 1)} of memory available here.", path=refused[0][1],
                          hint=" Also: ".join(hints))


def _int4_component(out_dir: Path, folder: Path, component: str, cfg: Any, calib: Any,
                    on_weight: Any = None) -> dict[str, Any]:
    """One component of the int4 folder: INT4 weights, an fp16 AutoCast or an fp32 copy; its manifest entry."""
    from trt_pipeline.graph.autocast import autocast_file
    from trt_pipeline.quantize.int4 import quantize_int4_file

    precision = cfg.components[component]
    src = OutputLayout(out_dir).onnx_path("fp32", component)
    dst = folder / onnx_file_name(component)
    extra: dict[str, Any] = {}
    if precision == "int4":
        inputs = read_export_manifest(out_dir).components[component].inputs
        feeds = calib.feeds(component) if calib.built else []  # RTN of a large graph to fp32 activations: none
        result = quantize_int4_file(src, dst, feeds, inputs=inputs, method=cfg.method,
                                    block_size=cfg.block_size, activations=cfg.activations,
                                    quantize_lm_head=cfg.quantize_lm_head, nodes_to_exclude=cfg.nodes_to_exclude,
                                    opset=cfg.opset, on_weight=on_weight)
        extra = {"nodes_quantized": result.nodes_quantized, "nodes_excluded": result.nodes_excluded,
                 "int4": result.to_dict()}
    elif precision == "fp16":
        auto = autocast_file(src, dst, calib.feeds(component), keep_io_types=True)
        extra = {"nodes_kept_fp32": auto.nodes_kept_fp32, "autocast": auto.to_dict()}
    else:
        _copy_model(src, dst)
    return {**_component_entry(folder, component, precision), **extra}


def _write_caches(folder: Path, caches: dict[str, dict[str, float]], trt_version: str, writer: Any) -> dict[str, Any]:
    """``COMPONENT.calibration.cache`` per component + the merged ``calibration.cache`` (collisions dropped)."""
    seen: dict[str, list[str]] = {}
    for component, scales in caches.items():
        for name in scales:
            seen.setdefault(name, []).append(component)
    collisions = sorted(name for name, owners in seen.items() if len(owners) > 1)
    merged = {name: scale for scales in caches.values() for name, scale in scales.items() if name not in collisions}
    writer(folder / CALIBRATION_CACHE, merged, trt_version)
    per_component = {}
    for component, scales in caches.items():
        name = component_calibration_cache_name(component)
        writer(folder / name, scales, trt_version)
        per_component[component] = {"file": name, "entries": len(scales)}
    header = (folder / CALIBRATION_CACHE).read_text(encoding="utf-8").splitlines()[0]
    return {
        "file": CALIBRATION_CACHE,
        "header": header,
        "entries": len(merged),
        "scale": "amax / 127 (float32, hex of IEEE-754 bits, big-endian)",
        "per_component": per_component,
        "dropped_name_collisions": collisions,
    }


def _copy_model(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)
    data = external_data_path(src)
    if data.is_file():
        shutil.copy2(data, external_data_path(dst))


__all__ = ["CALIBRATION_CACHE", "calibration_folders", "make_fp16", "make_int4", "make_int8"]
