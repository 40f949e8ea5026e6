"""Peak memory: resident-set size of this process, a sampling thread, and child-process isolation.

``ru_maxrss`` is a high-water mark for the whole life of a process, so two backends measured one
after the other in one process cannot be told apart. :func:`run_isolated` therefore runs a function
in a fresh child interpreter (``python -m trt_pipeline.bench.memory``) and returns its result with
the child's own figures: RSS after imports (``baseline_rss_bytes``) and ``ru_maxrss`` at the end
(``peak_rss_bytes``). :class:`RssSampler` is the in-process alternative (psutil polling, optional
phase labels so a long job can report which phase set its peak).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.errors import PipelineError


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak resident-set size of this process (or of the process ``pid``, e.g. a server) in bytes.

    Linux: ``VmHWM`` of ``/proc/<pid>/status``, the high-water mark of the *current* address space.
    Not ``ru_maxrss``: Linux folds the parent's RSS at ``fork`` into a child's ``ru_maxrss`` even
    after ``exec``, so a child started from a 1 GB process reports >= 1 GB whatever it does.
    Elsewhere: ``ru_maxrss`` (macOS reports bytes; this process only). Children of :func:`run_isolated`
    also poll their RSS (:class:`RssSampler`) and report the larger of both.
    """
    try:
        with open(f"/proc/{pid or 'self'}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):  # updated lazily by the kernel: never below current RSS
                    return max(int(line.split()[1]) * 1024, current_rss_bytes(pid))
    except OSError:
        pass
    if pid is not None:
        return current_rss_bytes(pid)
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def current_rss_bytes(pid: int | None = None) -> int:
    """Current resident-set size of this process (or of the process ``pid``) in bytes."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is a dependency
        with open(f"/proc/{pid or 'self'}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Polls the RSS of a process every ``interval_s`` in a daemon thread.

    ``with RssSampler() as sampler: ...; sampler.peak``. ``sampler.phase("export decoder")`` labels
    the samples that follow, and ``sampler.phase_peaks`` keeps the largest RSS seen per label.
    """

    def __init__(self, interval_s: float = 0.01, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.pid = pid or os.getpid()
        self.peak = 0
        self.phase_peaks: dict[str, int] = {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def phase(self, name: str) -> None:
        self._sample()
        self._phase = name
        self._sample()

    def _sample(self) -> None:
        import psutil

        try:
            rss = int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return
        self.peak = max(self.peak, rss)
        self.phase_peaks[self._phase] = max(self.phase_peaks.get(self._phase, 0), rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


@dataclass
class IsolatedResult:
    """What a child process returned, plus its memory and wall time."""

    result: Any
    baseline_rss_bytes: int
    peak_rss_bytes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def run_isolated(
    target: str,
    kwargs: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    preload: tuple[str, ...] = (),
    timeout: float | None = None,
) -> IsolatedResult:
    """Run ``module:function(**kwargs)`` in a fresh interpreter and return its JSON result.

    ``preload`` modules are imported before the baseline RSS is taken, so their import cost is not
    charged to the measured function. A :class:`PipelineError` raised in the child is re-raised here
    with the same class (when it is one of :mod:`trt_pipeline.errors`) and message.
    """
    with tempfile.TemporaryDirectory(prefix="autoglm-bench-") as scratch:
        spec_path, result_path = Path(scratch) / "call.json", Path(scratch) / "result.json"
        spec_path.write_text(json.dumps({"target": target, "kwargs": dict(kwargs), "preload": list(preload)}, default=str))
        child_env = {**os.environ, **(env or {})}
        start = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-m", "trt_pipeline.bench.memory", str(spec_path), str(result_path)],
            env=child_env, stdout=subprocess.DEVNULL, timeout=timeout, check=False,
        )
        seconds = time.perf_counter() - start
        if not result_path.is_file():
            raise PipelineError(
                f"benchmark child process for {target} exited with code {process.returncode} without a result.",
                hint="see the messages above; a crash (e.g. out of memory) kills the child before it can report.",
            )
        payload = json.loads(result_path.read_text())
    if "error" in payload:
        error = payload["error"]
        from trt_pipeline import errors

        cls = getattr(errors, error.get("type", ""), None)
        if isinstance(cls, type) and issubclass(cls, PipelineError):
            raise cls(error["message"], hint=error.get("hint"))
        raise PipelineError(f"benchmark child process for {target} failed: {error['type']}: {error['message']}",
                            hint="the traceback is printed above.")
    return IsolatedResult(payload["result"], payload["baseline_rss_bytes"], payload["peak_rss_bytes"], seconds)


def _child_main(spec_path: str, result_path: str) -> int:
    from trt_pipeline.artifacts import write_json_atomic

    spec = json.loads(Path(spec_path).read_text())
    for module in spec.get("preload", []):
        importlib.import_module(module)
    func = _resolve(spec["target"])
    baseline = current_rss_bytes()
    sampler = RssSampler(interval_s=0.005)
    try:
        with sampler:
            result = func(**spec["kwargs"])
    except PipelineError as error:
        write_json_atomic(result_path, {"error": {"type": type(error).__name__, "message": error.message,
                                                   "hint": error.hint}})
        return 1
    except Exception as error:  # report anything else with its traceback on stderr
        traceback.print_exc()
        write_json_atomic(result_path, {"error": {"type": type(error).__name__, "message": str(error)}})
        return 1
    write_json_atomic(result_path, {"result": result, "baseline_rss_bytes": baseline,
                                    "peak_rss_bytes": max(peak_rss_bytes(), sampler.peak)})
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through run_isolated
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))


__all__ = [
    "IsolatedResult",
    "RssSampler",
    "current_rss_bytes",
    "peak_rss_bytes",
    "run_isolated",
]
