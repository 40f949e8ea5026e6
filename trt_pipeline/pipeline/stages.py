"""The stages of ``autoglm-trt pipeline``: checkpoint -> export (+simplify, validation) -> fp16 -> int8
-> build -> compare -> bench -> report, resumable and incremental.

Stages are a registry (:func:`default_stages`, a list of :class:`Stage`), not an if/elif chain. Each
stage declares

* ``inputs``: named files/folders whose *content* identifies its work (the checkpoint, an ONNX
  folder, the calibration data, ...);
* ``config``: its frozen config (from pipeline.toml / CLI), as JSON;
* ``outputs``: the files/folders under OUT it writes;
* ``run``: the library call that does the work (stages write atomically themselves);
* ``unavailable``: why it cannot run on this machine (TensorRT/GPU missing, no ONNX folder to
  build): it is then skipped with one ``skipped: STAGE (...)`` line and the run continues.

**Skipping** (:mod:`~trt_pipeline.pipeline.state`). ``OUT/pipeline_state.json`` (written
atomically after every state change) keeps per stage the sha256 of its inputs + config (``key``) and the sha256 of every output file. A stage is
skipped when its key is unchanged AND every recorded output still exists with the same hash.
Otherwise it runs, and the reason is printed (``config changed``, ``input onnx/fp32 changed``,
``output reports/bench.json missing``...). Because downstream inputs are upstream outputs by
content, a re-run that changes an artifact re-runs exactly the stages that consume it.
``--force STAGE`` re-runs STAGE and every stage after it.

**Resuming.** A stage is marked ``running`` before it starts and ``done`` only after its outputs
are hashed; an interrupted or failed stage (Ctrl-C, crash, exception) therefore re-runs on the next
invocation while the finished stages before it are skipped. Every stage writes through temporary
files/folders renamed into place (the export stage builds in ``OUT/.work/`` and moves the finished
pieces in), so an interruption never leaves a half-written artifact under its final name.

**Hashing cost** (:mod:`~trt_pipeline.pipeline.hashing`). File hashes are cached in the state
file keyed by path, size, mtime and inode (like git's index; every stage replaces files by rename,
which gives a new inode); ``--rehash`` ignores the cache and re-reads every byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, atomic_output_dir, read_export_manifest
from trt_pipeline.artifacts.layout import WORK_DIR
from trt_pipeline.config import PipelineConfig
from trt_pipeline.errors import AccuracyError
from trt_pipeline.pipeline.hashing import HashCache
from trt_pipeline.pipeline.state import now
from trt_pipeline.config.pipeline import config_json
from trt_pipeline.progress import log


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


@dataclass
class RunContext:
    """What stage functions see: the config, OUT, the checkpoint, the hash cache and the state."""

    cfg: PipelineConfig
    out: Path
    checkpoint: Path
    show_progress: bool
    hashes: HashCache
    state: dict[str, Any]

    def section(self, name: str) -> Any:
        return self.cfg.section(name)

    def path(self, rel: str) -> Path:
        return self.out / rel

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.out)

    def entry(self, path: Path) -> tuple[str, Path]:
        """``(name relative to OUT, path)``: how inputs and outputs are keyed in the state file."""
        return self.layout.rel(path), path


def _available(ctx: RunContext) -> str | None:
    return None


def _enabled(ctx: RunContext) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (see the module docstring)."""

    name: str
    description: str
    run: Callable[[RunContext], dict[str, Any] | None]
    inputs: Callable[[RunContext], dict[str, Path]]
    outputs: Callable[[RunContext], list[str]]
    config: Callable[[RunContext], Any]
    unavailable: Callable[[RunContext], str | None] = _available
    enabled: Callable[[RunContext], bool] = _enabled
    version: int = 1
    #: errors that mean "complete outputs, but an accuracy gate failed": the stage is recorded as
    #: done (its reports are valid and re-running would not change them), the pipeline goes on to
    #: the report, and the error is raised at the end (exit code of AccuracyError).
    gate_errors: tuple[type[BaseException], ...] = ()


# -- checkpoint ---------------------------------------------------------------------------------


def _run_checkpoint(ctx: RunContext) -> dict[str, Any]:
    """The built-in checkpoint goes to ``OUT/hf`` (the export's HF folder): one copy, weights included."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    write_checkpoint(ctx.layout.hf_dir, preset=ctx.cfg.preset, seed=ctx.cfg.seed, overwrite=True,
                     progress=ctx.show_progress and ctx.cfg.preset != "tiny")
    return {"preset": ctx.cfg.preset, "seed": ctx.cfg.seed}


# -- export (+ simplify + fp32 validation inside the exporter) -----------------------------------

def _export_entries(layout: OutputLayout) -> tuple[Path, ...]:
    """What the export stage moves into OUT, manifest last (see :func:`_run_export`)."""
    return (layout.hf_dir, layout.embeddings_dir, layout.onnx_dir("fp32"), layout.validation_report,
            layout.export_manifest)


def _replace_entry(src: Path, dst: Path) -> None:
    """Move a finished file/folder onto ``dst``; a folder goes through the shared atomic swap."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        with atomic_output_dir(dst) as tmp:
            os.replace(src, tmp)  # the finished folder takes the (empty) temporary folder's place
    else:
        os.replace(src, dst)


def _run_export(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.export.exporter import export

    cfg = ctx.section("export")
    layout = ctx.layout
    staging = layout.work_dir / "export"
    staged = OutputLayout(staging)
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            export(ctx.checkpoint, staging, cfg, show_progress=ctx.show_progress)
        except AccuracyError as error:
            # keep the (complete) validation report for inspection, then fail the stage
            if staged.validation_report.is_file():
                _replace_entry(staged.validation_report, layout.validation_report)
            raise type(error)(error.message.replace(str(staging), str(ctx.out)),
                              path=layout.validation_report, hint=error.hint) from None
        # export.json goes first (out) and last (in): while pieces are swapped the folder is visibly incomplete
        with contextlib.suppress(FileNotFoundError):
            layout.export_manifest.unlink()
        for target in _export_entries(layout):
            if target == layout.hf_dir and ctx.checkpoint == layout.hf_dir.resolve():
                continue  # the built-in checkpoint already is OUT/hf (weights included): keep that one copy
            source = staged.resolve(layout.rel(target))
            if source.exists():
                _replace_entry(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = read_export_manifest(ctx.out)
    return {"components": list(manifest.components), "timings_s": dict(manifest.timings_s)}


def _export_outputs(ctx: RunContext) -> list[str]:
    layout = ctx.layout
    outputs = [layout.export_manifest, layout.hf_dir, layout.embeddings_dir, layout.onnx_dir("fp32")]
    if ctx.section("export").validate:
        outputs.append(layout.validation_report)
    return [layout.rel(p) for p in outputs]


# -- precision (fp16 AutoCast, int8 Q/DQ) --------------------------------------------------------


def _calibration_root(cfg: Any) -> Path:
    calib = getattr(cfg, "calib", None)
    if calib is not None:
        return Path(calib)
    from trt_pipeline.quantize.dataset import default_root

    return default_root()


def _precision_inputs(ctx: RunContext, name: str) -> dict[str, Path]:
    root = _calibration_root(ctx.section(name))
    layout = ctx.layout
    return {**dict(ctx.entry(p) for p in (layout.onnx_dir("fp32"), layout.export_manifest, layout.embeddings_dir,
                                           layout.hf_dir)),
            "calibration/calib": root / "calib", "calibration/heldout": root / "heldout"}


def _run_fp16(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.quantize.precision import make_fp16

    path = make_fp16(ctx.out, ctx.section("fp16"), show_progress=ctx.show_progress)
    return {"folder": str(path)}


def _run_int8(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.quantize.precision import make_int8

    path = make_int8(ctx.out, ctx.section("int8"), show_progress=ctx.show_progress)
    return {"folder": str(path)}


# -- build (TensorRT) ----------------------------------------------------------------------------


def _tensorrt_context(ctx: RunContext) -> Any:
    """The TensorRT context (cached on the run context); raises TensorRTUnavailableError."""
    cached = ctx.state.setdefault("_runtime", {})
    if "trt" not in cached:
        from trt_pipeline.engine.tensorrt_import import require_tensorrt

        cached["trt"] = require_tensorrt(ctx.section("build").device_index)
    return cached["trt"]


def _build_unavailable(ctx: RunContext) -> str | None:
    from trt_pipeline.errors import TensorRTUnavailableError

    try:
        _tensorrt_context(ctx)
    except TensorRTUnavailableError as error:
        return f"TensorRT/GPU not available: {error.message}"
    if not _build_precisions(ctx):
        return f"no ONNX folder for the build precisions {list(ctx.section('build').precisions)} under {ctx.layout.onnx_root}"
    return None


def _build_precisions(ctx: RunContext) -> list[str]:
    return [p for p in ctx.section("build").precisions if ctx.layout.onnx_dir(p).is_dir()]


def _build_config(ctx: RunContext) -> Any:
    trt = _tensorrt_context(ctx)
    return {"build": config_json(ctx.section("build")), "tensorrt": str(trt.version),
            "gpu": {"name": trt.gpu.name, "compute_capability": trt.gpu.compute_capability}}


def _run_build(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig

    section = ctx.section("build")
    trt = _tensorrt_context(ctx)
    built = []
    for precision in _build_precisions(ctx):
        results = build_engines(BuildConfig.from_build_options(ctx.out, precision, section), ctx=trt, show_progress=ctx.show_progress)
        built += [str(r.engine_path) for r in results]
    for precision in sorted(set(section.precisions) - set(_build_precisions(ctx))):
        log(f"skipped: build {precision} (no {ctx.layout.rel(ctx.layout.onnx_dir(precision))} folder)")
    return {"engines": built}


# -- compare -------------------------------------------------------------------------------------


def _compare_inputs(ctx: RunContext) -> dict[str, Path]:
    from trt_pipeline.quantize.dataset import default_root

    cfg = ctx.section("compare")
    layout = ctx.layout
    inputs = {**dict(ctx.entry(p) for p in (layout.export_manifest, layout.embeddings_dir, layout.hf_dir)),
              "checkpoint": Path(cfg.checkpoint) if cfg.checkpoint else ctx.checkpoint,
              "heldout": Path(cfg.data) if cfg.data else default_root() / "heldout"}
    for precision in layout.precisions():
        inputs.update([ctx.entry(layout.onnx_dir(precision))])
    if cfg.engines:
        inputs.update([ctx.entry(layout.engines_dir)])
    return inputs


def _run_compare(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.compare.run import compare

    report = compare(ctx.out, ctx.section("compare"), show_progress=ctx.show_progress)
    return {"passed": bool(report)}


COMPARE_OUTPUTS = ["compare.json", "compare.md", "compare_errors.png", "compare_polygraphy"]


# -- bench ---------------------------------------------------------------------------------------


def _bench_inputs(ctx: RunContext) -> dict[str, Path]:
    from trt_pipeline.bench.backends import parse_backend

    cfg = ctx.section("bench")
    layout = ctx.layout
    inputs = dict(ctx.entry(p) for p in (layout.export_manifest, layout.embeddings_dir, layout.hf_dir))
    for name in cfg.backends:
        cls, precision = parse_backend(name)
        if precision and cls.family == "ort":
            inputs.update([ctx.entry(layout.onnx_dir(precision))])
        elif precision:
            inputs[f"{layout.rel(layout.engines_dir)}/{precision}"] = layout.engines_dir
        else:
            inputs["checkpoint"] = ctx.checkpoint
    return inputs


def _bench_config(ctx: RunContext) -> Any:
    import platform

    from trt_pipeline.bench.backends import default_threads
    from trt_pipeline.bench.run import machine_info

    machine = machine_info(ctx.section("bench").threads or default_threads())
    # a benchmark belongs to a machine: another CPU (or thread count) means new numbers
    return {"bench": config_json(ctx.section("bench")), "machine": {
        "cpu": machine["cpu"], "logical_cpus": machine["logical_cpus"], "threads": machine["threads_used"],
        "node": platform.node()}}


def _run_bench(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.bench.run import bench

    report = bench(ctx.out, ctx.section("bench"), show_progress=ctx.show_progress)
    return {"measured": report.measured}


# -- report --------------------------------------------------------------------------------------


def _report_inputs(ctx: RunContext) -> dict[str, Path]:
    from trt_pipeline.report import artifact_files

    return {f.relative_to(ctx.out).as_posix(): f for f in artifact_files(ctx.out)}


def _run_report(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.report import write_report

    state = {k: v for k, v in ctx.state.items() if not k.startswith("_")}
    state["stages"] = {**state.get("stages", {}), "report": {"status": "this file", "finished": now()}}
    path = write_report(ctx.out, state, hash_file=ctx.hashes.file)
    return {"report": str(path)}


def _with_tools(config: Any, *distributions: str) -> dict[str, Any]:
    """A stage config plus the versions of the tools that produce its artifacts (an upgrade re-runs it)."""
    from trt_pipeline.artifacts import tool_versions

    return {"config": config_json(config), "tools": tool_versions(*distributions)}


EXPORT_TOOLS = ("torch", "transformers", "onnx", "onnxsim", "onnxruntime", "onnxruntime-gpu")
PRECISION_TOOLS = ("onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt")


def default_stages() -> list[Stage]:
    """The pipeline's stage registry, in execution order (names: :data:`~trt_pipeline.config.PIPELINE_STAGES`)."""
    return [
        Stage("checkpoint", "built-in random checkpoint (when none is given)", _run_checkpoint,
              inputs=lambda ctx: {}, outputs=lambda ctx: [ctx.layout.rel(ctx.layout.hf_dir)],
              config=lambda ctx: {"preset": ctx.cfg.preset, "seed": ctx.cfg.seed},
              enabled=lambda ctx: ctx.cfg.checkpoint is None),
        Stage("export", "torch -> ONNX, onnxsim simplification, validation vs transformers", _run_export,
              inputs=lambda ctx: {"checkpoint": ctx.checkpoint}, outputs=_export_outputs,
              config=lambda ctx: _with_tools(ctx.section("export"), *EXPORT_TOOLS)),
        Stage("fp16", "FP16 ONNX (ModelOpt AutoCast)", _run_fp16,
              inputs=lambda ctx: _precision_inputs(ctx, "fp16"),
              outputs=lambda ctx: [ctx.layout.rel(ctx.layout.onnx_dir("fp16"))],
              config=lambda ctx: _with_tools(ctx.section("fp16"), *PRECISION_TOOLS), gate_errors=(AccuracyError,)),
        Stage("int8", "INT8 Q/DQ ONNX (calibrated on CPU)", _run_int8,
              inputs=lambda ctx: _precision_inputs(ctx, "int8"),
              outputs=lambda ctx: [ctx.layout.rel(ctx.layout.onnx_dir("int8"))],
              config=lambda ctx: _with_tools(ctx.section("int8"), *PRECISION_TOOLS), gate_errors=(AccuracyError,)),
        Stage("build", "TensorRT engines (GPU only)", _run_build,
              inputs=lambda ctx: dict(ctx.entry(p) for p in (ctx.layout.export_manifest,
                                      *(ctx.layout.onnx_dir(p) for p in _build_precisions(ctx)))),
              outputs=lambda ctx: [ctx.layout.rel(ctx.layout.engines_dir)], config=_build_config,
              unavailable=_build_unavailable),
        Stage("compare", "torch vs ONNX Runtime (vs TensorRT): tensors and tokens", _run_compare,
              inputs=_compare_inputs, outputs=lambda ctx: [ctx.layout.rel(ctx.layout.report(n)) for n in COMPARE_OUTPUTS],
              config=lambda ctx: config_json(ctx.section("compare")),
              gate_errors=(AccuracyError,)),
        Stage("bench", "latency, throughput, memory, roofline", _run_bench,
              inputs=_bench_inputs,
              outputs=lambda ctx: [ctx.layout.rel(ctx.layout.report(n)) for n in ("bench.json", "bench.png")],
              config=_bench_config),
        Stage("report", "REPORT.md: artifacts, accuracy and benchmark tables", _run_report,
              inputs=_report_inputs, outputs=lambda ctx: [ctx.layout.rel(ctx.layout.report("REPORT.md"))],
              config=lambda ctx: {"format": 1}),
    ]


__all__ = ["WORK_DIR", "RunContext", "Stage", "default_stages"]
