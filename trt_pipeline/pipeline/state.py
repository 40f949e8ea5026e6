"""The pipeline's memory between runs: ``OUT/pipeline_state.json``, the lock, the skip decision.

The state file keeps, per stage, the sha256 of its inputs + config (``key``) and of every output
file; :func:`why_run` compares a stage's present inputs against it and says why the stage must run
(or ``None``: up to date). The state is written atomically after every change, so an interrupted
run leaves the stage it was in marked ``running`` and the next run resumes there.

One pipeline per OUT at a time: :func:`pipeline_lock` holds an OS file lock (``filelock``), which
the kernel releases when the holder exits, even when it is killed: no stale-lock bookkeeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, read_json, sha256_json, write_json_atomic
from trt_pipeline.artifacts.layout import PIPELINE_LOCK, PIPELINE_STATE
from trt_pipeline.errors import ConfigError
from trt_pipeline.pipeline.hashing import HashCache
from trt_pipeline.progress import log

STATE_NAME = PIPELINE_STATE
STATE_FORMAT_VERSION = 1
LOCK_NAME = PIPELINE_LOCK


def now() -> str:
    """UTC time stamp for the state file and the report."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
        return OutputLayout(self.out).report("REPORT.md")

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
    data["updated"] = now()
    write_json_atomic(path, data)


@contextlib.contextmanager
def pipeline_lock(out: Path) -> Iterator[None]:
    """One pipeline per OUT at a time; the second one fails at once, naming the lock file."""
    from filelock import FileLock, Timeout

    path = OutputLayout(out).pipeline_lock
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"another `autoglm-trt pipeline` is working on {out} (it holds {path}).",
            path=path,
            hint="wait for it to finish; the lock is released when that process exits, even if it is killed.",
        ) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a finished run leaves no lock file behind
        lock.release()


def stage_key(name: str, version: int, config: Any, inputs: dict[str, str]) -> str:
    """One sha256 for what identifies a stage's work: its definition, config and input contents."""
    return sha256_json({"stage": name, "version": version, "config": config, "inputs": inputs})


def why_run(
    record: dict[str, Any] | None, key: str, config: Any, inputs: dict[str, str], out: Path, hashes: HashCache
) -> str | None:
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
        path = out / rel
        if not path.is_file():
            return f"output {rel} missing"
        if hashes.file(path) != digest:
            return f"output {rel} modified"
    return None


def output_hashes(out: Path, hashes: HashCache, outputs: list[str]) -> dict[str, str]:
    """sha256 of every file under the given OUT-relative outputs, keyed by OUT-relative path."""
    result: dict[str, str] = {}
    for rel in outputs:
        result.update(hashes.tree(out / rel, base=out))
    return result


__all__ = [
    "LOCK_NAME",
    "STATE_NAME",
    "PipelineSummary",
    "StageResult",
    "load_state",
    "now",
    "output_hashes",
    "pipeline_lock",
    "save_state",
    "stage_key",
    "why_run",
]
