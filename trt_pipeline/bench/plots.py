"""Benchmark figures (matplotlib, Agg backend: no display needed).

``bench.png`` has three panels:

1. prefill latency (p50, with a bar from p50 up to p99) against prompt length, per backend;
2. decode latency per token (p50, bar to p99) against context length, per backend;
3. the memory roofline: measured decode time against bytes moved per step (decoder weights + KV
   cache), with the line ``time = bytes / measured bandwidth`` below which no step can run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_ticks(ax: Any, xs: list[float] | None = None) -> None:
    """Plain numbers instead of 2^n / 2x10^2 on log axes."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    if xs:
        ax.set_xticks(sorted(set(xs)))


def _latency_panel(ax: Any, backends: dict[str, Any], kind: str, key: str, xlabel: str, title: str) -> None:
    all_x: list[float] = []
    for name, entry in backends.items():
        rows = entry.get(kind) if entry.get("status") == "ok" else None
        if not rows:
            continue
        xs = [r[key] for r in rows]
        all_x += xs
        p50 = [r["p50_ms"] for r in rows]
        upper = [max(r["p99_ms"] - r["p50_ms"], 0.0) for r in rows]
        ax.errorbar(xs, p50, yerr=[[0.0] * len(xs), upper], marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency (ms), p50 with bar to p99")
    ax.set_title(title)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_ticks(ax, all_x)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _roofline_panel(ax: Any, points: list[dict[str, Any]], bandwidth_gbps: float) -> None:
    if not points:
        ax.text(0.5, 0.5, "no decode measurements", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_backend.setdefault(point["backend"], []).append(point)
    lo = min(p["bytes_moved"] for p in points) / 1.5
    hi = max(p["bytes_moved"] for p in points) * 1.5
    xs = [lo, hi]
    ax.plot([x / 1e6 for x in xs], [x / (bandwidth_gbps * 1e9) * 1e3 for x in xs], "k--",
            label=f"memory roofline ({bandwidth_gbps:.1f} GB/s)")
    for name, rows in by_backend.items():
        rows = sorted(rows, key=lambda r: r["context"])
        ax.plot([r["bytes_moved"] / 1e6 for r in rows], [r["measured_ms"] for r in rows], marker="o", label=name)
        last = rows[-1]
        ax.annotate(f"{last['fraction']:.0%}", (last["bytes_moved"] / 1e6, last["measured_ms"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("bytes per decode step: weights + KV cache (MB)")
    ax.set_ylabel("decode step p50 (ms)")
    ax.set_title("decode vs memory roofline (label: fraction at largest context)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_bench(report: dict[str, Any], path: Path | str) -> Path:
    """Draw ``bench.png`` from a bench.json dict; written atomically."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    backends = report.get("backends", {})
    _latency_panel(axes[0], backends, "prefill", "length", "prompt tokens", "prefill latency")
    _latency_panel(axes[1], backends, "decode", "context", "context length (cached tokens)", "decode latency per token")
    _roofline_panel(axes[2], report.get("roofline", []), float(report.get("bandwidth", {}).get("best_gbps", 0) or 1))
    machine = report.get("machine", {})
    fig.suptitle(f"{machine.get('cpu', '')}, {machine.get('threads_used', '?')} threads", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


__all__ = ["plot_bench"]
