"""Held-out accuracy of a precision variant (``OUT/onnx/fp16`` or ``OUT/onnx/int8``) on a CPU.

**Reference.** The reference is the fp32 ONNX export (``OUT/onnx/fp32``) run on ONNX Runtime
(CPU). That graph is itself validated equal to transformers (the PyTorch reference) within 1e-4
on the logits and 1e-5 on the vision features by ``autoglm-trt export``/``validate``, so differences
measured here are the cost of the precision change alone, not of the export. Both models get
exactly the same inputs: the held-out items (``calibration/heldout``, never used for calibration)
turned into real feeds by :class:`~trt_pipeline.quantize.calibration_reader.CalibrationReader`
(vision patches; decoder prefill feeds; decode-like feeds with the fp32 KV cache).

**Metrics** (:mod:`trt_pipeline.accuracy.metrics`), per output (``image_features``; ``logits`` over
prefill and decode feeds; ``present``, every KV-cache output of a feed concatenated), computed per
held-out feed and then aggregated: ``cosine_min`` / ``cosine_mean`` (worst and mean over feeds),
``max_abs`` (worst), ``p99_rel`` (``p99|x - r| / RMS(r)``, worst feed; ``p99_rel_mean`` the mean), and
for logits ``top1_agreement`` (share of positions whose argmax equals the reference's,
teacher-forced). Generation (``tokens``): greedy decoding of ``max_new_tokens`` with the full host
loop, fp32 vs variant ONNX on each held-out prompt, summarised by
:class:`~trt_pipeline.accuracy.tokens.TokenAgreement` (exact-match rate, token agreement,
first-token agreement, first divergence) and the variant's teacher-forced agreement (each fp32
token predicted from the fp32 prefix).

Gates: the precision's rows of the one gate table (:data:`trt_pipeline.accuracy.gates.DEFAULT_GATES`,
the same limits ``compare`` applies against transformers) on every output group, with
``--min-cosine`` / ``--max-p99-rel`` overriding the cosine / p99 limits. :func:`evaluate_variant`
writes ``accuracy.json`` into the variant folder first and then raises
:class:`~trt_pipeline.errors.AccuracyError` naming the failing output and numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.accuracy.gates import DEFAULT_GATES, Gate
from trt_pipeline.accuracy.metrics import tensor_metrics
from trt_pipeline.accuracy.tokens import TokenAgreement
from trt_pipeline.artifacts import OutputLayout, write_json_atomic
from trt_pipeline.artifacts.layout import onnx_file_name
from trt_pipeline.errors import AccuracyError, OnnxModelError
from trt_pipeline.progress import progress_bar

VISION, DECODER = "vision_encoder", "decoder"
ACCURACY_FILE = "accuracy.json"

#: Gate metric -> the aggregate over held-out feeds it is checked on (the worst feed).
AGGREGATE_OF = {"atol": "max_abs", "cosine": "cosine_min", "p99_rel": "p99_rel"}


def gates_for(precision: str, min_cosine: float | None = None, max_p99_rel: float | None = None) -> tuple[Gate, ...]:
    """The gate table's rows for ``precision``, with the cosine / p99 limits overridden where given."""
    overrides = {"cosine": min_cosine, "p99_rel": max_p99_rel}
    return tuple(Gate(g.output, g.metric, g.threshold if overrides.get(g.metric) is None else overrides[g.metric])
                 for g in DEFAULT_GATES[precision].gates())


class _Aggregate:
    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.top1: list[np.ndarray] = []

    def add(self, reference: np.ndarray, actual: np.ndarray, top1: bool = False) -> None:
        if np.shape(reference) != np.shape(actual):
            raise OnnxModelError(f"output shapes differ: reference {np.shape(reference)} vs variant {np.shape(actual)}.")
        self.rows.append(tensor_metrics(reference, actual))
        if top1:
            self.top1.append((np.argmax(reference, -1) == np.argmax(actual, -1)).ravel())

    def result(self) -> dict[str, Any] | None:
        if not self.rows:
            return None
        cos = [r.cosine for r in self.rows]
        out: dict[str, Any] = {
            "feeds": len(self.rows),
            "cosine_min": float(np.min(cos)),
            "cosine_mean": float(np.mean(cos)),
            "max_abs": float(np.max([r.max_abs for r in self.rows])),
            "p99_rel": float(np.max([r.p99_rel for r in self.rows])),
            "p99_rel_mean": float(np.mean([r.p99_rel for r in self.rows])),
        }
        if self.top1:
            out["top1_agreement"] = float(np.mean(np.concatenate(self.top1)))
        return out


def _cast_feed(session: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast float feeds to the session's declared input dtypes (fp16 I/O variants)."""
    out = {}
    for meta in session.get_inputs():
        value = feed[meta.name]
        if meta.type == "tensor(float16)" and value.dtype != np.float16:
            value = value.astype(np.float16)
        elif meta.type == "tensor(float)" and value.dtype != np.float32:
            value = value.astype(np.float32)
        out[meta.name] = value
    return out


def run_feed(session: Any, feed: dict[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs ``names`` (default: all) of an ONNX Runtime session as float32, feed cast to its input dtypes."""
    names = list(names) if names is not None else [o.name for o in session.get_outputs()]
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, session.run(names, _cast_feed(session, feed)))}


_run = run_feed


# --- evaluation -----------------------------------------------------------------------------
def evaluate_variant(
    out_dir: Path | str,
    precision: str,
    heldout_items: Sequence[Any],
    max_samples: int | None = None,
    *,
    variant_dir: Path | str | None = None,
    gates: Sequence[Gate] | None = None,
    decode_steps: int = 1,
    max_new_tokens: int = 8,
    reader: Any = None,
    write: bool = True,
    raise_on_failure: bool = True,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Compare ``OUT/onnx/PRECISION`` (or ``variant_dir``) with the fp32 ONNX on held-out inputs.

    Args:
        out_dir: export folder.
        precision: ``fp16`` / ``int8`` (selects the default gates and the folder).
        heldout_items: items of the held-out split (``load_split('calibration/heldout')``).
        max_samples: evaluate at most this many items (evenly spaced).
        variant_dir: folder holding the variant's component files (default ``OUT/onnx/PRECISION``;
            the precision stage passes its not-yet-published temporary folder).
        gates: override the gate table's rows (:func:`gates_for`).
        reader: a ready :class:`CalibrationReader` over the held-out items (reuses its feeds).
        write: write ``accuracy.json`` into the variant folder.
        raise_on_failure: raise AccuracyError when a gate fails (after writing accuracy.json).

    Returns the report dict (also the content of ``accuracy.json``).
    """
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, session

    out_dir = Path(out_dir)
    folder = Path(variant_dir) if variant_dir is not None else OutputLayout(out_dir).onnx_dir(precision)
    gates = tuple(gates) if gates is not None else gates_for(precision)
    start = time.perf_counter()
    reader = reader or CalibrationReader(out_dir, heldout_items, max_samples, decode_steps=decode_steps,
                                         show_progress=show_progress, description="held-out inputs")
    feeds = reader.build()
    components = [c for c in (VISION, DECODER) if c in reader.components and (folder / onnx_file_name(c)).is_file()]
    if not components:
        raise OnnxModelError(f"no component ONNX file in {folder}.", path=folder,
                             hint=f"run `autoglm-trt precision {precision}` first.")
    metrics: dict[str, Any] = {}
    with progress_bar(show_progress) as progress:
        total = len(feeds.vision_encoder) + len(feeds.decoder) + len(reader)
        task = progress.add_task(f"evaluate {precision}", total=total)
        advance = lambda: progress.advance(task)  # noqa: E731
        for component in components:
            ref_session = session(onnx_path(out_dir, "fp32", component))
            var_session = session(folder / onnx_file_name(component))
            evaluate = _vision_metrics if component == VISION else _decoder_metrics
            metrics.update(evaluate(ref_session, var_session, feeds, advance))
            del ref_session, var_session
        tokens = None
        if DECODER in components:
            tokens = token_agreement(out_dir, folder, reader, max_new_tokens, progress=progress, task=task,
                                     precision=precision)
    checks = check_gates(gates, metrics)
    report = {
        "precision": precision,
        "reference": "fp32 ONNX on ONNX Runtime CPU (itself validated vs transformers within 1e-4)",
        "relative_error": "p99 |x - r| / RMS(r) per feed, worst feed (trt_pipeline.accuracy.metrics)",
        "heldout": {"items": reader.item_ids, "num_items": len(reader),
                    "feeds": {VISION: len(feeds.vision_encoder), "decoder_prefill": len(feeds.decoder_prefill),
                              "decoder_decode": len(feeds.decoder_decode)}},
        "metrics": metrics,
        "tokens": tokens,
        "gates": checks,
        "passed": all(c["passed"] for c in checks),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if write:
        write_json_atomic(folder / ACCURACY_FILE, report)
    if not report["passed"] and raise_on_failure:
        raise accuracy_error(report, folder / ACCURACY_FILE)
    return report


def _vision_metrics(ref_session: Any, var_session: Any, feeds: Any, advance: Any) -> dict[str, Any]:
    agg = _Aggregate()
    for feed in feeds.vision_encoder:
        agg.add(_run(ref_session, feed)["image_features"], _run(var_session, feed)["image_features"])
        advance()
    return {"image_features": agg.result()}


def _decoder_metrics(ref_session: Any, var_session: Any, feeds: Any, advance: Any) -> dict[str, Any]:
    """Logits (all feeds, prefill only, decode only, with top-1 agreement) and the concatenated KV cache."""
    logits, logits_prefill, logits_decode, present = _Aggregate(), _Aggregate(), _Aggregate(), _Aggregate()
    kinds = ["prefill"] * len(feeds.decoder_prefill) + ["decode"] * len(feeds.decoder_decode)
    for kind, feed in zip(kinds, feeds.decoder):
        ref, act = _run(ref_session, feed), _run(var_session, feed)
        logits.add(ref["logits"], act["logits"], top1=True)
        (logits_prefill if kind == "prefill" else logits_decode).add(ref["logits"], act["logits"], top1=True)
        names = sorted(n for n in ref if n.startswith("present."))
        present.add(np.concatenate([ref[n].ravel() for n in names]), np.concatenate([act[n].ravel() for n in names]))
        advance()
    return {"logits": logits.result(), "logits_prefill": logits_prefill.result(),
            "logits_decode": logits_decode.result(), "present": present.result()}


def check_gates(gates: Sequence[Gate], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per gate: the worst-feed aggregate it is checked on, its value and verdict."""
    checks = []
    for gate in gates:
        row = {**gate.to_dict(), "metric": AGGREGATE_OF[gate.metric]}
        if metrics.get(gate.output) is None:  # e.g. a variant folder holding only the decoder
            checks.append({**row, "value": None, "passed": True, "skipped": "output not in this variant"})
            continue
        value = metrics[gate.output].get(row["metric"])
        checks.append({**row, "value": value, "passed": gate.check(value)})
    return checks


def accuracy_error(report: dict[str, Any], path: Path) -> AccuracyError:
    failures = [c for c in report["gates"] if not c["passed"]]
    text = "; ".join(
        f"`{c['output']}` {c['metric']} {_fmt(c['value'])} (needs {c['op']} {c['threshold']})" for c in failures
    )
    return AccuracyError(
        f"{report['precision']} variant fails its accuracy gate on the held-out set: {text}.",
        path=path,
        hint=HINTS.get(report["precision"], "inspect accuracy.json."),
    )


HINTS = {
    "fp16": "inspect accuracy.json; keep sensitive nodes in fp32 (--exclude-op-types, --exclude-nodes REGEX) "
            "or lower --data-max so that AutoCast keeps more of the graph in fp32.",
    "int8": "inspect accuracy.json; try another --method or more --calib-samples, leave sensitive nodes "
            "unquantized (--exclude-nodes REGEX), or keep a component in fp16 (--vision-precision/--decoder-precision fp16).",
    "int4": "inspect accuracy.json; try another --method (awq, awq-clip), a smaller --block-size (64, 32, 16), more "
            "--calib-samples, or leave sensitive MatMuls in floating point (--exclude-nodes REGEX).",
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def token_agreement(
    out_dir: Path, folder: Path, reader: Any, max_new_tokens: int, progress: Any = None, task: Any = None,
    precision: str = "",
) -> dict[str, Any]:
    """Greedy generation with fp32 vs variant ONNX runners on every held-out prompt, and the variant's
    teacher-forced predictions of the fp32 sequence."""
    from trt_pipeline.models.glm4v.generation import greedy_generate, teacher_forced_tokens
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    processing, assets = reader.processing, reader.assets
    has_vision = VISION in reader.components
    fp32 = (ort_runner(onnx_path(out_dir, "fp32", VISION)) if has_vision else None,
            ort_runner(onnx_path(out_dir, "fp32", DECODER)))
    # a component missing from the variant folder runs in fp32 on both sides
    vision_file = folder / onnx_file_name(VISION)
    variant_vision = ort_runner(vision_file) if has_vision and vision_file.is_file() else fp32[0]
    variant = (variant_vision, ort_runner(folder / onnx_file_name(DECODER)))
    # Reported, not gated (threshold 0): the table's token gate is compare's, against transformers'
    # own generate over 16 tokens; a few held-out prompts of 8 tokens vs the fp32 ONNX are too few to
    # gate whole-sequence matches (tiny int8: 1 of 4 prompts exact, while every tensor gate passes).
    agreement = TokenAgreement(f"ort-{precision}", precision, 0.0)
    eos = processing.eos_token_ids
    for sample in reader.prepare():
        ref, act = (greedy_generate(assets, vision, decoder, sample.inputs, max_new_tokens, eos_token_ids=eos,
                                    pad_token_id=processing.pad_token_id).token_lists()[0]
                    for vision, decoder in (fp32, variant))
        forced = teacher_forced_tokens(assets, variant[0], variant[1], sample.inputs, ref)
        agreement.add(sample.id, ref, act, forced)
        if progress is not None:
            progress.advance(task)
    return {"max_new_tokens": max_new_tokens, **agreement.to_dict()}


__all__ = ["ACCURACY_FILE", "evaluate_variant", "check_gates", "gates_for", "run_feed", "token_agreement"]
