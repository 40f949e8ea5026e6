"""Validation of exported ONNX against the PyTorch reference (transformers) on ONNX Runtime.

The grid covers every dynamic axis at its min, an interior value and its max:

* vision encoder: num_patches in {min, interior, max}; the interior point is two images of
  different shapes, run one call per image (the encoder has no mask input) and concatenated, as
  transformers' packed ``get_image_features`` attends within each image;
* decoder: batch x sequence x past over their grids. The reference for a (batch, seq, past)
  point is transformers run once on the full ``past + seq`` tokens (logits) and once on the
  first ``past`` tokens (its KV cache becomes the ONNX ``past_key_values``), so the ONNX
  decode path is checked against transformers' own cache, not against ours.

Per output and grid point the metrics of :mod:`trt_pipeline.accuracy.metrics` (max abs, cosine,
p99 relative error) are recorded in ``reports/validation.json`` and checked against the precision's
rows of the gate table (:data:`trt_pipeline.accuracy.gates.DEFAULT_GATES`; ``atol_logits`` /
``atol_vision`` override its max-abs limits). A failure raises
:class:`~trt_pipeline.errors.AtolError` naming the output and the grid point (Optimum's ``AtolError``).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_pipeline.accuracy.gates import DEFAULT_GATES, OutputGate, PrecisionGates
from trt_pipeline.accuracy.metrics import TensorMetrics, tensor_metrics
from trt_pipeline.artifacts import ExportManifest, OutputLayout, read_export_manifest, write_json_atomic
from trt_pipeline.errors import AtolError, OnnxModelError
from trt_pipeline.models.glm4v import host
from trt_pipeline.progress import log, progress_bar


@dataclass
class PointResult:
    """Metrics of one output at one grid point and the limits it is checked against (None: not gated)."""

    component: str
    point: dict[str, Any]
    output: str
    max_abs: float
    cosine: float
    p99_rel: float
    atol: float | None
    min_cosine: float | None = None
    max_p99_rel: float | None = None
    #: max abs difference of the reference (transformers in the compared dtype) and transformers in
    #: ``drift_against`` on the same inputs: fp32 for bf16/fp16 points, float64 for the twin's fp32 points
    reference_drift: float | None = None
    drift_against: str | None = None
    #: the export's own max abs difference from that same wider reference (twin points): the
    #: rounding the gate's factor has to allow for, recorded so the ratio is visible in the report
    export_drift: float | None = None

    @property
    def passed(self) -> bool:
        gate = OutputGate(self.atol, self.min_cosine, self.max_p99_rel)
        values = {"atol": self.max_abs, "cosine": self.cosine, "p99_rel": self.p99_rel}
        return all(g.check(values[g.metric]) for g in gate.gates(self.output))


@dataclass
class ValidationReport:
    precision: str
    results: list[PointResult] = field(default_factory=list)
    backend: str = "onnxruntime-cpu"
    reference_dtype: str = "float32"
    #: "full": the export itself was run; "twin": its layer-truncated twin (export/twin_validate.py)
    mode: str = "full"
    #: how the mode was chosen, and for a twin: its shapes, the structural and hash checks
    details: dict[str, Any] = field(default_factory=dict)
    #: failures that are not a number over a tolerance (a twin whose structure differs from the export)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and not self.failures

    def __bool__(self) -> bool:  # truthy on pass, like Polygraphy's results
        return self.passed

    def worst(self, component: str) -> float:
        return max((r.max_abs for r in self.results if r.component == component), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "mode": self.mode,
            "backend": self.backend,
            "reference_dtype": self.reference_dtype,
            "passed": self.passed,
            "worst_max_abs": {c: self.worst(c) for c in sorted({r.component for r in self.results})},
            "results": [{**asdict(r), "passed": r.passed} for r in self.results],
            "failures": self.failures,
            **self.details,
        }


def point_result(
    component: str, point: dict[str, Any], output: str, metrics: TensorMetrics, gate: OutputGate,
    drift: float | None = None, drift_against: str = "float32", export_drift: float | None = None,
) -> PointResult:
    """One output at one point against its gate, widened by the reference's own drift when given
    (the bf16 / float64 yardsticks of :func:`_drift_gate`)."""
    gate = _drift_gate(gate, drift, drift_against)
    return PointResult(component, point, output, metrics.max_abs, metrics.cosine, metrics.p99_rel,
                       gate.atol, gate.cosine, gate.p99_rel, drift, drift_against if drift is not None else None,
                       export_drift)


#: bf16/fp16: atol = DRIFT_FACTOR x transformers-in-dtype's own drift from fp32 on the same inputs
DRIFT_FACTOR = 2.0
#: the twin's fp32 export: atol = FP32_DRIFT_FACTOR x transformers-fp32's own drift from float64
FP32_DRIFT_FACTOR = 3.0


def _drift_gate(gate: OutputGate, drift: float | None, drift_against: str = "float32") -> OutputGate:
    """Without a drift: the gate as is. With one, max abs is gated by a multiple of it:

    * bf16/fp16 export vs transformers in that dtype, drift = |transformers-in-dtype -
      transformers-fp32| (``drift_against="float32"``): max abs <= ``max(atol, 2 x drift)``. The
      graph is another rounding of the same maths in the same dtype; if it is no further from fp32
      than transformers-in-dtype is, the triangle inequality bounds |graph - transformers-in-dtype|
      by 2 x drift. Cosine / p99 are
      reported, not gated (the drift sets the scale).
    * the twin's fp32 export vs transformers-fp32, drift = |transformers-fp32 - transformers-fp64|
      (``drift_against="float64"``, :mod:`trt_pipeline.export.float64_reference`): max abs <=
      ``max(atol, 3 x drift)``. fp32 rounding grows with the reductions' width and the sequence
      length, so the fixed fp32 atol (set on width-64 models) is only the floor. The factor: the
      bf16 twin runs on torch's kernels as transformers does (equal roundings: 1 + 1); the fp32 twin
      runs on ONNX Runtime (MLAS GEMMs, attention as explicit MatMul/Softmax, other summation
      orders), so its own rounding may be up to 2 x transformers': |export - transformers| <=
      |export - fp64| + |transformers - fp64| <= (2 + 1) x drift. Measured on the 9B's vision
      tower (4,096 patches): error 1.74e-5 against a drift of 8.85e-6, 1.97 x. ``export_drift``
      records |export - fp64| beside it, so the export's own share is visible. The cosine gate is kept.

    A real bug (wrong weight, mask, rotary) gives errors of the size of the activations, orders of
    magnitude above either drift (tests/export/test_twin_fp32_gate.py)."""
    if drift is None:
        return gate
    if drift_against == "float64":
        return dataclasses.replace(gate, atol=max(gate.atol or 0.0, FP32_DRIFT_FACTOR * drift))
    return OutputGate(atol=max(gate.atol or 0.0, DRIFT_FACTOR * drift))


def worst_metrics(rows: list[TensorMetrics]) -> TensorMetrics:
    """Worst of each metric over several tensors (the KV cache of every layer)."""
    return TensorMetrics(max(r.max_abs for r in rows), min(r.cosine for r in rows), max(r.p99_rel for r in rows))


def image_grids(num_patches: int, merge: int, split: bool) -> list[list[int]]:
    """Image grids (t=1, h, w; h and w multiples of merge) whose patches add up to ``num_patches``."""
    blocks = num_patches // (merge * merge)
    if split and blocks >= 2:
        first = blocks // 2
        return image_grids(first * merge * merge, merge, False) + image_grids((blocks - first) * merge * merge, merge, False)
    a = max(d for d in range(1, int(blocks**0.5) + 1) if blocks % d == 0)
    return [[1, a * merge, (blocks // a) * merge]]


def validation_gates(precision: str, atol_logits: float | None, atol_vision: float | None) -> PrecisionGates:
    """The gate table's rows of ``precision`` (fp32 for any other), max-abs limits overridden where given."""
    gates = DEFAULT_GATES.get(precision, DEFAULT_GATES["fp32"])
    atol = {"image_features": atol_vision, "logits": atol_logits, "present": atol_logits}
    groups = {g: dataclasses.replace(gates.output(g), atol=a) for g, a in atol.items() if a is not None}
    return dataclasses.replace(gates, **groups)


def load_reference(checkpoint: Path, dtype: str = "float32") -> Any:
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=getattr(torch, dtype)).eval()


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """float32 numpy of any torch tensor (bf16 has no numpy dtype); float64 stays float64."""
    return tensor.float().numpy() if tensor.is_floating_point() and tensor.dtype != torch.float64 else tensor.numpy()


def reference_image_features(reference: Any, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """transformers' image features for one image, in the reference vision tower's own dtype."""
    dtype = reference.model.visual.dtype  # the vision tower's own (a float64 reference widens only it)
    expected = reference.model.get_image_features(pixels.to(dtype), grid, return_dict=True).pooler_output
    expected = torch.cat(list(expected), 0) if isinstance(expected, (list, tuple)) else expected
    return expected if expected.dtype == torch.float64 else expected.float()


def infer_float32(runner: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``runner`` with each float feed cast to the dtype its graph input declares; float32 outputs.

    ONNX Runtime sessions declare their input dtypes (fp16 graphs take fp16 KV caches); the
    torch runner casts by its own spec (bf16 has no numpy dtype)."""
    if hasattr(runner, "spec"):
        outputs = runner.infer(feed, check_inputs=False)
    else:
        declared = {name: np.dtype(dtype.numpy() if hasattr(dtype, "numpy") else dtype)
                    for name, (dtype, _) in runner.get_input_metadata().items()}
        feed = {k: v.astype(declared[k]) if v.dtype.kind == "f" and k in declared else v for k, v in feed.items()}
        outputs = runner.infer(feed)
    return {k: np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            for k, v in outputs.items()}


def _decoder_drift(fp32_reference: Any, full: Any, ids: torch.Tensor, past: int) -> tuple[float, float]:
    """transformers-in-dtype vs transformers-in-fp32 on the same ids: (logits, KV) max abs difference."""
    full32 = fp32_reference(input_ids=ids, use_cache=True)
    logits = tensor_metrics(as_numpy(full32.logits[:, past:]), as_numpy(full.logits[:, past:])).max_abs
    kv = max(tensor_metrics(as_numpy(a), as_numpy(b)).max_abs
             for l32, l in zip(full32.past_key_values.layers, full.past_key_values.layers)
             for a, b in ((l32.keys, l.keys), (l32.values, l.values)))
    return logits, kv


@torch.no_grad()
def validate_vision(
    reference: Any, assets: Any, runner: Any, grid_values: list[int], gate: OutputGate, fp32_reference: Any = None
) -> list[PointResult]:
    merge = assets.dims.vision.spatial_merge_size
    results = []
    for index, patches in enumerate(grid_values):
        grids = image_grids(patches, merge, split=index == 1)
        grid = torch.tensor(grids)
        generator = torch.Generator().manual_seed(index)
        pixels = torch.randn(patches, assets.dims.vision.patch_dim, generator=generator)
        expected = reference_image_features(reference, pixels, grid)
        drift = None
        if fp32_reference is not None:
            drift = tensor_metrics(reference_image_features(fp32_reference, pixels, grid).numpy(), expected.numpy()).max_abs
        feeds = host.vision_feeds(assets.dims.vision, assets.vision_position_table.float(), pixels, grid)
        outputs = [infer_float32(runner, {k: v.float().numpy() for k, v in feed.items()}) for feed in feeds]
        actual = np.concatenate([np.asarray(out["image_features"]) for out in outputs])
        results.append(point_result("vision_encoder", {"num_patches": patches, "images": len(grids)}, "image_features",
                               tensor_metrics(expected.numpy(), actual), gate, drift))
    return results


@torch.no_grad()
def validate_decoder_point(
    reference: Any, assets: Any, runner: Any, batch: int, seq: int, past: int, gates: PrecisionGates, seed: int,
    fp32_reference: Any = None,
) -> list[PointResult]:
    """``seq`` new tokens on transformers' own KV cache of ``past`` tokens, logits at every position."""
    from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper, FeedBuilder, runner_kv_cache

    text = assets.dims.text
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(text.vocab_size, assets.dims.image_start_token_id), (batch, past + seq), generator=generator)
    full = reference(input_ids=ids, use_cache=True)
    if hasattr(runner, "spec"):  # torch modules (bf16): float32 feeds, the runner casts by its own spec
        builder = FeedBuilder(assets, None, kv_cache=runner_kv_cache(runner))  # float32 feeds in the runner's cache layout
        stepper = DecoderStepper(assets, runner, builder=builder, check_inputs=False)
    else:
        stepper = DecoderStepper(assets, runner)
    stepper.reset(batch)
    layout = stepper.builder.kv_layout  # transformers' caches are [B, kv, T, D]; an inplace graph's [B, T, kv * D]
    if past:
        prefix = reference(input_ids=ids[:, :past], use_cache=True).past_key_values
        arrays = {}
        for i, layer in enumerate(prefix.layers):
            arrays[f"past_key_values.{i}.key"] = layout.from_heads(as_numpy(layer.keys))
            arrays[f"past_key_values.{i}.value"] = layout.from_heads(as_numpy(layer.values))
        stepper.load(CacheState(arrays, torch.ones(batch, past, dtype=torch.long), torch.full((batch,), past)))
    step = stepper.prefill_tokens(ids[:, past:], logits="all")
    out = {k: np.asarray(v, dtype=np.float32) for k, v in step.outputs.items()}
    drifts = _decoder_drift(fp32_reference, full, ids, past) if fp32_reference is not None else (None, None)
    point = {"batch_size": batch, "sequence_length": seq, "past_sequence_length": past}
    logits = tensor_metrics(as_numpy(full.logits[:, past:]), step.logits.numpy())
    present = worst_metrics([tensor_metrics(as_numpy(tensor), layout.to_heads(out[f"present.{i}.{kind}"]))
                      for i, layer in enumerate(full.past_key_values.layers)
                      for kind, tensor in (("key", layer.keys), ("value", layer.values))])
    return [point_result("decoder", point, "logits", logits, gates.logits, drifts[0]),
            point_result("decoder", point, "present.*", present, gates.present, drifts[1])]


def reference_dtype(manifest: ExportManifest, precision: str) -> str:
    """The dtype transformers runs in: the export's own dtype for its own folder (bf16/fp16 exports
    are compared with transformers in bf16/fp16), float32 for derived variants (AutoCast, INT8)."""
    if precision == manifest.precision:
        return manifest.dtype
    return "float32"


def component_runner(out_dir: Path, precision: str, dtype: str, checkpoint: Path, component: str) -> Any:
    """ONNX Runtime over ``OUT/onnx/PRECISION/COMPONENT.onnx``; for bf16 the export's torch modules.

    ONNX Runtime's CPU provider has no bf16 kernels for most of the graph (``Where``, ``MatMul``,
    ``Softmax``...), so a bf16 graph cannot run here; its modules (the code that was traced) are
    run in bf16 instead, and the report says so."""
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    path = onnx_path(out_dir, precision, component, verify=False)  # validate() verified it before any load
    if dtype != "bfloat16":
        return ort_runner(path)
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.models.glm4v.io_spec import component_spec
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import TorchModuleRunner

    model = Glm4vExportModel.from_pretrained(checkpoint, dtype=dtype)
    manifest = read_export_manifest(out_dir)
    model.decoder.use_graph(manifest.decoder_ops, manifest.kv_cache)  # the flavour that was traced
    module = model.vision_encoder if component == "vision_encoder" else model.decoder
    spec = component_spec(model.dims, component, dtype, manifest.kv_cache)
    return TorchModuleRunner(module, spec, name=f"torch-export-bf16:{component}")


def validate(
    out_dir: Path | str,
    checkpoint: Path | str,
    precision: str = "fp32",
    atol_logits: float | None = None,
    atol_vision: float | None = None,
    show_progress: bool = True,
    max_points: int | None = None,
    *,
    verify: bool = True,
    details: dict[str, Any] | None = None,
) -> ValidationReport:
    """Compare ``OUT/onnx/PRECISION`` with transformers over the export's dim grid.

    Gates: the precision's rows of the gate table (fp32: max abs 1e-4 logits/KV, 1e-5 image
    features, cosine 0.99999), the max-abs limits overridden by ``atol_logits`` / ``atol_vision``.
    Writes ``OUT/reports/validation[-PRECISION].json`` and raises AtolError on failure. With
    ``verify`` (default) the ONNX files and host tables are checked against their manifests first.
    """
    from trt_pipeline.models.glm4v.decoder_ops import step_refusal
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path

    out_dir, checkpoint = Path(out_dir), Path(checkpoint)
    manifest = read_export_manifest(out_dir)
    ranges = manifest.ranges
    components = list(manifest.components)
    for component in components:  # integrity before any load
        onnx_path(out_dir, precision, component, verify=verify)
    assets = HostAssets.from_export_dir(out_dir, verify=verify)
    dtype = reference_dtype(manifest, precision)
    reference = load_reference(checkpoint, dtype)
    fp32_reference = load_reference(checkpoint) if dtype != "float32" else None
    # same-dtype validation: max abs against 2x the reference's own drift, fp32's limits as the floor
    gates = validation_gates(precision if dtype == "float32" else "fp32", atol_logits, atol_vision)
    report = ValidationReport(precision, reference_dtype=dtype,
                              backend="torch-export modules (ORT CPU lacks bf16 kernels)" if dtype == "bfloat16"
                              else "onnxruntime-cpu", details=dict(details or {}))
    decoder_points = list(itertools.product(
        ranges["batch_size"].grid(), ranges["sequence_length"].grid(), ranges["past_sequence_length"].grid()
    ))
    # points the decoder's contract refuses (the shared cache: no chunked prefill of a batch): named, not run
    refused = {point: why for point in decoder_points if (why := step_refusal(manifest.kv_cache, *point))}
    if refused:
        decoder_points = [point for point in decoder_points if point not in refused]
        report.details["decoder_points_not_run"] = [
            {"batch_size": b, "sequence_length": s, "past_sequence_length": p, "why": why}
            for (b, s, p), why in refused.items()]
    if max_points:
        decoder_points = decoder_points[:max_points]
    vision_points = ranges["num_patches"].grid()
    total = (len(vision_points) if "vision_encoder" in components else 0) + (
        len(decoder_points) if "decoder" in components else 0)
    with progress_bar(show_progress) as progress:
        task = progress.add_task(f"validate {precision}", total=total)
        if "vision_encoder" in components:
            with component_runner(out_dir, precision, dtype, checkpoint, "vision_encoder") as runner:
                report.results += validate_vision(reference, assets, runner, vision_points, gates.image_features,
                                                  fp32_reference)
            progress.advance(task, len(vision_points))
        if "decoder" in components:
            with component_runner(out_dir, precision, dtype, checkpoint, "decoder") as runner:
                for seed, (batch, seq, past) in enumerate(decoder_points):
                    report.results += validate_decoder_point(
                        reference, assets, runner, batch, seq, past, gates, seed, fp32_reference)
                    progress.advance(task)
    write_and_check(report, out_dir, precision)
    return report


def write_and_check(report: ValidationReport, out_dir: Path, precision: str) -> None:
    """Write ``reports/validation[-PRECISION].json``, log the worst errors, raise AtolError on a failure."""
    report_path = OutputLayout(out_dir).validation_report_for(precision)
    write_json_atomic(report_path, report.to_dict())
    for component in sorted({r.component for r in report.results}):
        log(f"validate {precision} ({report.mode}) {component} ({report.backend} vs transformers {report.reference_dtype}): "
            f"worst max abs error {report.worst(component):.3g} "
            f"over {sum(1 for r in report.results if r.component == component)} checks")
    if report.failures:
        raise OnnxModelError(f"{len(report.failures)} structural check(s) failed; first: {report.failures[0]}",
                             path=report_path, hint="re-export: the ONNX is not what this code and checkpoint make.")
    failures = [r for r in report.results if not r.passed]
    if failures:
        worst = max(failures, key=lambda r: r.max_abs / r.atol if r.atol else 1 - r.cosine)
        raise AtolError(
            f"{len(failures)} check(s) above tolerance; worst: {worst.component} output `{worst.output}` at "
            f"{worst.point}: max abs error {worst.max_abs:.3g} (atol {worst.atol}), cosine {worst.cosine:.8f} "
            f"(>= {worst.min_cosine}), p99 rel {worst.p99_rel:.3g} (<= {worst.max_p99_rel}).",
            path=report_path,
            hint="inspect the report; re-export, or loosen the tolerance only if the drift is expected.",
        )
