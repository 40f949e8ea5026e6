"""``precision int8 --target-token-agreement T``: the fewest decoder groups kept in high precision.

Steps (all on a CPU, calibration done once):

1. the decoder's node groups (:func:`~trt_pipeline.quantize.node_groups.node_groups`) and their
   sensitivity on the calibration set (:func:`~trt_pipeline.quantize.sensitivity.measure_sensitivity`);
2. the fp32 ONNX's greedy continuations of the held-out prompts (``max_new_tokens``), once;
3. a candidate "keep the k most sensitive groups in high precision" is ModelOpt-quantized with the
   same calibration and scored by **teacher-forced agreement** on the held-out prompts: the share
   of steps where the candidate's argmax, given the reference prefix, is the reference's next token
   (one prefill of the prompt and one of the reference tokens per prompt). Unlike exact greedy
   agreement it does not count every token after a first flip as wrong, so it measures the
   variant, not the luck of a near-tie;
4. :func:`fewest_groups`: k = 0 (plain INT8) first, then k = all (if even that misses the target
   the target cannot be reached: :class:`~trt_pipeline.errors.AccuracyError` naming the best
   agreement and the flag; nothing is written), then a binary search over k between a failing and
   a passing k. Agreement is not strictly monotone in k, so the result is the smallest passing k
   the bisection meets (``log2(groups)`` candidates), not a global optimum over all 2^groups subsets.

The chosen candidate's file becomes the variant's decoder (no re-quantization). Kept groups run in
``--high-precision`` (fp16 by default, recorded as ``kept_dtype``): that is what a strongly typed
TensorRT engine runs for every unquantized op and fp16 is token-identical to fp32 on the fixtures,
so fp32 (``--high-precision fp32``) would only cost bandwidth; ``fp32`` remains for fp32 deployments.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.errors import AccuracyError

TARGET_FLAG = "--target-token-agreement"


@dataclass
class TeacherForced:
    """Teacher-forced agreement of one candidate over the held-out prompts."""

    agreement: float
    steps: int
    per_prompt: list[float] = field(default_factory=list)


class HeldoutReference:
    """The fp32 greedy continuations of the held-out prompts, and candidates scored against them.

    Args:
        out_dir: the export folder (fp32 ONNX, host tables).
        reader: a prepared held-out :class:`~trt_pipeline.quantize.calibration_reader.CalibrationReader`.
        max_new_tokens: length of each reference continuation.
    """

    def __init__(self, out_dir: Path, reader: Any, max_new_tokens: int) -> None:
        self.out_dir, self.reader, self.max_new_tokens = Path(out_dir), reader, max_new_tokens
        span = reader.ranges.get("sequence_length")
        self.chunk_size = span.max if span is not None else None
        self._tokens: list[list[int]] | None = None

    @property
    def tokens(self) -> list[list[int]]:
        """fp32 ONNX greedy tokens per held-out prompt (computed once)."""
        if self._tokens is None:
            from trt_pipeline.models.glm4v.generation import greedy_generate
            from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

            processing = self.reader.processing
            vision = self._vision(onnx_path(self.out_dir, "fp32", "vision_encoder"))
            decoder = ort_runner(onnx_path(self.out_dir, "fp32", "decoder"))
            with _active(vision, decoder):
                self._tokens = [
                    greedy_generate(self.reader.assets, vision, decoder, s.inputs, self.max_new_tokens,
                                    eos_token_ids=processing.eos_token_ids,
                                    pad_token_id=processing.pad_token_id).token_lists()[0]
                    for s in self.reader.prepare()
                ]
        return self._tokens

    def _vision(self, path: Path | None) -> Any:
        from trt_pipeline.runtime.onnxruntime_runner import ort_runner

        has_vision = "vision_encoder" in self.reader.components
        return ort_runner(path) if has_vision and path is not None and path.is_file() else None

    def teacher_forced(self, vision_path: Path | None, decoder_path: Path) -> TeacherForced:
        """Share of reference steps the candidate (vision, decoder) predicts given the reference prefix."""
        from trt_pipeline.runtime.onnxruntime_runner import ort_runner

        references = self.tokens
        vision, decoder = self._vision(vision_path), ort_runner(decoder_path)
        per_prompt, hits, steps = [], 0, 0
        with _active(vision, decoder):
            for sample, reference in zip(self.reader.prepare(), references):
                predicted = self._predictions(vision, decoder, sample.inputs, reference)
                same = int(np.sum(np.asarray(predicted) == np.asarray(reference)))
                hits, steps = hits + same, steps + len(reference)
                per_prompt.append(same / len(reference) if reference else 1.0)
        return TeacherForced(hits / steps if steps else 1.0, steps, per_prompt)

    def _predictions(self, vision: Any, decoder: Any, inputs: Any, reference: Sequence[int]) -> list[int]:
        """The candidate's teacher-forced argmaxes: the scorer ``precision``'s own evaluation reports."""
        from trt_pipeline.models.glm4v.generation import teacher_forced_tokens

        return teacher_forced_tokens(self.reader.assets, vision, decoder, inputs, reference, chunk_size=self.chunk_size)


@contextlib.contextmanager
def _active(*runners: Any):
    with contextlib.ExitStack() as stack:
        for runner in runners:
            if runner is not None:
                stack.enter_context(runner)
        yield


def fewest_groups(count: int, agreement: Callable[[int], float], target: float) -> tuple[int, dict[int, float]]:
    """The smallest k (bisection) with ``agreement(k) >= target``; every evaluated k -> agreement.

    Raises AccuracyError when even ``k = count`` (every group kept) misses ``target``.
    """
    seen: dict[int, float] = {}

    def at(k: int) -> float:
        if k not in seen:
            seen[k] = agreement(k)
        return seen[k]

    if at(0) >= target:
        return 0, seen
    if count == 0 or at(count) < target:
        best = max(seen, key=lambda k: (seen[k], -k))
        raise AccuracyError(
            f"INT8 cannot reach {TARGET_FLAG} {target:g}: the best teacher-forced token agreement on the held-out "
            f"prompts is {seen[best]:.4f}, with {best} of {count} decoder node groups kept in high precision "
            f"(tried k = {sorted(seen)}); no variant was written.",
            hint=f"lower {TARGET_FLAG}, keep the vision encoder in fp16 (--vision-precision fp16), try "
                 "--smooth or another --method, or use `precision fp16`.",
        )
    low, high = 0, count
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle) >= target:
            high = middle
        else:
            low = middle
    return high, seen


@dataclass
class SearchResult:
    """What the search chose and measured (written to the precision manifest)."""

    target: float
    metric: str
    groups: list[dict[str, Any]]
    sensitivity: list[dict[str, Any]]
    order: list[str]
    kept: list[str]
    tried: dict[int, float]
    agreement: float
    kept_dtype: str
    sensitivity_seconds: float
    search_seconds: float

    def to_dict(self) -> dict[str, Any]:
        count = len(self.groups)
        return {
            "target_token_agreement": self.target,
            "metric": self.metric,
            "groups": self.groups,
            "sensitivity": self.sensitivity,
            "sensitivity_key": "kl: mean KL(fp32 || int8) of the decoder logits over the calibration feeds, "
                               "only that group quantized, rest fp32",
            "order": self.order,
            "kept_high_precision": self.kept,
            "kept_dtype": self.kept_dtype,
            "kept_fraction": len(self.kept) / count if count else 0.0,
            "tried": {str(k): v for k, v in sorted(self.tried.items())},
            "teacher_forced_agreement": self.agreement,
            "sensitivity_seconds": self.sensitivity_seconds,
            "search_seconds": self.search_seconds,
        }


def search_decoder_int8(
    src: Path,
    dst: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    calibration: Any,
    reference: HeldoutReference,
    vision_variant: Path | None,
    target: float,
    scratch: Path,
    *,
    quantize_options: dict[str, Any],
    high_precision_dtype: str,
) -> tuple[Any, SearchResult]:
    """Quantize the decoder ``src`` into ``dst`` keeping the fewest sensitive groups in high precision.

    Returns the chosen candidate's :class:`~trt_pipeline.quantize.int8.Int8Report` and the search record.
    Raises AccuracyError (nothing written to ``dst``) when ``target`` cannot be reached.
    """
    import time

    import onnx

    from trt_pipeline.quantize.int8 import quantize_int8_file
    from trt_pipeline.quantize.node_groups import node_groups
    from trt_pipeline.quantize.sensitivity import by_sensitivity, exact_patterns, measure_sensitivity

    groups = node_groups(onnx.load(str(src), load_external_data=False), quantize_options.get("op_types_to_quantize",
                                                                                          ("MatMul", "Gemm")))
    sensitivity, sensitivity_seconds = measure_sensitivity(src, feeds, calibration, groups, scratch,
                                                           quantize_options=quantize_options)
    order = by_sensitivity(sensitivity)
    by_name = {g.name: g for g in groups}
    user_excluded = list(quantize_options.get("nodes_to_exclude", ()))
    options = {k: v for k, v in quantize_options.items() if k != "nodes_to_exclude"}
    reports: dict[int, Any] = {}
    start = time.perf_counter()

    def agreement(k: int) -> float:
        excluded = exact_patterns([by_name[name] for name in order[:k]])
        path = scratch / f"candidate.{k}.onnx"
        reports[k] = quantize_int8_file(src, path, feeds, **options, calibration=calibration,
                                        high_precision_dtype=high_precision_dtype,
                                        nodes_to_exclude=user_excluded + excluded)
        score = reference.teacher_forced(vision_variant, path).agreement
        if score < target:  # a failing candidate is never chosen: free its disk space now
            _remove_model(path)
        return score

    k, tried = fewest_groups(len(order), agreement, target)
    _move_candidate(scratch / f"candidate.{k}.onnx", dst)
    result = SearchResult(
        target=target, metric="teacher-forced token agreement vs the fp32 ONNX greedy continuation (held-out)",
        groups=[g.to_dict() for g in groups], sensitivity=[r.to_dict() for r in sensitivity], order=order,
        kept=order[:k], tried=tried, agreement=tried[k], kept_dtype=high_precision_dtype,
        sensitivity_seconds=sensitivity_seconds,
        search_seconds=round(time.perf_counter() - start, 3),
    )
    return reports[k], result


def options_of(cfg: Any) -> dict[str, Any]:
    """:func:`~trt_pipeline.quantize.int8.quantize_int8_file` options of an ``Int8Config`` (dtype aside)."""
    return {"method": cfg.method, "percentile": cfg.percentile, "op_types_to_quantize": tuple(cfg.op_types_to_quantize),
            "op_types_to_exclude": tuple(cfg.op_types_to_exclude), "nodes_to_exclude": tuple(cfg.nodes_to_exclude),
            "disable_mha_qdq": cfg.disable_mha_qdq}


def quantize_int8_component(
    component: str,
    src: Path,
    dst: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    cfg: Any,
    scratch: Path,
    *,
    reference: HeldoutReference | None = None,
    vision_variant: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """One component of ``precision int8``: [smoothing] -> one calibration -> Q/DQ [-> target search].

    ``cfg`` is an :class:`~trt_pipeline.config.Int8Config`; the decoder is searched when it sets
    ``target_token_agreement`` (``reference`` then scores candidates with ``vision_variant``).
    Returns the :class:`~trt_pipeline.quantize.int8.Int8Report` and manifest extras
    (``smoothing``, ``search``).
    """
    from trt_pipeline.quantize.int8 import calibrate_int8, quantize_int8_file
    from trt_pipeline.quantize.smoothing import smooth_file

    options, extra = options_of(cfg), {}
    if cfg.smooth:
        smoothed = scratch / f"{component}.smoothed.onnx"
        extra["smoothing"] = smooth_file(src, smoothed, feeds, cfg.smooth_alpha).to_dict()
        src = smoothed
    calibration = calibrate_int8(src, feeds, method=cfg.method, percentile=cfg.percentile,
                                 op_types_to_quantize=options["op_types_to_quantize"])
    if component == "decoder" and cfg.target_token_agreement is not None:
        if reference is None:
            raise AccuracyError(f"{TARGET_FLAG} needs the held-out set to score candidates.")
        report, search = search_decoder_int8(src, dst, feeds, calibration, reference, vision_variant,
                                             cfg.target_token_agreement, scratch, quantize_options=options,
                                             high_precision_dtype=cfg.high_precision_dtype)
        extra["search"] = search.to_dict()
    else:
        report = quantize_int8_file(src, dst, feeds, **options, high_precision_dtype=cfg.high_precision_dtype,
                                    calibration=calibration)
    report.calibration_seconds = calibration.seconds
    report.seconds = round(report.seconds + calibration.seconds, 3)  # the one calibration pass included
    return report, extra


def _remove_model(path: Path) -> None:
    from trt_pipeline.artifacts.layout import external_data_path

    path.unlink(missing_ok=True)
    external_data_path(path).unlink(missing_ok=True)


def _move_candidate(src: Path, dst: Path) -> None:
    """Move a candidate model (and its external data file, renamed after ``dst``) into place."""
    from trt_pipeline.artifacts.layout import external_data_path

    data = external_data_path(src)
    if data.is_file():
        from trt_pipeline.graph.autocast import save_model

        import onnx

        save_model(onnx.load(str(src)), dst, external=True)
        return
    shutil.move(str(src), str(dst))


__all__ = ["HeldoutReference", "SearchResult", "TARGET_FLAG", "TeacherForced", "fewest_groups",
           "options_of", "quantize_int8_component", "search_decoder_int8"]
