"""autoglm-trt's side of ``benchmarks/peer_genai.py``; runs in the project's own venv.

A long-lived worker (one JSON request per stdin line, one JSON answer per stdout line) that measures
our exported decoder through the project's own benchmark backend,
:class:`trt_pipeline.bench.backends.OrtBackend` (ONNX Runtime CPU session + the host-side
:class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`, i.e. whatever ``autoglm-trt bench``
measures on main: IO binding, thread settings and graph changes land here without edits), timed by
:func:`trt_pipeline.bench.measure.time_call`. Requests:

``{"cmd": "load", "variant": "fp32", "out_dir": ..., "threads": 2}``
    one backend per precision variant (``OUT/onnx/<variant>/decoder.onnx``);
``{"cmd": "measure", "variant", "phase": "prefill"|"decode", "n", "iterations", "warmup", "clock"}``
    per-call seconds (``clock`` "cpu": CPU time of the calling thread): prefill of ``n`` prompt tokens on an empty cache, or one decode step on a cache
    filled to ``n`` tokens (put back to ``n`` after every step);
``{"cmd": "profile", "variant", "context": 512, "steps": 20}``
    ONNX Runtime's own profiler over ``steps`` decode steps at ``context``: time per op type;
``{"cmd": "graph_stats", "path": ...}``
    node counts as exported and after ONNX Runtime's optimizer (``trt_pipeline.bench.graph_stats``);
``{"cmd": "graph_profile", "path": ..., "context": 512}``
    the decoder graph alone in a plain ORT session, profiled: kernels vs the executor around them
    (``benchmarks/ort_graph_profile.py``);
``{"cmd": "graphs_same_ort", "graphs": {name: {"path", "overrides", "share_buffer"}}, "context": 64}``
    several decoder graphs timed in turns in this process (``ort_graph_profile.interleaved_graph_times``);
``{"cmd": "versions"}``, ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def profiled_sessions(prefix: str, sessions: list[Any]) -> Any:
    """Every ``onnxruntime.InferenceSession`` made inside gets ORT profiling on (and is collected).

    The backend builds its own session options; wrapping the constructor profiles exactly the session
    the benchmark runs, without a hook in the package.
    """
    import onnxruntime as ort

    original = ort.InferenceSession

    def make(path: Any, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> Any:
        options = sess_options or ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = prefix
        session = original(path, sess_options=options, providers=providers, **kwargs)
        sessions.append(session)
        return session

    ort.InferenceSession = make
    try:
        yield
    finally:
        ort.InferenceSession = original


#: the op types issue 16 counts as per-step KV-cache copying (about 17 % of a decode step at 512 then)
CACHE_COPY_OPS = ("Expand", "Concat", "Slice", "Reshape")


def last_runs(trace: list[dict[str, Any]], runs: int) -> list[tuple[float, float]]:
    """(start, end) in microseconds of the last ``runs`` ``model_run`` events of an ORT profile."""
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in trace
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    return spans[-runs:]


def op_time_split(trace: list[dict[str, Any]], runs: int, top: int = 12) -> dict[str, Any]:
    """Kernel time per op type over the last ``runs`` session runs of an ORT profile, largest first.

    Only the last runs count, so the cache fill (prefill chunks) before the decode steps is left out.
    """
    windows = last_runs(trace, runs)
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if any(start <= float(event["ts"]) <= end for start, end in windows):
            per_op[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    return {
        "runs": len(windows),
        "kernel_us_per_run": round(total / max(len(windows), 1), 1),
        "top": [{"op_type": op, "us_per_run": round(us / max(len(windows), 1), 1), "share": round(us / total, 4)}
                for op, us in ranked[:top]],
        "other_share": round(sum(us for _, us in ranked[top:]) / total, 4),
        "cache_copy_ops_share": round(sum(per_op.get(op, 0.0) for op in CACHE_COPY_OPS) / total, 4),
    }


class OursSide:
    """One ``OrtBackend`` per variant, loaded from the export folder."""

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self.out_dir: Path | None = None
        self.threads = 1

    def _backend(self, variant: str, out_dir: str, threads: int) -> Any:
        from trt_pipeline.bench.backends import BACKENDS, BenchSetup

        return BACKENDS["ort"](f"ort-{variant}", BenchSetup(Path(out_dir), threads=threads), variant)

    def load(self, variant: str, out_dir: str, threads: int) -> dict[str, Any]:
        backend = self._backend(variant, out_dir, threads)
        backend.load()
        self.backends[variant] = backend
        self.out_dir, self.threads = Path(out_dir), threads
        return {"variant": variant, "weight_bytes": backend.weight_bytes, "notes": backend.notes}

    def measure(self, variant: str, phase: str, n: int, iterations: int, warmup: int, clock: str = "wall") -> list[float]:
        from trt_pipeline.bench.measure import time_call

        backend = self.backends[variant]
        if phase == "prefill":
            return time_call(backend.prefill_fn(n), warmup=warmup, iterations=iterations, clock=clock).samples_s
        step, after = backend.decode_fn(n)
        return time_call(step, warmup=warmup, iterations=iterations, after=after, clock=clock).samples_s

    def profile(self, variant: str, context: int, steps: int) -> dict[str, Any]:
        """A second, profiled backend: ``steps`` decode steps at ``context``, op-type time split."""
        assert self.out_dir is not None, "load a variant first"
        sessions: list[Any] = []
        with tempfile.TemporaryDirectory() as tmp:
            with profiled_sessions(str(Path(tmp) / "ours"), sessions):
                backend = self._backend(variant, str(self.out_dir), self.threads)
                backend.load()
            step, after = backend.decode_fn(context)
            for _ in range(steps):
                step()
                after()
            traces = [json.loads(Path(session.end_profiling()).read_text()) for session in sessions]
            backend.close()
        split = op_time_split([event for trace in traces for event in trace], runs=steps)
        return {"variant": variant, "context": context, "steps": steps, **split,
                "note": "ORT profiler (enable_profiling) on the benchmark's own session; kernel time of the "
                        "last `steps` decode runs per op type (the cache fill before them is left out)"}


def graph_profile(path: str, context: int, runs: int = 50, threads: int = 1) -> dict[str, Any]:
    """Our decoder graph alone in a plain ORT session (``ort_graph_profile.py``, beside this file): an
    ``inplace`` cache bound in place as ``BoundOrtRunner`` binds it, a ``concat`` one allocated by ORT."""
    from ort_graph_profile import profile_decode_graph

    return profile_decode_graph(path, context, runs=runs, threads=threads)


def graphs_same_ort(graphs: dict[str, dict[str, Any]], context: int, rounds: int = 9, threads: int = 1) -> dict[str, Any]:
    """Several decoder graphs timed in turns in this one process (``ort_graph_profile.interleaved_graph_times``).

    Asked of the control worker, which runs in the genai venv: our graph and genai's then meet the same
    onnxruntime at the same moments, so the figure compares the graphs and nothing else."""
    from ort_graph_profile import interleaved_graph_times

    return interleaved_graph_times(graphs, context, rounds=rounds, threads=threads)


def optimized_nodes(path: str) -> dict[str, Any]:
    """Node counts of a graph as written and after this venv's ONNX Runtime optimizer.

    Runs in either venv: genai's graph has contrib ops that only an onnxruntime loads, so the
    orchestrator asks the control worker (genai's onnxruntime) for genai's graph.
    """
    from trt_pipeline.bench.graph_stats import graph_stats

    stats = graph_stats(path)
    return {kind: {"nodes": entry["nodes"], "top": dict(list(entry["ops"].items())[:10])}
            for kind, entry in stats.items()}


def versions() -> dict[str, str]:
    import onnxruntime

    import trt_pipeline

    return {"onnxruntime (ours)": onnxruntime.__version__, "autoglm-trt": getattr(trt_pipeline, "__version__", "?"),
            "python (ours)": sys.version.split()[0]}


def serve() -> None:
    """Answer JSON requests from stdin; stdout carries only answers (library prints go to stderr)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    side = OursSide()
    handlers = {"load": side.load, "measure": side.measure, "profile": side.profile, "versions": versions,
                "graph_stats": optimized_nodes, "graph_profile": graph_profile, "graphs_same_ort": graphs_same_ort}
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        if command == "quit":
            for backend in side.backends.values():
                backend.close()
            answers.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            if command not in handlers:
                raise ValueError(f"unknown command {command!r}")
            answers.write(json.dumps({"ok": True, "result": handlers[command](**request)}) + "\n")
        except Exception as error:  # the orchestrator reports it and stops
            answers.write(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}) + "\n")


if __name__ == "__main__":
    serve()
