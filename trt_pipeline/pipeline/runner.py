"""The run loop: decide per stage (skip, run, unavailable), run it, record the outcome.

Stage definitions live in :mod:`~trt_pipeline.pipeline.stages`, the state file, lock and skip
decision in :mod:`~trt_pipeline.pipeline.state`; this module only sequences them and turns a
failed accuracy gate into an :class:`~trt_pipeline.errors.AccuracyError` after the report.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, check_output_target
from trt_pipeline.config import PipelineConfig
from trt_pipeline.errors import AccuracyError, CheckpointError, ConfigError, PipelineError
from trt_pipeline.pipeline.hashing import HashCache
from trt_pipeline.pipeline.stages import WORK_DIR, RunContext, Stage, default_stages
from trt_pipeline.pipeline.state import (
    STATE_NAME,
    PipelineSummary,
    StageResult,
    load_state,
    now,
    output_hashes,
    pipeline_lock,
    save_state,
    stage_key,
    why_run,
)
from trt_pipeline.progress import log


def resolve_checkpoint(cfg: PipelineConfig, out: Path) -> Path:
    if cfg.checkpoint is None:
        return OutputLayout(out).hf_dir  # the built-in checkpoint lives in OUT/hf (one copy)
    checkpoint = Path(cfg.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(f"{checkpoint} is not a Hugging Face checkpoint folder (no config.json).", path=checkpoint,
                              hint="pass a checkpoint folder, or no CHECKPOINT to use the built-in tiny one.")
    return checkpoint.resolve()


def run_pipeline(cfg: PipelineConfig, show_progress: bool = True, stages: list[Stage] | None = None) -> PipelineSummary:
    """Run every stage that is out of date (see :mod:`trt_pipeline.pipeline.stages`).

    Raises the failing stage's :class:`~trt_pipeline.errors.PipelineError` (after recording it).
    """
    start = time.perf_counter()
    stages = stages if stages is not None else default_stages()
    names = [s.name for s in stages]
    if cfg.force is not None and cfg.force not in names:
        raise ConfigError(f"--force {cfg.force}: unknown stage; stages: {', '.join(names)}.")
    out = Path(cfg.resolved_out())
    check_output_target(out)  # a file, or a folder of the user's that this tool did not write, is refused
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    state_path = OutputLayout(out).pipeline_state
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
        stages_state[stage.name] = {"status": "unavailable", "reason": reason, "checked": now()}
        return StageResult(stage.name, "unavailable", reason=reason)
    config = stage.config(ctx)
    config = json_roundtrip(config)
    inputs = {label: ctx.hashes.fingerprint(path) for label, path in stage.inputs(ctx).items()}
    key = stage_key(stage.name, stage.version, config, inputs)
    record = stages_state.get(stage.name)
    why = f"forced (--force {ctx.cfg.force})" if forced else why_run(record, key, config, inputs, ctx.out, ctx.hashes)
    if why is None:
        gate = (record or {}).get("gate_failed")
        log(f"[dim]up to date: {stage.name} (inputs and config unchanged)[/]" + (f" [red]gate failed: {gate}[/]" if gate else ""))
        return StageResult(stage.name, "up-to-date", reason="inputs, config and outputs unchanged"
                           + ("; accuracy gate failed" if gate else ""))
    log(f"[bold]stage {stage.name}[/]: {stage.description} ({why})")
    started = time.perf_counter()
    stages_state[stage.name] = {"status": "running", "key": key, "started": now(), "reason": why}
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
            "error": f"{type(error).__name__}: {error}".splitlines()[0][:500], "finished": now(),
            "seconds": round(time.perf_counter() - started, 3)}
        save_state(state_path, ctx.state, ctx.hashes)
        raise
    seconds = time.perf_counter() - started
    stages_state[stage.name] = {
        "status": "done", "key": key, "inputs": inputs, "config": config,
        "outputs": output_hashes(ctx.out, ctx.hashes, stage.outputs(ctx)), "seconds": round(seconds, 3),
        "finished": now(), "reason": why, "details": json_roundtrip(details)}
    if gate_failed:
        stages_state[stage.name]["gate_failed"] = gate_failed
    save_state(state_path, ctx.state, ctx.hashes)
    log(f"done: {stage.name} in {seconds:.1f} s")
    return StageResult(stage.name, "ran", seconds, why + ("; accuracy gate failed" if gate_failed else ""))


def json_roundtrip(obj: Any) -> Any:
    """The object as it reads back from JSON (tuples -> lists, Paths -> str) so comparisons are stable."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


__all__ = ["json_roundtrip", "resolve_checkpoint", "run_pipeline"]
