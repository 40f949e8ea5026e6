"""Skip / force / resume / gate semantics of the stage runner, with small fake stages (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_pipeline.artifacts import atomic_path, write_text_atomic
from trt_pipeline.config import PipelineConfig
from trt_pipeline.errors import AccuracyError, ConfigError
from trt_pipeline.pipeline import STATE_NAME, Stage, run_pipeline


def _stages(source: Path, calls: list[str], settings: dict) -> list[Stage]:
    """a: source file -> a.txt; b: a.txt -> b.txt (config from ``settings``); c: b.txt -> c.txt.

    They carry real stage names (export, int8, report) because --force only accepts those.
    """

    def step(name: str, src: str, dst: str):
        def run(ctx):
            calls.append(name)
            text = (ctx.out / src).read_text() if src else source.read_text()
            write_text_atomic(ctx.out / dst, f"{text}|{name}{settings.get(name, '')}")
        return run

    return [
        Stage("export", "first", step("a", "", "a.txt"), inputs=lambda ctx: {"source": source},
              outputs=lambda ctx: ["a.txt"], config=lambda ctx: {}),
        Stage("int8", "second", step("b", "a.txt", "b.txt"), inputs=lambda ctx: {"a.txt": ctx.out / "a.txt"},
              outputs=lambda ctx: ["b.txt"], config=lambda ctx: {"b": settings.get("b", "")}),
        Stage("report", "third", step("c", "b.txt", "c.txt"), inputs=lambda ctx: {"b.txt": ctx.out / "b.txt"},
              outputs=lambda ctx: ["c.txt"], config=lambda ctx: {}),
    ]


@pytest.fixture()
def setup(tmp_path):
    source = tmp_path / "source.txt"
    source.write_text("v1")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    calls: list[str] = []
    settings: dict = {}
    cfg = PipelineConfig(checkpoint=tmp_path / "ckpt", out=tmp_path / "out")
    return source, calls, settings, cfg


def test_runs_then_skips_then_reruns_only_what_changed(setup):
    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)
    first = run_pipeline(cfg, show_progress=False, stages=stages)
    assert first.ran == ["export", "int8", "report"] and calls == ["a", "b", "c"]
    state = json.loads((cfg.out / STATE_NAME).read_text())
    assert state["stages"]["int8"]["status"] == "done" and set(state["stages"]["int8"]["outputs"]) == {"b.txt"}

    calls.clear()
    second = run_pipeline(cfg, show_progress=False, stages=stages)
    assert second.ran == [] and second.up_to_date == ["export", "int8", "report"] and calls == []

    settings["b"] = "-changed"  # config of b: b and (through b.txt) c re-run, a does not
    third = run_pipeline(cfg, show_progress=False, stages=stages)
    assert third.ran == ["int8", "report"]
    assert [r.reason for r in third.results if r.name == "int8"] == ["config changed"]

    calls.clear()
    source.write_text("v2")  # an input of a: everything downstream
    assert run_pipeline(cfg, show_progress=False, stages=stages).ran == ["export", "int8", "report"]

    calls.clear()
    (cfg.out / "b.txt").write_text("tampered")  # an output edited behind the pipeline's back
    result = run_pipeline(cfg, show_progress=False, stages=stages)
    assert result.ran[0] == "int8" and "output b.txt modified" in result.results[1].reason
    (cfg.out / "c.txt").unlink()
    assert run_pipeline(cfg, show_progress=False, stages=stages).ran == ["report"]


def test_force_reruns_the_stage_and_everything_after(setup):
    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)
    run_pipeline(cfg, show_progress=False, stages=stages)
    forced = run_pipeline(PipelineConfig(checkpoint=cfg.checkpoint, out=cfg.out, force="int8"), show_progress=False, stages=stages)
    assert forced.ran == ["int8", "report"] and forced.up_to_date == ["export"]
    with pytest.raises(ConfigError, match="unknown pipeline stage"):
        PipelineConfig(out=cfg.out, force="z")


def test_interrupted_stage_keeps_old_artifact_and_next_run_resumes_there(setup):
    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)
    run_pipeline(cfg, show_progress=False, stages=stages)
    before = (cfg.out / "b.txt").read_text()

    def interrupted(ctx):
        with atomic_path(ctx.out / "b.txt") as tmp:
            tmp.write_text("half-writ")
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    broken = [s if s.name != "int8" else Stage(**{**s.__dict__, "run": interrupted}) for s in stages]
    source.write_text("v2")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, show_progress=False, stages=broken)
    assert (cfg.out / "b.txt").read_text() == before  # never a half-written artifact under its name
    assert not [p for p in cfg.out.iterdir() if p.name.endswith(".tmp")]
    state = json.loads((cfg.out / STATE_NAME).read_text())
    assert state["stages"]["export"]["status"] == "done" and state["stages"]["int8"]["status"] == "interrupted"

    calls.clear()
    resumed = run_pipeline(cfg, show_progress=False, stages=stages)
    assert resumed.ran == ["int8", "report"] and resumed.up_to_date == ["export"]
    assert "interrupted" in resumed.results[1].reason
    assert (cfg.out / "c.txt").read_text() == "v2|a|b|c"


def test_gate_failure_keeps_going_records_and_raises_at_the_end(setup):
    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)

    def gate(ctx):
        write_text_atomic(ctx.out / "b.txt", "complete report")
        raise AccuracyError("int8 tokens 10% < 50%")

    gated = [s if s.name != "int8" else Stage(**{**s.__dict__, "run": gate, "gate_errors": (AccuracyError,)}) for s in stages]
    with pytest.raises(AccuracyError, match="int8: int8 tokens 10% < 50%"):
        run_pipeline(cfg, show_progress=False, stages=gated)
    assert calls == ["a", "c"]  # report (c) still ran after the failed gate
    state = json.loads((cfg.out / STATE_NAME).read_text())
    assert state["stages"]["int8"]["status"] == "done" and "10%" in state["stages"]["int8"]["gate_failed"]
    calls.clear()
    with pytest.raises(AccuracyError):  # nothing changed: nothing re-runs, but the failure is still reported
        run_pipeline(cfg, show_progress=False, stages=gated)
    assert calls == []


def test_unavailable_and_disabled_stages_are_skipped_with_a_line(setup, capsys):
    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)
    stages[1] = Stage(**{**stages[1].__dict__, "unavailable": lambda ctx: "TensorRT/GPU not available: no GPU"})
    stages[2] = Stage(**{**stages[2].__dict__, "enabled": lambda ctx: False, "inputs": lambda ctx: {}})
    summary = run_pipeline(cfg, show_progress=False, stages=stages)
    assert [(r.name, r.status) for r in summary.results] == [("export", "ran"), ("int8", "unavailable"), ("report", "skipped")]
    assert "skipped: int8 (TensorRT/GPU not available: no GPU)" in capsys.readouterr().err


def test_lock_refuses_a_live_owner_and_takes_over_a_stale_one(setup):
    from filelock import FileLock

    source, calls, settings, cfg = setup
    stages = _stages(source, calls, settings)
    cfg.out.mkdir(parents=True)
    lock = cfg.out / ".pipeline.lock"
    owner = FileLock(lock)  # a live owner: holds the OS lock on its own open file
    owner.acquire()
    try:
        with pytest.raises(ConfigError, match="another `autoglm-trt pipeline`"):
            run_pipeline(cfg, show_progress=False, stages=stages)
    finally:
        owner.release()
    lock.write_text("999999999")  # left behind by a killed run: a file, but nobody holds the lock
    assert run_pipeline(cfg, show_progress=False, stages=stages).ran == ["export", "int8", "report"]
    assert not lock.exists()
