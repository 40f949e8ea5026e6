"""The final report of a pipeline run: ``OUT/reports/REPORT.md`` (Markdown + links to the PNGs).

Built only from what is on disk, so it can be regenerated at any time (``write_report(OUT)``):

* the pipeline stages (from ``pipeline_state.json``): status, duration, when;
* **every artifact** under OUT with its size and sha256 (hidden work folders, the state file and
  the report itself excluded);
* the export (``export.json``): components, I/O counts, simplification, symbolic dim ranges;
* the validation tables (``reports/validation*.json``): worst error per component and output;
* the precision variants (``onnx/PRECISION/manifest.json`` + ``accuracy.json``);
* the comparison (``reports/compare.md`` included, ``compare_errors.png`` linked);
* the benchmark (``reports/bench.json``): prefill/decode tables, speed-ups, roofline, memory, ``bench.png``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import OutputLayout, read_export_manifest, read_json, sha256_file, write_text_atomic
from trt_pipeline.units import format_bytes
from trt_pipeline.artifacts.layout import PIPELINE_LOCK, PIPELINE_STATE
from trt_pipeline.errors import OnnxModelError

REPORT_NAME = "REPORT.md"
#: names under OUT that are not artifacts (bookkeeping of the pipeline itself)
EXCLUDED_NAMES = (PIPELINE_STATE, PIPELINE_LOCK)


def artifact_files(out_dir: Path) -> list[Path]:
    """Every file under ``out_dir`` except hidden entries, the pipeline state and the report itself."""
    layout = OutputLayout(out_dir)
    out_dir = layout.root
    files = []
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.as_posix() in EXCLUDED_NAMES or path == layout.report(REPORT_NAME):
            continue
        files.append(path)
    return files


def human_bytes(size: float) -> str:
    return format_bytes(size, 1)


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.7g}" if 0.99 < value < 1.0 else f"{value:.4g}"  # keep cosines like 0.9999998 apart from 1
    return str(value).replace("|", "\\|").replace("\n", " ")


def _load(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


# --- sections -----------------------------------------------------------------------------------


def _stages_section(state: dict[str, Any] | None) -> list[str]:
    if not state or not state.get("stages"):
        return []
    rows = []
    for name, entry in state["stages"].items():
        status = entry.get("status")
        note = entry.get("finished") or entry.get("reason")
        if entry.get("gate_failed"):
            status, note = f"{status}, **gate failed**", entry["gate_failed"]
        rows.append([name, status, entry.get("seconds"), note])
    return ["## Pipeline stages", "", "Durations are those of the last run that executed the stage.", "",
            _table(["stage", "status", "seconds", "finished / note"], rows), ""]


def _artifacts_section(out_dir: Path, hash_file: Callable[[Path], str]) -> list[str]:
    files = artifact_files(out_dir)
    total = sum(f.stat().st_size for f in files)
    rows = [[f"`{f.relative_to(out_dir).as_posix()}`", human_bytes(f.stat().st_size), f"`{hash_file(f)}`"] for f in files]
    return [f"## Artifacts ({len(files)} files, {human_bytes(total)})", "",
            _table(["file", "size", "sha256"], rows), ""]


def _export_section(out_dir: Path) -> list[str]:
    try:
        manifest = dict(read_export_manifest(out_dir).raw)
    except OnnxModelError:
        return []
    lines = ["## Export", "", f"Checkpoint `{manifest.get('checkpoint', {}).get('path')}` "
             f"(sha256 `{str(manifest.get('checkpoint', {}).get('sha256', ''))[:16]}...`), opset {manifest.get('opset')}.", ""]
    rows = []
    for name, comp in manifest.get("components", {}).items():
        simp = comp.get("simplify") or {}
        nodes = (f"{simp['nodes_before']} -> {simp['nodes_after']}" if "nodes_after" in simp
                 else simp.get("skipped", "-") if simp else "-")
        rows.append([name, f"`{comp.get('file')}`", human_bytes(comp.get("bytes", 0)), len(comp.get("inputs", [])),
                     len(comp.get("outputs", [])), nodes, manifest.get("timings_s", {}).get(name)])
    lines += [_table(["component", "file", "size", "inputs", "outputs", "simplify nodes", "export s"], rows), ""]
    dims = manifest.get("dims", {})
    if dims:
        lines += ["Symbolic dims (min / opt / max; TensorRT profiles are derived from these):", "",
                  _table(["dim", "min", "opt", "max", "expr"],
                         [[k, v.get("min"), v.get("opt"), v.get("max"), v.get("expr")] for k, v in dims.items()]), ""]
    return lines


def _validation_section(out_dir: Path) -> list[str]:
    lines = []
    for path in sorted(OutputLayout(out_dir).reports_dir.glob("validation*.json")):
        data = _load(path)
        if not data:
            continue
        worst: dict[tuple[str, str], list[Any]] = {}
        for r in data.get("results", []):
            key = (r["component"], r["output"])
            entry = worst.setdefault(key, [0.0, 1.0, r.get("atol"), 0, True])
            entry[0] = max(entry[0], r["max_abs"])
            entry[1] = min(entry[1], r.get("cosine", 1.0))
            entry[3] += 1
            entry[4] = entry[4] and r.get("passed", True)
        rows = [[c, o, v[3], v[0], v[2], f"{v[1]:.8f}", "pass" if v[4] else "FAIL"] for (c, o), v in worst.items()]
        lines += [f"### {path.stem} ({data.get('precision')} ONNX Runtime vs transformers): "
                  f"{'passed' if data.get('passed') else 'FAILED'}", "",
                  _table(["component", "output", "checks", "worst max abs", "atol", "worst cosine", "result"], rows), ""]
    return (["## Validation", ""] + lines) if lines else []


def _flatten(obj: Any, prefix: str = "", limit: int = 40) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []

    def walk(value: Any, key: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value) and len(value) <= 8:
                rows.append((key, ", ".join(_cell(v) for v in value)))
            else:
                for i, v in enumerate(value[:8]):
                    walk(v, f"{key}[{i}]")
        else:
            rows.append((key, value))

    walk(obj, prefix)
    return rows


def _accuracy_tables(accuracy: dict[str, Any]) -> list[str]:
    """Metrics per output, token agreement and gates of a precision folder's accuracy.json."""
    lines = []
    metrics = accuracy.get("metrics")
    if isinstance(metrics, dict) and metrics:
        columns = ("feeds", "cosine_min", "max_abs", "p99_rel", "top1_agreement")
        rows = [[name] + [m.get(c) for c in columns] for name, m in metrics.items() if isinstance(m, dict)]
        lines += [f"Accuracy vs {accuracy.get('reference', 'the fp32 ONNX')}:", "",
                  _table(["output", *columns], rows), ""]
    tokens = accuracy.get("tokens")
    if isinstance(tokens, dict):
        keys = [k for k, v in tokens.items() if not isinstance(v, (list, dict))]
        lines += [_table(keys, [[tokens[k] for k in keys]]), ""]
    gates = accuracy.get("gates")
    if isinstance(gates, list) and gates:
        rows = [[g.get("output"), g.get("metric"), f"{g.get('op', '')} {g.get('threshold')}", g.get("value"),
                 "pass" if g.get("passed") else "**FAIL**"] for g in gates if isinstance(g, dict)]
        lines += [_table(["output", "metric", "gate", "value", "result"], rows), ""]
    if not lines:  # unknown layout: show its scalar fields
        lines += [_table(["metric", "value"], _flatten(accuracy)), ""]
    return lines


def _precision_section(out_dir: Path) -> list[str]:
    lines = []
    layout = OutputLayout(out_dir)
    for precision in layout.precisions():
        if precision == "fp32":
            continue
        folder = layout.onnx_dir(precision)
        manifest = _load(layout.precision_manifest(precision)) or {}
        accuracy = _load(layout.accuracy_report(precision)) or manifest.get("accuracy")
        passed = accuracy.get("passed") if isinstance(accuracy, dict) else None
        verdict = "" if passed is None else (": gates passed" if passed else ": **gates FAILED**")
        lines += [f"### {layout.rel(folder)}{verdict}", ""]
        comps = manifest.get("components", {})
        if comps:
            lines += [_table(["component", "precision", "file", "sha256"],
                             [[n, c.get("precision", folder.name), f"`{c.get('file')}`", f"`{str(c.get('sha256', ''))[:16]}...`"]
                              for n, c in comps.items()]), ""]
        if isinstance(manifest.get("search"), dict):
            lines += _search_lines(manifest["search"], f"../{layout.rel(folder)}")
        if isinstance(accuracy, dict):
            lines += _accuracy_tables(accuracy)
    return (["## Precision variants", ""] + lines) if lines else []


def _search_lines(search: dict[str, Any], folder: str) -> list[str]:
    """``--target-token-agreement``: groups kept in high precision, per-group sensitivity, the chart."""
    kept = search.get("kept_high_precision", [])
    rows = [[r.get("group"), r.get("kl"), r.get("p99_rel"), r.get("top1_agreement"),
             "high precision" if r.get("group") in kept else "int8"] for r in search.get("sensitivity", [])]
    return [f"Sensitivity search: {len(kept)}/{len(rows)} decoder node groups kept in high precision, "
            f"teacher-forced agreement {search.get('teacher_forced_agreement')} "
            f"(target {search.get('target_token_agreement')}).", "",
            _table(["group", "KL (only this group int8)", "p99 rel", "top-1", "precision"], rows), "",
            f"![sensitivity]({folder}/{search.get('chart')})", ""]


def _compare_section(out_dir: Path) -> list[str]:
    reports = OutputLayout(out_dir).reports_dir
    md = reports / "compare.md"
    data = _load(reports / "compare.json")
    if not md.is_file() and not data:
        return []
    lines = ["## Comparison with the PyTorch reference", ""]
    if data is not None:
        lines += [f"Result: **{'passed' if data.get('passed') else 'FAILED'}** "
                  f"([compare.json](compare.json), [compare.md](compare.md))", ""]
    if md.is_file():
        text = md.read_text(encoding="utf-8").splitlines()
        if text and text[0].startswith("# "):
            text = text[1:]  # its title; this section has its own
        for line in text:
            lines.append("#" + line if line.startswith("#") else line)  # "## X" -> "### X"
        lines.append("")
    for png in sorted(reports.glob("compare*.png")):
        lines += [f"![{png.stem}]({png.name})", ""]
    return lines


def _bench_section(out_dir: Path) -> list[str]:
    data = _load(OutputLayout(out_dir).report("bench.json"))
    if not data:
        return []
    machine, bw, cfg = data.get("machine", {}), data.get("bandwidth", {}), data.get("config", {})
    lines = ["## Benchmark", "",
             f"{machine.get('cpu')}, {machine.get('logical_cpus')} logical CPUs, {cfg.get('threads')} threads pinned "
             f"(torch and ONNX Runtime alike), batch {cfg.get('batch_size')}. Measured memory bandwidth "
             f"**{bw.get('best_gbps')} GB/s** (copy {bw.get('copy_gbps_1t')}/{bw.get('copy_gbps')}, read "
             f"{bw.get('read_gbps_1t')}/{bw.get('read_gbps')} GB/s with 1/{bw.get('threads')} threads).", ""]
    backends = data.get("backends", {})
    rows = []
    for name, e in backends.items():
        if e.get("status") != "ok":
            continue
        for r in e.get("prefill", []):
            rows.append([name, r["length"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["n"], r.get("tokens_per_s")])
    if rows:
        lines += ["### Prefill", "", _table(["backend", "prompt tokens", "p50 ms", "p90 ms", "p99 ms", "n", "tokens/s"], rows), ""]
    rows = []
    for name, e in backends.items():
        if e.get("status") != "ok":
            continue
        for r in e.get("decode", []):
            rows.append([name, r["context"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["n"], r.get("tokens_per_s")])
    if rows:
        lines += ["### Decode (one token at a given context)", "",
                  _table(["backend", "context", "p50 ms", "p90 ms", "p99 ms", "n", "tokens/s"], rows), ""]
    rows = [[p["backend"], p["context"], human_bytes(p["weight_bytes"]), human_bytes(p["kv_bytes"]),
             p.get("kv_update", "copy"), p["lower_bound_ms"], p["measured_ms"], f"{p['fraction']:.1%}"]
            for p in data.get("roofline", [])]
    if rows:
        lines += ["### Memory roofline of decode", "",
                  "Lower bound = (decoder weight bytes + KV bytes) / measured bandwidth; fraction = lower bound / measured p50. "
                  "KV bytes: the cache read once, plus a copy of it (`copy`) or only the new row (`in place`).", "",
                  _table(["backend", "context", "weights", "KV", "KV update", "lower bound ms", "measured ms", "fraction"],
                         rows), ""]
    rows = [[s["backend"], s["phase"], s.get("context", s.get("length")), f"{s['speedup']:.2f}x"]
            for s in data.get("speedups", [])]
    if rows:
        lines += ["### Speed-up over transformers eager (p50)", "",
                  _table(["backend", "phase", "context / prompt tokens", "speed-up"], rows), ""]
    rows = []
    for name, e in backends.items():
        if e.get("status") == "ok":
            image = e.get("image_prefill") or {}
            rows.append([name, human_bytes(e.get("peak_rss_bytes", 0)), human_bytes(e.get("baseline_rss_bytes", 0)),
                         e.get("load_s"), image.get("num_patches"), image.get("p50_ms")])
        else:
            rows.append([f"{name} (skipped: {e.get('reason')})", None, None, None, None, None])
    lines += ["### Memory and image prefill", "",
              _table(["backend", "peak RSS", "RSS after imports", "load s", "image patches", "image p50 ms"], rows), ""]
    for note in data.get("notes", []):
        lines.append(f"- note: {note}")
    lines += ["", "![bench](bench.png)", ""]
    return lines


def render_report(out_dir: Path | str, state: dict[str, Any] | None = None,
                  hash_file: Callable[[Path], str] = sha256_file) -> str:
    """The Markdown text of the report (see the module docstring)."""
    out_dir = Path(out_dir)
    state_path = OutputLayout(out_dir).pipeline_state
    if state is None and state_path.is_file():
        state = _load(state_path)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# autoglm-trt report: `{out_dir}`", "", f"Generated {now} by `autoglm-trt pipeline`.", ""]
    for section in (_stages_section(state), _artifacts_section(out_dir, hash_file), _export_section(out_dir),
                    _validation_section(out_dir), _precision_section(out_dir), _compare_section(out_dir),
                    _bench_section(out_dir)):
        lines += section
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: Path | str, state: dict[str, Any] | None = None,
                 hash_file: Callable[[Path], str] = sha256_file) -> Path:
    """Write ``OUT/reports/REPORT.md`` atomically and return its path."""
    out_dir = Path(out_dir)
    return write_text_atomic(OutputLayout(out_dir).report(REPORT_NAME), render_report(out_dir, state, hash_file))


__all__ = ["REPORT_NAME", "artifact_files", "render_report", "write_report"]
