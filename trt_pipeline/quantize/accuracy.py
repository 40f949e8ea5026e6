"""Held-out accuracy of a precision variant (``OUT/onnx/fp16`` or ``OUT/onnx/int8``) on a CPU.

**Reference.** The reference is the fp32 ONNX export (``OUT/onnx/fp32``) run on ONNX Runtime
(CPU). That graph is itself validated equal to transformers (the PyTorch reference) within 1e-4
on the logits and 1e-5 on the vision features by ``autoglm-trt export``/``validate``, so differences
measured here are the cost of the precision change alone, not of the export. Both models get
exactly the same inputs: the held-out items (``calibration/heldout``, never used for calibration)
turned into real feeds by :class:`~trt_pipeline.quantize.calibration_reader.CalibrationReader`
(vision patches; decoder prefill feeds; decode-like feeds with the fp32 KV cache).

**Metrics**, per output (``image_features``; ``logits`` over prefill and decode feeds; ``present``,
every KV-cache output of a feed concatenated), computed per held-out feed and then aggregated:

* ``cosine_min`` / ``cosine_mean``: cosine similarity of the flattened output vs the reference,
  worst and mean over feeds (gates use the worst);
* ``max_abs``: largest |variant - reference| element;
* ``p99_rel``: 99th percentile of the relative error ``|x - r| / (|r| + eps)`` over the elements of
  one feed, worst over feeds. ``eps = 0.1 * RMS(r)`` (RMS of that feed's reference output): elements
  much smaller than the tensor's typical magnitude would otherwise dominate with meaningless
  ratios (a logit of 1e-4 off by 1e-4 is "100 %" wrong), so an error on such an element counts
  relative to a tenth of the tensor's scale instead. For |r| >> eps it is the plain relative error;
* ``top1_agreement`` (logits): fraction of positions whose argmax equals the reference's
  (teacher-forced: both models see the same tokens);
* generation (``tokens``): greedy decoding of ``max_new_tokens`` with the full host loop, fp32 vs
  variant ONNX (vision + decoder) on each held-out prompt; ``token_agreement`` = matching positions /
  compared positions (a sequence that stops early counts its missing positions as mismatches),
  ``exact_match`` = share of prompts with identical sequences, ``first_token_agreement``.

Gates (:data:`DEFAULT_GATES`): fp16 ``logits.cosine_min >= 0.9999`` and ``logits.p99_rel <= 1e-2``;
int8 ``logits.cosine_min >= 0.99`` and ``image_features.cosine_min >= 0.99``. :func:`evaluate_variant`
writes ``accuracy.json`` into the variant folder first and then raises
:class:`~trt_pipeline.errors.AccuracyError` naming the failing output and numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.artifacts import write_json_atomic
from trt_pipeline.errors import AccuracyError, OnnxModelError
from trt_pipeline.progress import progress_bar

VISION, DECODER = "vision_encoder", "decoder"
REL_EPS_FRACTION = 0.1  # eps = 0.1 * RMS(reference)
ACCURACY_FILE = "accuracy.json"


@dataclass(frozen=True)
class Gate:
    output: str
    metric: str
    op: str  # ">=" or "<="
    threshold: float

    def check(self, value: float | None) -> bool:
        if value is None or not np.isfinite(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "metric": self.metric, "op": self.op, "threshold": self.threshold}


DEFAULT_GATES: dict[str, tuple[Gate, ...]] = {
    "fp16": (Gate("logits", "cosine_min", ">=", 0.9999), Gate("logits", "p99_rel", "<=", 1e-2)),
    "int8": (Gate("logits", "cosine_min", ">=", 0.99), Gate("image_features", "cosine_min", ">=", 0.99)),
}


def gates_for(precision: str, min_cosine: float | None = None, max_p99_rel: float | None = None) -> tuple[Gate, ...]:
    """Default gates of ``precision`` with the thresholds overridden where given."""
    out = []
    for gate in DEFAULT_GATES.get(precision, ()):
        if gate.metric == "cosine_min" and min_cosine is not None:
            gate = Gate(gate.output, gate.metric, gate.op, min_cosine)
        if gate.metric == "p99_rel" and max_p99_rel is not None:
            gate = Gate(gate.output, gate.metric, gate.op, max_p99_rel)
        out.append(gate)
    return tuple(out)


# --- metrics --------------------------------------------------------------------------------
def tensor_metrics(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """cosine, max abs, p99 relative error (eps = 0.1 * RMS(reference)) of one output."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    act = np.asarray(actual, dtype=np.float64).ravel()
    if ref.shape != act.shape:
        raise OnnxModelError(f"output shapes differ: reference {np.shape(reference)} vs variant {np.shape(actual)}.")
    if not ref.size:
        return {"cosine": 1.0, "max_abs": 0.0, "p99_rel": 0.0}
    diff = np.abs(act - ref)
    norms = float(np.linalg.norm(ref) * np.linalg.norm(act))
    cosine = float(ref @ act / norms) if norms > 0 else float(np.array_equal(ref, act))
    eps = REL_EPS_FRACTION * float(np.sqrt(np.mean(ref * ref))) or 1e-12
    rel = diff / (np.abs(ref) + eps)
    if not np.all(np.isfinite(act)):
        return {"cosine": float("nan"), "max_abs": float("inf"), "p99_rel": float("inf")}
    return {"cosine": cosine, "max_abs": float(diff.max()), "p99_rel": float(np.percentile(rel, 99))}


class _Aggregate:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.top1: list[np.ndarray] = []

    def add(self, reference: np.ndarray, actual: np.ndarray, top1: bool = False) -> None:
        self.rows.append(tensor_metrics(reference, actual))
        if top1:
            self.top1.append((np.argmax(reference, -1) == np.argmax(actual, -1)).ravel())

    def result(self) -> dict[str, Any] | None:
        if not self.rows:
            return None
        cos = [r["cosine"] for r in self.rows]
        out: dict[str, Any] = {
            "feeds": len(self.rows),
            "cosine_min": float(np.min(cos)),
            "cosine_mean": float(np.mean(cos)),
            "max_abs": float(np.max([r["max_abs"] for r in self.rows])),
            "p99_rel": float(np.max([r["p99_rel"] for r in self.rows])),
            "p99_rel_mean": float(np.mean([r["p99_rel"] for r in self.rows])),
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


def _run(session: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, session.run(names, _cast_feed(session, feed)))}


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
        gates: override :data:`DEFAULT_GATES`.
        reader: a ready :class:`CalibrationReader` over the held-out items (reuses its feeds).
        write: write ``accuracy.json`` into the variant folder.
        raise_on_failure: raise AccuracyError when a gate fails (after writing accuracy.json).

    Returns the report dict (also the content of ``accuracy.json``).
    """
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, session

    out_dir = Path(out_dir)
    folder = Path(variant_dir) if variant_dir is not None else out_dir / "onnx" / precision
    gates = tuple(gates) if gates is not None else DEFAULT_GATES.get(precision, ())
    start = time.perf_counter()
    reader = reader or CalibrationReader(out_dir, heldout_items, max_samples, decode_steps=decode_steps,
                                         show_progress=show_progress, description="held-out inputs")
    feeds = reader.build()
    components = [c for c in (VISION, DECODER) if c in reader.components and (folder / f"{c}.onnx").is_file()]
    if not components:
        raise OnnxModelError(f"no component ONNX file in {folder}.", path=folder,
                             hint=f"run `autoglm-trt precision {precision}` first.")
    metrics: dict[str, Any] = {}
    with progress_bar(show_progress) as progress:
        total = len(feeds.vision_encoder) + len(feeds.decoder) + len(reader)
        task = progress.add_task(f"evaluate {precision}", total=total)
        for component in components:
            variant_file = folder / f"{component}.onnx"
            ref_session, var_session = session(onnx_path(out_dir, "fp32", component)), session(variant_file)
            if component == VISION:
                agg = _Aggregate()
                for feed in feeds.vision_encoder:
                    agg.add(_run(ref_session, feed)["image_features"], _run(var_session, feed)["image_features"])
                    progress.advance(task)
                metrics["image_features"] = agg.result()
            else:
                logits, logits_prefill, logits_decode, present = _Aggregate(), _Aggregate(), _Aggregate(), _Aggregate()
                kinds = ["prefill"] * len(feeds.decoder_prefill) + ["decode"] * len(feeds.decoder_decode)
                for kind, feed in zip(kinds, feeds.decoder):
                    ref, act = _run(ref_session, feed), _run(var_session, feed)
                    logits.add(ref["logits"], act["logits"], top1=True)
                    (logits_prefill if kind == "prefill" else logits_decode).add(ref["logits"], act["logits"], top1=True)
                    names = sorted(n for n in ref if n.startswith("present."))
                    present.add(np.concatenate([ref[n].ravel() for n in names]),
                                np.concatenate([act[n].ravel() for n in names]))
                    progress.advance(task)
                metrics["logits"] = logits.result()
                metrics["logits_prefill"] = logits_prefill.result()
                metrics["logits_decode"] = logits_decode.result()
                metrics["present"] = present.result()
            del ref_session, var_session
        tokens = None
        if DECODER in components:
            tokens = token_agreement(out_dir, folder, reader, max_new_tokens, progress=progress, task=task)
    checks = []
    for gate in gates:
        if metrics.get(gate.output) is None:  # e.g. a variant folder holding only the decoder
            checks.append({**gate.to_dict(), "value": None, "passed": True, "skipped": "output not in this variant"})
            continue
        value = metrics[gate.output].get(gate.metric)
        checks.append({**gate.to_dict(), "value": value, "passed": gate.check(value)})
    report = {
        "precision": precision,
        "reference": "fp32 ONNX on ONNX Runtime CPU (itself validated vs transformers within 1e-4)",
        "relative_error": f"|x - r| / (|r| + {REL_EPS_FRACTION} * RMS(r)), 99th percentile per feed, worst feed",
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
    failures = [c for c in checks if not c["passed"]]
    if failures and raise_on_failure:
        raise accuracy_error(report, folder / ACCURACY_FILE)
    return report


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
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def token_agreement(
    out_dir: Path, folder: Path, reader: Any, max_new_tokens: int, progress: Any = None, task: Any = None
) -> dict[str, Any]:
    """Greedy generation with fp32 vs variant ONNX runners on every held-out prompt."""
    from trt_pipeline.models.glm4v.generation import greedy_generate
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    processing, assets = reader.processing, reader.assets
    has_vision = VISION in reader.components
    fp32 = (ort_runner(onnx_path(out_dir, "fp32", VISION)) if has_vision else None,
            ort_runner(onnx_path(out_dir, "fp32", DECODER)))
    # a component missing from the variant folder runs in fp32 on both sides
    vision_file = folder / f"{VISION}.onnx"
    variant_vision = ort_runner(vision_file) if has_vision and vision_file.is_file() else fp32[0]
    variant = (variant_vision, ort_runner(folder / f"{DECODER}.onnx"))
    matches = compared = exact = first = 0
    rows = []
    eos = processing.eos_token_ids
    for sample in reader.prepare():
        seqs = []
        for vision, decoder in (fp32, variant):
            result = greedy_generate(assets, vision, decoder, sample.inputs, max_new_tokens,
                                     eos_token_ids=eos, pad_token_id=processing.pad_token_id)
            seqs.append(result.token_lists()[0])
        ref, act = seqs
        length = max(len(ref), len(act))
        same = sum(1 for a, b in zip(ref, act) if a == b)
        matches += same
        compared += length
        exact += int(ref == act)
        first += int(bool(ref) and bool(act) and ref[0] == act[0])
        rows.append({"id": sample.id, "reference": ref, "variant": act, "agreement": same / length if length else 1.0})
        if progress is not None:
            progress.advance(task)
    n = max(len(rows), 1)
    return {
        "max_new_tokens": max_new_tokens,
        "token_agreement": matches / compared if compared else 1.0,
        "exact_match": exact / n,
        "first_token_agreement": first / n,
        "samples": rows,
    }


__all__ = ["DEFAULT_GATES", "Gate", "evaluate_variant", "gates_for", "tensor_metrics", "token_agreement"]
