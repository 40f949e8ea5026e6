"""``autoglm-trt pipeline``: checkpoint -> export (+simplify, validation) -> fp16 -> int8 -> build ->
compare -> bench -> report, resumable and incremental.

Stages are a registry (:func:`default_stages`, a list of :class:`Stage`), not an if/elif chain. Each
stage declares

* ``inputs``: named files/folders whose *content* identifies its work (the checkpoint, an ONNX
  folder, the calibration data, ...);
* ``config``: its frozen config (from pipeline.toml / CLI), as JSON;
* ``outputs``: the files/folders under OUT it writes;
* ``run``: the library call that does the work (stages write atomically themselves);
* ``unavailable``: why it cannot run on this machine (TensorRT/GPU missing, a stage module not
  installed): it is then skipped with one ``skipped: STAGE (...)`` line and the run continues.

**Skipping.** ``OUT/pipeline_state.json`` (written atomically after every state change) keeps per
stage the sha256 of its inputs + config (``key``) and the sha256 of every output file. A stage is
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

**Hashing cost.** File hashes are cached in the state file keyed by path, size, mtime and inode
(like git's index; every stage replaces files by rename, which gives a new inode); ``--rehash``
ignores the cache and re-reads every byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import read_json, sha256_file, sha256_json, write_json_atomic
from trt_pipeline.config import PIPELINE_STAGES, PipelineConfig
from trt_pipeline.errors import AccuracyError, CheckpointError, ConfigError, PipelineError
from trt_pipeline.config.pipeline import config_json
from trt_pipeline.progress import log

STATE_NAME = "pipeline_state.json"
STATE_FORMAT_VERSION = 1
WORK_DIR = ".work"
LOCK_NAME = ".pipeline.lock"
CHECKPOINT_DIR = "checkpoint"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Hashing with a stat-keyed cache
# --------------------------------------------------------------------------------------------


class HashCache:
    """sha256 of files, cached by resolved path + (size, mtime_ns, inode); ``rehash`` re-reads each file once per run."""

    def __init__(self, entries: dict[str, list[Any]] | None = None, rehash: bool = False) -> None:
        self.entries = dict(entries or {})
        self.rehash = rehash
        self.hashed_bytes = 0
        self._fresh: set[str] = set()

    def file(self, path: Path) -> str:
        path = Path(path)
        key = str(path.resolve())
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cached = self.entries.get(key)
        if cached and cached[:3] == signature and (not self.rehash or key in self._fresh):
            return cached[3]
        digest = sha256_file(path)
        self.hashed_bytes += stat.st_size
        self.entries[key] = [*signature, digest]
        self._fresh.add(key)
        return digest

    def tree(self, path: Path, base: Path | None = None) -> dict[str, str]:
        """{relative posix path: sha256} of a file or of every non-hidden file under a folder."""
        path = Path(path)
        base = base if base is not None else (path.parent if path.is_file() else path)
        if path.is_file():
            return {path.relative_to(base).as_posix(): self.file(path)}
        if not path.is_dir():
            return {}
        out = {}
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path)
            if file.is_file() and not any(part.startswith(".") for part in rel.parts):
                out[file.relative_to(base).as_posix()] = self.file(file)
        return out

    def fingerprint(self, path: Path) -> str:
        """One sha256 for a file or folder (names + contents); ``"missing"`` when absent."""
        path = Path(path)
        if not path.exists():
            return "missing"
        if path.is_file():
            return self.file(path)
        return sha256_json(self.tree(path))

    def to_json(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.entries.items() if os.path.exists(k)}


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
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    write_checkpoint(ctx.path(CHECKPOINT_DIR), preset=ctx.cfg.preset, seed=ctx.cfg.seed, overwrite=True,
                     progress=ctx.show_progress and ctx.cfg.preset != "tiny")
    return {"preset": ctx.cfg.preset, "seed": ctx.cfg.seed}


# -- export (+ simplify + fp32 validation inside the exporter) -----------------------------------

EXPORT_ENTRIES = ("hf", "embeddings", "onnx/fp32", "reports/validation.json", "export.json")


def _replace_entry(src: Path, dst: Path) -> None:
    """Move a finished file/folder onto ``dst`` (a folder is swapped via a hidden ``.old`` sibling)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if dst.exists():
            os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _run_export(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.errors import AccuracyError
    from trt_pipeline.export.exporter import export

    cfg = ctx.section("export")
    staging = ctx.path(WORK_DIR) / "export"
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            export(ctx.checkpoint, staging, cfg, show_progress=ctx.show_progress)
        except AccuracyError as error:
            # keep the (complete) validation report for inspection, then fail the stage
            report = staging / "reports" / "validation.json"
            if report.is_file():
                _replace_entry(report, ctx.path("reports/validation.json"))
            raise type(error)(error.message.replace(str(staging), str(ctx.out)),
                              path=ctx.path("reports/validation.json"), hint=error.hint) from None
        # export.json goes first (out) and last (in): while pieces are swapped the folder is visibly incomplete
        with contextlib.suppress(FileNotFoundError):
            ctx.path("export.json").unlink()
        for rel in EXPORT_ENTRIES:
            if (staging / rel).exists():
                _replace_entry(staging / rel, ctx.path(rel))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = read_json(ctx.path("export.json"))
    return {"components": list(manifest.get("components", {})), "timings_s": manifest.get("timings_s", {})}


def _export_outputs(ctx: RunContext) -> list[str]:
    outputs = ["export.json", "hf", "embeddings", "onnx/fp32"]
    if ctx.section("export").validate:
        outputs.append("reports/validation.json")
    return outputs


# -- precision (fp16 AutoCast, int8 Q/DQ) --------------------------------------------------------


def _precision_unavailable(ctx: RunContext, function: str) -> str | None:
    try:
        module = __import__("trt_pipeline.quantize.precision", fromlist=[function])
    except ImportError as error:
        return f"{function.split('_')[-1]} not available: trt_pipeline.quantize.precision cannot be imported ({error})"
    if not hasattr(module, function):
        return f"trt_pipeline.quantize.precision has no {function}()"
    return None


def _calibration_root(cfg: Any) -> Path:
    calib = getattr(cfg, "calib", None)
    if calib is not None:
        return Path(calib)
    from trt_pipeline.quantize.dataset import default_root

    return default_root()


def _precision_inputs(ctx: RunContext, name: str) -> dict[str, Path]:
    root = _calibration_root(ctx.section(name))
    return {"onnx/fp32": ctx.path("onnx/fp32"), "export.json": ctx.path("export.json"),
            "embeddings": ctx.path("embeddings"), "hf": ctx.path("hf"),
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
        import trt_pipeline.engine.builder  # noqa: F401
    except ImportError as error:
        return f"build not available: the TensorRT engine builder cannot be imported ({error})"
    try:
        _tensorrt_context(ctx)
    except TensorRTUnavailableError as error:
        return f"TensorRT/GPU not available: {error.message}"
    if not _build_precisions(ctx):
        return f"no ONNX folder for the build precisions {list(ctx.section('build').precisions)} under {ctx.out / 'onnx'}"
    return None


def _build_precisions(ctx: RunContext) -> list[str]:
    return [p for p in ctx.section("build").precisions if ctx.path(f"onnx/{p}").is_dir()]


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
        log(f"skipped: build {precision} (no onnx/{precision} folder)")
    return {"engines": built}


# -- compare -------------------------------------------------------------------------------------


def _compare_unavailable(ctx: RunContext) -> str | None:
    try:
        from trt_pipeline.compare.run import compare  # noqa: F401
    except ImportError as error:
        return f"compare not available: trt_pipeline.compare.run cannot be imported ({error})"
    return None


def _compare_inputs(ctx: RunContext) -> dict[str, Path]:
    from trt_pipeline.quantize.dataset import default_root

    cfg = ctx.section("compare")
    inputs = {"export.json": ctx.path("export.json"), "embeddings": ctx.path("embeddings"), "hf": ctx.path("hf"),
              "checkpoint": Path(cfg.checkpoint) if cfg.checkpoint else ctx.checkpoint,
              "heldout": Path(cfg.data) if cfg.data else default_root() / "heldout"}
    for folder in sorted(ctx.path("onnx").glob("*")):
        inputs[f"onnx/{folder.name}"] = folder
    if cfg.engines:
        inputs["engines"] = ctx.path("engines")
    return inputs


def _run_compare(ctx: RunContext) -> dict[str, Any]:
    from trt_pipeline.compare.run import compare

    report = compare(ctx.out, ctx.section("compare"), show_progress=ctx.show_progress)
    return {"passed": bool(report)}


COMPARE_OUTPUTS = ["reports/compare.json", "reports/compare.md", "reports/compare_errors.png",
                   "reports/compare_polygraphy"]


# -- bench ---------------------------------------------------------------------------------------


def _bench_inputs(ctx: RunContext) -> dict[str, Path]:
    from trt_pipeline.bench.backends import parse_backend

    cfg = ctx.section("bench")
    inputs = {"export.json": ctx.path("export.json"), "embeddings": ctx.path("embeddings"), "hf": ctx.path("hf")}
    for name in cfg.backends:
        cls, precision = parse_backend(name)
        if precision and cls.family == "ort":
            inputs[f"onnx/{precision}"] = ctx.path(f"onnx/{precision}")
        elif precision:
            inputs[f"engines/{precision}"] = ctx.path("engines")
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
    state["stages"] = {**state.get("stages", {}), "report": {"status": "this file", "finished": _now()}}
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
              inputs=lambda ctx: {}, outputs=lambda ctx: [CHECKPOINT_DIR],
              config=lambda ctx: {"preset": ctx.cfg.preset, "seed": ctx.cfg.seed},
              enabled=lambda ctx: ctx.cfg.checkpoint is None),
        Stage("export", "torch -> ONNX, onnxsim simplification, validation vs transformers", _run_export,
              inputs=lambda ctx: {"checkpoint": ctx.checkpoint}, outputs=_export_outputs,
              config=lambda ctx: _with_tools(ctx.section("export"), *EXPORT_TOOLS)),
        Stage("fp16", "FP16 ONNX (ModelOpt AutoCast)", _run_fp16,
              inputs=lambda ctx: _precision_inputs(ctx, "fp16"), outputs=lambda ctx: ["onnx/fp16"],
              config=lambda ctx: _with_tools(ctx.section("fp16"), *PRECISION_TOOLS),
              unavailable=lambda ctx: _precision_unavailable(ctx, "make_fp16"), gate_errors=(AccuracyError,)),
        Stage("int8", "INT8 Q/DQ ONNX (calibrated on CPU)", _run_int8,
              inputs=lambda ctx: _precision_inputs(ctx, "int8"), outputs=lambda ctx: ["onnx/int8"],
              config=lambda ctx: _with_tools(ctx.section("int8"), *PRECISION_TOOLS),
              unavailable=lambda ctx: _precision_unavailable(ctx, "make_int8"), gate_errors=(AccuracyError,)),
        Stage("build", "TensorRT engines (GPU only)", _run_build,
              inputs=lambda ctx: {"export.json": ctx.path("export.json"),
                                  **{f"onnx/{p}": ctx.path(f"onnx/{p}") for p in _build_precisions(ctx)}},
              outputs=lambda ctx: ["engines"], config=_build_config, unavailable=_build_unavailable),
        Stage("compare", "torch vs ONNX Runtime (vs TensorRT): tensors and tokens", _run_compare,
              inputs=_compare_inputs, outputs=lambda ctx: COMPARE_OUTPUTS,
              config=lambda ctx: config_json(ctx.section("compare")), unavailable=_compare_unavailable,
              gate_errors=(AccuracyError,)),
        Stage("bench", "latency, throughput, memory, roofline", _run_bench,
              inputs=_bench_inputs, outputs=lambda ctx: ["reports/bench.json", "reports/bench.png"],
              config=_bench_config),
        Stage("report", "REPORT.md: artifacts, accuracy and benchmark tables", _run_report,
              inputs=_report_inputs, outputs=lambda ctx: ["reports/REPORT.md"], config=lambda ctx: {"format": 1}),
    ]


# --------------------------------------------------------------------------------------------
# State, lock, decisions
# --------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    """What happened to one stage in this run."""

    name: str
    status: str  # ran | up-to-date | skipped | unavailable | failed | interrupted
    seconds: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PipelineSummary:
    """Result of :func:`run_pipeline`: per-stage results, total time, where the report is."""

    out: Path
    results: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0
    state_path: Path | None = None
    gate_failures: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.out / "reports" / "REPORT.md"

    def by_status(self, *statuses: str) -> list[str]:
        return [r.name for r in self.results if r.status in statuses]

    @property
    def ran(self) -> list[str]:
        return self.by_status("ran")

    @property
    def up_to_date(self) -> list[str]:
        return self.by_status("up-to-date")

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 3), "report": str(self.report),
                "stages": [r.to_dict() for r in self.results]}


def load_state(path: Path) -> dict[str, Any]:
    """The pipeline state, or a fresh one when missing or unreadable (then every stage re-runs)."""
    fresh = {"format_version": STATE_FORMAT_VERSION, "stages": {}, "file_hashes": {}}
    if not path.is_file():
        return fresh
    try:
        state = read_json(path)
    except (OSError, ValueError):
        log(f"[yellow]warning:[/] {path} is unreadable; every stage will run")
        return fresh
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT_VERSION:
        return fresh
    state.setdefault("stages", {})
    state.setdefault("file_hashes", {})
    return state


def save_state(path: Path, state: dict[str, Any], hashes: HashCache) -> None:
    data = {k: v for k, v in state.items() if not k.startswith("_")}
    data["file_hashes"] = hashes.to_json()
    data["updated"] = _now()
    write_json_atomic(path, data)


@contextlib.contextmanager
def pipeline_lock(out: Path) -> Iterator[None]:
    """One pipeline per OUT at a time; a lock left by a dead process is taken over."""
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise ConfigError(f"another `autoglm-trt pipeline` (pid {pid}) is working on {out}.", path=lock,
                                  hint=f"wait for it to finish, or delete {lock} if that process is gone.") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stage_key(stage: Stage, config: Any, inputs: dict[str, str]) -> str:
    return sha256_json({"stage": stage.name, "version": stage.version, "config": config, "inputs": inputs})


def why_run(record: dict[str, Any] | None, key: str, config: Any, inputs: dict[str, str], ctx: RunContext) -> str | None:
    """Why a stage must run (None: it is up to date)."""
    if record is None:
        return "no previous run"
    status = record.get("status")
    if status == "running":
        return "the previous run was interrupted"
    if status != "done":
        return f"the previous run ended as {status}"
    if record.get("key") != key:
        changed = [label for label in sorted(set(inputs) | set(record.get("inputs", {})))
                   if inputs.get(label) != record.get("inputs", {}).get(label)]
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            return f"input {shown} changed"
        if record.get("config") != config:
            return "config changed"
        return "stage definition changed"
    for rel, digest in record.get("outputs", {}).items():
        path = ctx.out / rel
        if not path.is_file():
            return f"output {rel} missing"
        if ctx.hashes.file(path) != digest:
            return f"output {rel} modified"
    return None


def _output_hashes(ctx: RunContext, outputs: list[str]) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for rel in outputs:
        hashes.update(ctx.hashes.tree(ctx.out / rel, base=ctx.out))
    return hashes


def resolve_checkpoint(cfg: PipelineConfig, out: Path) -> Path:
    if cfg.checkpoint is None:
        return out / CHECKPOINT_DIR
    checkpoint = Path(cfg.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(f"{checkpoint} is not a Hugging Face checkpoint folder (no config.json).", path=checkpoint,
                              hint="pass a checkpoint folder, or no CHECKPOINT to use the built-in tiny one.")
    return checkpoint.resolve()


def run_pipeline(cfg: PipelineConfig, show_progress: bool = True, stages: list[Stage] | None = None) -> PipelineSummary:
    """Run every stage that is out of date; see the module docstring.

    Raises the failing stage's :class:`~trt_pipeline.errors.PipelineError` (after recording it).
    """
    start = time.perf_counter()
    stages = stages if stages is not None else default_stages()
    names = [s.name for s in stages]
    if cfg.force is not None and cfg.force not in names:
        raise ConfigError(f"--force {cfg.force}: unknown stage; stages: {', '.join(names)}.")
    out = Path(cfg.resolved_out())
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    state_path = out / STATE_NAME
    summary = PipelineSummary(out, state_path=state_path)
    with pipeline_lock(out):
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)  # leftovers of an interrupted run
        state = load_state(state_path)
        hashes = HashCache(state.get("file_hashes"), rehash=cfg.rehash)
        ctx = RunContext(cfg, out, resolve_checkpoint(cfg, out), show_progress, hashes, state)
        forced_from = names.index(cfg.force) if cfg.force else len(names)
        log(f"pipeline: {ctx.checkpoint} -> {out}")
        try:
            for index, stage in enumerate(stages):
                result = _run_stage(stage, ctx, forced=index >= forced_from, state_path=state_path)
                summary.results.append(result)
        finally:
            save_state(state_path, state, hashes)
            shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    gates = [(name, state["stages"][name]["gate_failed"]) for name in names
             if state["stages"].get(name, {}).get("status") == "done" and state["stages"][name].get("gate_failed")]
    if gates:
        summary.gate_failures = [f"{name}: {message}" for name, message in gates]
        raise AccuracyError(
            "pipeline finished, but accuracy gate(s) failed:\n  " + "\n  ".join(summary.gate_failures),
            path=summary.report,
            hint=f"every artifact and report was written (see {summary.report}); adjust the stage config or its "
                 "tolerances in pipeline.toml if the drift is expected.",
        )
    return summary


def _run_stage(stage: Stage, ctx: RunContext, forced: bool, state_path: Path) -> StageResult:
    stages_state = ctx.state["stages"]
    if not stage.enabled(ctx):
        return StageResult(stage.name, "skipped", reason="not needed for this run")
    if stage.name in ctx.cfg.skip:
        log(f"skipped: {stage.name} (skip list of the pipeline config)")
        return StageResult(stage.name, "skipped", reason="in the skip list")
    reason = stage.unavailable(ctx)
    if reason:
        log(f"skipped: {stage.name} ({reason})")
        stages_state[stage.name] = {"status": "unavailable", "reason": reason, "checked": _now()}
        return StageResult(stage.name, "unavailable", reason=reason)
    config = stage.config(ctx)
    config = json_roundtrip(config)
    inputs = {label: ctx.hashes.fingerprint(path) for label, path in stage.inputs(ctx).items()}
    key = stage_key(stage, config, inputs)
    record = stages_state.get(stage.name)
    why = f"forced (--force {ctx.cfg.force})" if forced else why_run(record, key, config, inputs, ctx)
    if why is None:
        gate = (record or {}).get("gate_failed")
        log(f"[dim]up to date: {stage.name} (inputs and config unchanged)[/]" + (f" [red]gate failed: {gate}[/]" if gate else ""))
        return StageResult(stage.name, "up-to-date", reason="inputs, config and outputs unchanged"
                           + ("; accuracy gate failed" if gate else ""))
    log(f"[bold]stage {stage.name}[/]: {stage.description} ({why})")
    started = time.perf_counter()
    stages_state[stage.name] = {"status": "running", "key": key, "started": _now(), "reason": why}
    save_state(state_path, ctx.state, ctx.hashes)
    gate_failed = None
    try:
        details = stage.run(ctx) or {}
    except stage.gate_errors as error:  # type: ignore[misc]
        details = {}
        text = str(error.message if isinstance(error, PipelineError) else error)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        gate_failed = (lines[0] + " " + "; ".join(lines[1:])) if lines[0].endswith(":") else "; ".join(lines)
        log(f"[red]gate failed:[/] {stage.name}: {gate_failed} (outputs kept; the pipeline goes on to the report)")
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        stages_state[stage.name] = {
            "status": "interrupted" if interrupted else "failed", "key": key, "reason": why,
            "error": f"{type(error).__name__}: {error}".splitlines()[0][:500], "finished": _now(),
            "seconds": round(time.perf_counter() - started, 3)}
        save_state(state_path, ctx.state, ctx.hashes)
        raise
    seconds = time.perf_counter() - started
    stages_state[stage.name] = {
        "status": "done", "key": key, "inputs": inputs, "config": config,
        "outputs": _output_hashes(ctx, stage.outputs(ctx)), "seconds": round(seconds, 3),
        "finished": _now(), "reason": why, "details": json_roundtrip(details)}
    if gate_failed:
        stages_state[stage.name]["gate_failed"] = gate_failed
    save_state(state_path, ctx.state, ctx.hashes)
    log(f"done: {stage.name} in {seconds:.1f} s")
    return StageResult(stage.name, "ran", seconds, why + ("; accuracy gate failed" if gate_failed else ""))


def json_roundtrip(obj: Any) -> Any:
    """The object as it reads back from JSON (tuples -> lists, Paths -> str) so comparisons are stable."""
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def pipeline(cfg: PipelineConfig, show_progress: bool = True) -> PipelineSummary:
    """Library entry point of ``autoglm-trt pipeline`` (alias of :func:`run_pipeline`)."""
    return run_pipeline(cfg, show_progress=show_progress)


__all__ = [
    "PIPELINE_STAGES",
    "HashCache",
    "PipelineError",
    "PipelineSummary",
    "RunContext",
    "Stage",
    "StageResult",
    "default_stages",
    "load_state",
    "pipeline",
    "run_pipeline",
]
