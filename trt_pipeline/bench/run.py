"""``autoglm-trt bench``: prefill / decode latency, throughput, peak memory and a memory roofline.

:func:`bench` measures, for every backend of :class:`~trt_pipeline.config.BenchConfig`:

* **prefill**: p50/p90/p99 latency of one forward over ``L`` prompt tokens, ``L`` in ``prompt_lengths``
  (within the export's ``sequence_length`` range), and prompt tokens/s at p50;
* **decode**: p50/p90/p99 latency of one decode step at context ``C`` (the KV cache is filled to ``C``
  tokens first, and every timed step starts from exactly ``C``), ``C`` in ``context_lengths`` (within
  ``past_sequence_length``), and generated tokens/s at p50;
* **image prefill**: one vision-encoder pass (when the backend has one);
* **memory**: peak RSS of the process running the backend (each backend in a fresh child process
  unless ``isolate=False``) and its RSS after imports;
* **roofline**: per decode point, (decoder weight bytes + KV bytes) / measured bandwidth vs the
  measured step time (:mod:`trt_pipeline.bench.roofline`); the KV bytes are what the backend's step
  moved for its cache (``kv_update``: a copy of the whole cache, or only the new row of an
  ``--kv-cache inplace`` export's IO-bound run), and bench.json records the export's ``kv_cache``.

Threads are pinned: torch and ONNX Runtime get the same intra-op thread count (``threads``, default
every core) and one inter-op thread, and children get ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set.
Results go to ``OUT/reports/bench.json`` and ``OUT/reports/bench.png`` (atomic writes).
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, tool_versions, write_json_atomic
from trt_pipeline.config import BenchConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.progress import log

BENCH_FORMAT_VERSION = 1
#: modules a measuring child imports before its baseline RSS is taken (import cost is not the backend's)
PRELOAD = {
    "torch": ("torch", "numpy", "transformers"),
    "torch-export": ("torch", "numpy"),
    "ort": ("torch", "numpy", "onnxruntime"),
    "trt": ("torch", "numpy"),
}


@dataclass
class BenchReport:
    """Everything ``bench.json`` holds; truthy when at least one backend was measured."""

    out_dir: Path
    config: dict[str, Any]
    machine: dict[str, Any]
    bandwidth: dict[str, Any]
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    roofline: list[dict[str, Any]] = field(default_factory=list)
    speedups: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    json_path: Path | None = None
    png_path: Path | None = None

    @property
    def measured(self) -> list[str]:
        return [name for name, entry in self.backends.items() if entry.get("status") == "ok"]

    def __bool__(self) -> bool:
        return bool(self.measured)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": BENCH_FORMAT_VERSION,
            "out_dir": str(self.out_dir),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": self.machine,
            "config": self.config,
            "bandwidth": self.bandwidth,
            "backends": self.backends,
            "roofline": self.roofline,
            "speedups": self.speedups,
            "notes": self.notes,
        }


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import psutil

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads_used": threads,
        "memory_bytes": int(psutil.virtual_memory().total),
        "platform": platform.platform(),
        "tool_versions": tool_versions("torch", "transformers", "onnxruntime-gpu", "onnxruntime", "numpy"),
    }


def measure_backend(
    out_dir: str,
    backend: str,
    threads: int,
    prompt_lengths: list[int],
    context_lengths: list[int],
    image_patches: int,
    warmup: int,
    iterations: int,
    decode_steps: int,
    batch_size: int = 1,
    seed: int = 0,
    inter_op_threads: int | None = 1,
    io_binding: bool = True,
    clock: str = "wall",
) -> dict[str, Any]:
    """Measure one backend (runs in a child process when isolated); returns a JSON-able dict."""
    from trt_pipeline.bench.backends import BenchSetup, make_backend
    from trt_pipeline.bench.measure import time_call

    setup = BenchSetup(Path(out_dir), threads=threads, batch_size=batch_size, seed=seed,
                       inter_op_threads=inter_op_threads, io_binding=io_binding, vision=image_patches > 0)
    runner = make_backend(backend, setup)
    start = time.perf_counter()
    runner.load()
    result: dict[str, Any] = {"load_s": round(time.perf_counter() - start, 3), "prefill": [], "decode": []}
    try:
        for length in prompt_lengths:
            timing = time_call(runner.prefill_fn(length), warmup=warmup, iterations=iterations, clock=clock)
            result["prefill"].append({"length": length, **timing.summary(tokens=length * batch_size)})
        for context in context_lengths:
            step, after = runner.decode_fn(context)
            timing = time_call(step, warmup=warmup, iterations=decode_steps, after=after, clock=clock)
            result["decode"].append({"context": context, **timing.summary(tokens=batch_size)})
        image = runner.image_fn(image_patches) if image_patches else None
        if image is not None:
            timing = time_call(image, warmup=warmup, iterations=iterations, clock=clock)
            result["image_prefill"] = {"num_patches": image_patches, **timing.summary()}
    finally:
        runner.close()
    result.update(weight_bytes=int(runner.weight_bytes), kv_dtype_bytes=int(runner.kv_dtype_bytes),
                  kv_cache=runner.kv_cache, kv_update=runner.kv_update, notes=runner.notes)
    return result


def _lengths(values: tuple[int, ...], low: int, high: int, what: str, notes: list[str]) -> list[int]:
    kept = sorted({v for v in values if low <= v <= high})
    dropped = sorted(set(values) - set(kept))
    if dropped:
        notes.append(f"{what} {dropped} outside the export's range [{low}, {high}]: not measured")
    return kept


def plan_lengths(setup_ranges: dict[str, Any], cfg: BenchConfig) -> tuple[list[int], list[int], int, list[str]]:
    """Prompt lengths, decode contexts and image patches within the export's ranges (+ notes)."""
    notes: list[str] = []
    seq, past, total = setup_ranges["sequence_length"], setup_ranges["past_sequence_length"], setup_ranges["total_sequence_length"]
    if cfg.batch_size > setup_ranges["batch_size"].max:
        raise ConfigError(f"bench batch_size {cfg.batch_size} exceeds the export's max batch {setup_ranges['batch_size'].max}.")
    prompts = _lengths(cfg.prompt_lengths, max(seq.min, 1), seq.max, "prompt lengths", notes)
    contexts = _lengths(cfg.context_lengths, max(past.min, 1), min(past.max, total.max - 1), "decode contexts", notes)
    if not prompts and not contexts:
        raise ConfigError(
            f"no bench length lies within the export's ranges (sequence_length {seq.min}..{seq.max}, "
            f"past_sequence_length {past.min}..{past.max}).",
            hint="pass --prompt-lengths / --context-lengths inside those ranges.",
        )
    patches = setup_ranges.get("num_patches")
    image = 0
    if patches is not None and cfg.image_patches != 0:
        wanted = cfg.image_patches or patches.opt
        image = min(max(wanted, patches.min), patches.max)
        if cfg.image_patches and image != cfg.image_patches:
            notes.append(f"image_patches {cfg.image_patches} clipped to {image} (export range {patches.min}..{patches.max})")
    return prompts, contexts, image, notes


def roofline_points(backends: dict[str, dict[str, Any]], dims: Any, bandwidth_gbps: float, batch: int) -> list[dict[str, Any]]:
    from trt_pipeline.bench.roofline import RooflinePoint, decode_kv_bytes

    text = dims.text
    points = []
    for name, entry in backends.items():
        if entry.get("status") != "ok" or not entry.get("weight_bytes"):
            continue
        kv_cache, update = entry.get("kv_cache", "concat"), entry.get("kv_update", "copy")
        for row in entry["decode"]:
            kv = decode_kv_bytes(text.num_hidden_layers, text.num_key_value_heads, text.head_dim, row["context"],
                                 batch, entry["kv_dtype_bytes"], update)
            point = RooflinePoint(name, row["context"], entry["weight_bytes"], kv, bandwidth_gbps, row["p50_ms"],
                                  kv_cache, update)
            points.append(point.to_dict())
    return points


def speedups(backends: dict[str, dict[str, Any]], baseline: str = "torch") -> list[dict[str, Any]]:
    """Decode and prefill p50 speed-up of every backend over ``baseline`` at equal lengths."""
    base = backends.get(baseline)
    if not base or base.get("status") != "ok":
        return []
    rows = []
    for name, entry in backends.items():
        if name == baseline or entry.get("status") != "ok":
            continue
        for kind, key in (("decode", "context"), ("prefill", "length")):
            ref = {r[key]: r["p50_ms"] for r in base[kind]}
            for row in entry[kind]:
                if row[key] in ref and row["p50_ms"] > 0:
                    rows.append({"backend": name, "baseline": baseline, "phase": kind, key: row[key],
                                 "speedup": round(ref[row[key]] / row["p50_ms"], 3)})
    return rows


def bench(out_dir: Path | str, cfg: BenchConfig = BenchConfig(), show_progress: bool = True) -> BenchReport:
    """Benchmark the backends of ``cfg`` on the export folder ``out_dir``; write reports/bench.{json,png}."""
    from trt_pipeline.bench.backends import BenchSetup, default_threads, parse_backend
    from trt_pipeline.bench.bandwidth import measure_bandwidth
    from trt_pipeline.bench.memory import current_rss_bytes, peak_rss_bytes, run_isolated
    from trt_pipeline.bench.plots import plot_bench

    out_dir = Path(out_dir)
    for name in cfg.backends:
        parse_backend(name)  # unknown names fail before any work
    threads = cfg.threads or default_threads()
    setup = BenchSetup(out_dir, threads=threads, batch_size=cfg.batch_size, seed=cfg.seed)
    prompts, contexts, image, notes = plan_lengths(setup.ranges, cfg)
    for note in notes:
        log(f"bench: {note}")
    log(f"bench: measuring memory bandwidth ({cfg.bandwidth_mib} MiB arrays, best of {cfg.bandwidth_repeats})")
    bandwidth = measure_bandwidth(cfg.bandwidth_mib, cfg.bandwidth_repeats, threads, clock=cfg.clock)
    log(f"bench: memory bandwidth {bandwidth.best_gbps:.1f} GB/s (copy {bandwidth.copy_gbps_1t:.1f}/{bandwidth.copy_gbps:.1f}, "
        f"read {bandwidth.read_gbps_1t:.1f}/{bandwidth.read_gbps:.1f} GB/s with 1/{threads} threads); threads pinned to {threads}")
    report = BenchReport(out_dir, {**cfg.to_dict(), "threads": threads, "onnxruntime": ort_settings(cfg, threads),
                                   "kv_cache": setup.manifest.kv_cache,
                                   "prompt_lengths_measured": prompts,
                                   "context_lengths_measured": contexts, "image_patches_measured": image},
                         machine_info(threads), bandwidth.to_dict(), notes=list(notes))
    kwargs = dict(out_dir=str(out_dir.resolve()), threads=threads, prompt_lengths=prompts, context_lengths=contexts,
                  image_patches=image, warmup=cfg.warmup, iterations=cfg.iterations, decode_steps=cfg.decode_steps,
                  batch_size=cfg.batch_size, seed=cfg.seed, inter_op_threads=cfg.inter_op_threads,
                  io_binding=cfg.io_binding, clock=cfg.clock)
    env = child_env(threads)
    # No live progress bar while measuring: its refresh thread competes for the CPUs with the
    # measured threads (on 2 cores it visibly inflated ONNX Runtime p90s); one line per backend instead.
    for name in cfg.backends:
        cls, precision = parse_backend(name)
        reason = cls.unavailable(name, setup, precision)
        if reason:
            log(f"skipped: bench {name} ({reason})")
            report.backends[name] = {"status": "skipped", "reason": reason}
            continue
        if show_progress:
            log(f"bench: measuring {name} ...")
        if cfg.isolate:
            isolated = run_isolated("trt_pipeline.bench.run:measure_backend", {**kwargs, "backend": name}, env=env,
                                    preload=PRELOAD.get(cls.family, ("torch", "numpy")))
            entry = {**isolated.result, "baseline_rss_bytes": isolated.baseline_rss_bytes,
                     "peak_rss_bytes": isolated.peak_rss_bytes, "memory_scope": "own child process"}
        else:
            before = current_rss_bytes()
            entry = {**measure_backend(**{**kwargs, "backend": name}), "baseline_rss_bytes": before,
                     "peak_rss_bytes": peak_rss_bytes(), "memory_scope": "shared process (high-water mark so far)"}
        entry["status"] = "ok"
        report.backends[name] = entry
        _log_backend(name, entry)
    report.config["roofline_bandwidth_gbps"] = roofline_bandwidth(bandwidth, cfg.clock)
    report.roofline = roofline_points(report.backends, setup.dims, report.config["roofline_bandwidth_gbps"],
                                      cfg.batch_size)
    report.speedups = speedups(report.backends)
    layout = OutputLayout(out_dir)
    report.json_path = write_json_atomic(layout.report("bench.json"), report.to_dict())
    report.png_path = plot_bench(report.to_dict(), layout.report("bench.png"))
    log(f"bench: wrote {report.json_path} and {report.png_path}")
    return report


def roofline_bandwidth(bandwidth: Any, clock: str) -> float:
    """The bandwidth a decode step is held against: the best measured (wall clock), or one thread's
    best (cpu clock: the step ran on one thread, whose CPU time is what was measured)."""
    if clock == "cpu":
        return max(bandwidth.copy_gbps_1t, bandwidth.read_gbps_1t)
    return bandwidth.best_gbps


def ort_settings(cfg: BenchConfig, threads: int) -> dict[str, Any]:
    """The ONNX Runtime session settings of every ``ort-*`` backend of the run (for bench.json)."""
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings

    return OrtSettings(intra_op_threads=threads, inter_op_threads=cfg.inter_op_threads,
                       io_binding=cfg.io_binding).to_dict()


def child_env(threads: int) -> dict[str, str]:
    """Environment of the measuring child processes: pinned thread counts, passive OpenMP waiting.

    ``OMP_WAIT_POLICY=PASSIVE``: with libgomp's default spin-waiting, torch steps on this 2-vCPU VM
    stalled for a whole 80-100 ms scheduler period at random (a 1 ms decode step had p50 80 ms in
    some runs); passive waiting removes that. A value already set in the environment is kept.
    """
    import os

    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def _log_backend(name: str, entry: dict[str, Any]) -> None:
    parts = []
    if entry["prefill"]:
        row = entry["prefill"][-1]
        parts.append(f"prefill {row['length']} tok p50 {row['p50_ms']:.2f} ms")
    if entry["decode"]:
        row = entry["decode"][0]
        parts.append(f"decode @{row['context']} p50 {row['p50_ms']:.2f} ms ({row['tokens_per_s']} tok/s)")
    parts.append(f"peak RSS {entry['peak_rss_bytes'] / 1e6:.0f} MB")
    log(f"bench {name}: " + ", ".join(parts))


__all__ = ["BenchReport", "bench", "measure_backend"]
