"""The comparison report: JSON for machines, Markdown for people, a PNG of error distributions.

Files written to the report folder (default ``OUT/reports``):

* ``compare.json``: config and gates, backends (compared and skipped), the samples, per output and
  backend the worst max/mean/p99 absolute error, max/p99 relative error, min cosine and every
  gate with its limit, worst value and sample; the token-level agreement per backend with each
  prompt's tokens; the failures; ``passed``.
* ``compare.md``: the same as tables (the KV-cache outputs ``present.*`` folded into one row
  unless one of them fails).
* ``compare_errors.png``: per output group (image_features, logits, present) the distribution of
  log10 |actual - reference| over every element of every sample, one curve per backend.
* ``compare_polygraphy/COMPONENT.BACKEND.json``: Polygraphy's own ``AccuracyResults`` (loadable with
  ``AccuracyResults.load``).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.artifacts import atomic_path, write_json_atomic, write_text_atomic
from trt_pipeline.accuracy.gates import output_group
from trt_pipeline.accuracy.tokens import TokenAgreement
from trt_pipeline.compare.tolerances import OutputStats

REPORT_FORMAT_VERSION = 1
JSON_NAME = "compare.json"
MARKDOWN_NAME = "compare.md"
PNG_NAME = "compare_errors.png"
POLYGRAPHY_DIR = "compare_polygraphy"

#: What the numbers in compare.json mean (a = candidate output, r = reference output, per sample).
METRIC_DEFINITIONS = {
    "max_abs": "max |a - r| over elements; worst sample",
    "mean_abs": "mean |a - r| over elements; averaged over samples",
    "p99_abs": "99th percentile of |a - r| over elements; worst sample",
    "p99_rel": "p99_abs / rms(r) per sample; worst sample (gated)",
    "p99_rel_elementwise": "99th percentile of |a - r| / |r| (Polygraphy reldiff); worst sample; unbounded near r = 0",
    "max_rel": "max |a - r| / |r| (Polygraphy reldiff); worst sample",
    "cosine": "cosine similarity of flattened a and r; worst (smallest) sample (gated)",
    "exact_match_rate": "share of held-out prompts whose greedy tokens equal transformers' exactly (gated)",
    "first_divergence": "0-based index of the first differing token (None: identical)",
    "mean_common_prefix": "mean number of leading tokens equal to transformers'",
    "teacher_forced_agreement": "share of transformers' tokens the backend predicts given transformers' prefix "
                                "(teacher forcing: one prefill of the reference sequence, argmax per position; gated)",
}

#: log10 |error| histogram bins (errors below 1e-12, including exact zeros, land in the first bin).
HIST_EDGES = np.linspace(-12.0, 3.0, 61)
GROUP_ORDER = ("image_features", "logits", "present")


class ErrorHistograms:
    """Accumulates log10 |actual - reference| histograms per (backend, output group)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], np.ndarray] = {}

    def add(self, backend: str, output: str, actual: Any, reference: Any) -> None:
        a = np.asarray(actual, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if a.shape != r.shape:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.log10(np.clip(np.abs(a - r), 1e-12, None))
        err = np.nan_to_num(err, nan=HIST_EDGES[-1], posinf=HIST_EDGES[-1])
        counts, _ = np.histogram(np.clip(err, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
        key = (backend, output_group(output))
        self.counts[key] = self.counts.get(key, np.zeros(len(HIST_EDGES) - 1, np.int64)) + counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "log10_edges": [float(x) for x in HIST_EDGES],
            "counts": {f"{b}|{g}": c.tolist() for (b, g), c in self.counts.items()},
        }


@dataclass
class CompareReport:
    """Result of :func:`trt_pipeline.compare.compare`: truthy when every gate passed."""

    out_dir: Path
    report_dir: Path
    config: dict[str, Any]
    reference: dict[str, Any]
    backends: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)  # runners.Skip
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tensors: list[OutputStats] = field(default_factory=list)
    tokens: list[TokenAgreement] = field(default_factory=list)
    token_settings: dict[str, Any] = field(default_factory=dict)
    histograms: ErrorHistograms = field(default_factory=ErrorHistograms)
    gates: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def failures(self) -> list[str]:
        out = [line for t in self.tensors for line in t.failures()]
        out += [f for f in (t.failure() for t in self.tokens) if f]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def stats(self, backend: str, output: str) -> OutputStats | None:
        return next((t for t in self.tensors if t.backend == backend and t.output == output), None)

    def token_agreement(self, backend: str) -> TokenAgreement | None:
        return next((t for t in self.tokens if t.backend == backend), None)

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "passed": self.passed,
            "created": self.created,
            "seconds": round(self.seconds, 2),
            "out_dir": str(self.out_dir),
            "reference": self.reference,
            "config": self.config,
            "gates": self.gates,
            "definitions": METRIC_DEFINITIONS,
            "backends": self.backends,
            "skipped": [s.to_dict() for s in self.skipped],
            "notes": self.notes,
            "samples": self.samples,
            "tensors": [t.to_dict() for t in self.tensors],
            "tokens": {**self.token_settings, "backends": [t.to_dict() for t in self.tokens]},
            "failures": self.failures,
            "error_histograms": self.histograms.to_dict(),
            "files": self.files,
        }

    def write(self) -> dict[str, Path]:
        """Write JSON, Markdown and PNG into ``report_dir``; returns their paths."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": self.report_dir / JSON_NAME,
            "markdown": self.report_dir / MARKDOWN_NAME,
            "png": self.report_dir / PNG_NAME,
        }
        self.files.update({k: str(v) for k, v in paths.items()})
        write_error_plot(self, paths["png"])
        write_text_atomic(paths["markdown"], render_markdown(self))
        write_json_atomic(paths["json"], self.to_dict())
        return paths


# -- Markdown ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}"


def _cos(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.8f}".rstrip("0").rstrip(".") if value < 1 else "1"


def _gate_text(stats: OutputStats) -> str:
    parts = []
    for g in stats.gates:
        symbol = {"atol": "abs <=", "cosine": "cos >=", "p99_rel": "p99 rel <="}[g.metric]
        parts.append(f"{symbol} {g.limit:g}" + ("" if g.passed else " **x**"))
    return ", ".join(parts) or "-"


def _fold_present(rows: list[OutputStats]) -> list[tuple[str, OutputStats]]:
    """Rows to print: every non-KV output, failing KV outputs, and one 'worst of present.*' row."""
    out: list[tuple[str, OutputStats]] = []
    present = [r for r in rows if r.group == "present"]
    for r in rows:
        if r.group != "present" or not r.passed:
            out.append((f"`{r.output}`", r))
    if present and all(r.passed for r in present):
        worst = OutputStats(present[0].backend, present[0].precision, present[0].component, "present.*")
        worst.samples = max(r.samples for r in present)
        worst.max_abs = max(r.max_abs for r in present)
        worst.mean_abs = max(r.mean_abs for r in present)
        worst.p99_abs = max(r.p99_abs for r in present)
        worst.p99_rel = max(r.p99_rel for r in present)
        worst.max_rel = max(r.max_rel for r in present)
        worst.cosine = min(r.cosine for r in present)
        worst.gates = present[0].gates
        out.append((f"`present.*` (worst of {len(present)})", worst))
    return out


def render_markdown(report: CompareReport) -> str:
    status = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# autoglm-trt compare: {status}",
        "",
        f"- export: `{report.out_dir}`",
        f"- reference: {report.reference.get('name', 'transformers')} (`{report.reference.get('checkpoint')}`)",
        f"- held-out data: `{report.reference.get('data')}` ({report.reference.get('items', 0)} items)",
        "- samples: " + ", ".join(f"{c} {len(s)}" for c, s in report.samples.items()),
        f"- created {report.created}, {report.seconds:.1f} s",
    ]
    for skip in report.skipped:
        lines.append(f"- {skip.line()}")
    for note in report.notes:
        lines.append(f"- note: {note}")
    lines += [
        "",
        "## Tensors vs PyTorch (worst over all samples)",
        "",
        "| backend | component | output | samples | max abs | mean abs | p99 abs | p99 rel (÷ RMS) | min cosine | gates | result |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    order = list(dict.fromkeys((t.backend, t.component) for t in report.tensors))
    for backend, component in order:
        rows = [t for t in report.tensors if t.backend == backend and t.component == component]
        for name, r in _fold_present(rows):
            lines.append(
                f"| {backend} | {component} | {name} | {r.samples} | {_num(r.max_abs)} | {_num(r.mean_abs)} | "
                f"{_num(r.p99_abs)} | {_num(r.p99_rel)} | {_cos(r.cosine)} | {_gate_text(r)} | "
                f"{'pass' if r.passed else '**FAIL**'} |"
            )
    if report.tokens:
        settings = report.token_settings
        lines += [
            "",
            f"## Tokens: greedy, {settings.get('max_new_tokens')} new tokens, {settings.get('prompts')} held-out prompts, "
            "vs transformers `generate`",
            "",
            "| backend | teacher-forced | exact match | mean first divergence | mean common prefix | gates | result |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for t in report.tokens:
            forced = t.teacher_forced_agreement
            forced_gate = f">= {t.teacher_forced_threshold:.0%} teacher-forced, " if t.teacher_forced_threshold else ""
            lines.append(
                f"| {t.backend} | {'n/a' if forced is None else f'{forced:.1%}'} | "
                f"{t.exact_matches}/{t.prompts} ({t.exact_match_rate:.1%}) | "
                f"{_num(t.mean_first_divergence)} | {t.mean_common_prefix:.2f} | "
                f"{forced_gate}>= {t.threshold:.0%} exact | {'pass' if t.passed else '**FAIL**'} |"
            )
    elif report.token_settings.get("skipped"):
        lines += ["", f"Token-level check skipped: {report.token_settings['skipped']}"]
    lines += ["", "## Gates", "", "| precision | output group | max abs <= | cosine >= | p99 rel <= | tokens teacher-forced >= "
              "| tokens exact match >= |", "|---|---|---:|---:|---:|---:|---:|"]
    for precision, gates in report.gates.items():
        for group in GROUP_ORDER:
            g = gates[group]
            lines.append(f"| {precision} | {group} | {_num(g['atol'])} | {_num(g['cosine'], 6)} | {_num(g['p99_rel'])} | "
                         f"{gates['token_teacher_forced']:.0%} | {gates['token_exact_match']:.0%} |")
    failures = report.failures
    lines += ["", "## Failures", ""]
    lines += [f"- {f}" for f in failures] if failures else ["none"]
    if report.files.get("png"):
        lines += ["", f"![error distributions]({Path(report.files['png']).name})"]
    return "\n".join(lines) + "\n"


# -- PNG -----------------------------------------------------------------------------------------


def write_error_plot(report: CompareReport, path: Path) -> Path:
    """Histogram curves of log10 |error| per output group, one curve per backend (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    counts = report.histograms.counts
    groups = [g for g in GROUP_ORDER if any(k[1] == g for k in counts)] or ["logits"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), squeeze=False)
    centers = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2
    backends = list(dict.fromkeys(k[0] for k in counts))
    colors = {b: plt.cm.tab10(i % 10) for i, b in enumerate(backends)}
    precision_of = {b["name"]: b["precision"] for b in report.backends}
    for ax, group in zip(axes[0], groups):
        for backend in backends:
            c = counts.get((backend, group))
            if c is None or not c.sum():
                continue
            ax.step(centers, c / c.sum(), where="mid", label=backend, color=colors[backend])
        drawn = set()
        for precision, gates in report.gates.items():
            atol = gates[group]["atol"] if group in gates else None
            if atol and any(precision_of.get(b) == precision for b in backends) and atol not in drawn:
                ax.axvline(math.log10(atol), color="grey", linestyle="--", linewidth=0.8)
                ax.text(math.log10(atol), ax.get_ylim()[1] * 0.95, f" {precision} atol", fontsize=7, color="grey",
                        va="top")
                drawn.add(atol)
        ax.set_title(f"{group}{'.*' if group == 'present' else ''}: |actual - transformers|")
        ax.set_xlabel("log10 absolute error (zeros at -12)")
        ax.set_ylabel("fraction of elements")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    status = "PASSED" if report.passed else "FAILED"
    fig.suptitle(f"autoglm-trt compare ({status}): error distributions per output and backend", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


__all__ = ["CompareReport", "ErrorHistograms", "render_markdown", "write_error_plot"]
