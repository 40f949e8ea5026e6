"""Validation of exported ONNX against the PyTorch reference (transformers) on ONNX Runtime.

The grid covers every dynamic axis at its min, an interior value and its max:

* vision encoder: num_patches in {min, interior, max}; the interior point packs two images of
  different shapes so the cross-image attention bias is exercised;
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
from trt_pipeline.artifacts import write_json_atomic
from trt_pipeline.errors import AtolError
from trt_pipeline.export.dims import dims_from_json
from trt_pipeline.models.glm4v import host
from trt_pipeline.progress import log, progress_bar


@dataclass
class PointResult:
    """Metrics of one output at one grid point and the limits it is checked against (None: not gated)."""

    component: str
    point: dict[str, int]
    output: str
    max_abs: float
    cosine: float
    p99_rel: float
    atol: float | None
    min_cosine: float | None = None
    max_p99_rel: float | None = None

    @property
    def passed(self) -> bool:
        gate = OutputGate(self.atol, self.min_cosine, self.max_p99_rel)
        values = {"atol": self.max_abs, "cosine": self.cosine, "p99_rel": self.p99_rel}
        return all(g.check(values[g.metric]) for g in gate.gates(self.output))


@dataclass
class ValidationReport:
    precision: str
    results: list[PointResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def __bool__(self) -> bool:  # truthy on pass, like Polygraphy's results
        return self.passed

    def worst(self, component: str) -> float:
        return max((r.max_abs for r in self.results if r.component == component), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "passed": self.passed,
            "worst_max_abs": {c: self.worst(c) for c in sorted({r.component for r in self.results})},
            "results": [{**asdict(r), "passed": r.passed} for r in self.results],
        }


def _result(component: str, point: dict[str, int], output: str, metrics: TensorMetrics, gate: OutputGate) -> PointResult:
    return PointResult(component, point, output, metrics.max_abs, metrics.cosine, metrics.p99_rel,
                       gate.atol, gate.cosine, gate.p99_rel)


def _worst(rows: list[TensorMetrics]) -> TensorMetrics:
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


def load_reference(checkpoint: Path) -> Any:
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()


@torch.no_grad()
def validate_vision(reference: Any, assets: Any, runner: Any, grid_values: list[int], gate: OutputGate) -> list[PointResult]:
    merge = assets.dims.vision.spatial_merge_size
    results = []
    for index, patches in enumerate(grid_values):
        grids = image_grids(patches, merge, split=index == 1)
        grid = torch.tensor(grids)
        generator = torch.Generator().manual_seed(index)
        pixels = torch.randn(patches, assets.dims.vision.patch_dim, generator=generator)
        expected = reference.model.get_image_features(pixels, grid, return_dict=True).pooler_output
        expected = torch.cat(list(expected), 0) if isinstance(expected, (list, tuple)) else expected
        feeds = host.vision_inputs(assets.dims.vision, assets.vision_position_table.float(), grid)
        feed = {"pixel_values": pixels.numpy(), **{k: v.float().numpy() for k, v in feeds.items()}}
        actual = runner.infer(feed)["image_features"]
        results.append(_result("vision_encoder", {"num_patches": patches, "images": len(grids)}, "image_features",
                               tensor_metrics(expected.numpy(), np.asarray(actual)), gate))
    return results


@torch.no_grad()
def validate_decoder_point(
    reference: Any, assets: Any, runner: Any, batch: int, seq: int, past: int, gates: PrecisionGates, seed: int
) -> list[PointResult]:
    """``seq`` new tokens on transformers' own KV cache of ``past`` tokens, logits at every position."""
    from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper

    text = assets.dims.text
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(text.vocab_size, assets.dims.image_start_token_id), (batch, past + seq), generator=generator)
    full = reference(input_ids=ids, use_cache=True)
    stepper = DecoderStepper(assets, runner)
    stepper.reset(batch)
    if past:
        prefix = reference(input_ids=ids[:, :past], use_cache=True).past_key_values
        arrays = {}
        for i, layer in enumerate(prefix.layers):
            arrays[f"past_key_values.{i}.key"] = layer.keys.numpy()
            arrays[f"past_key_values.{i}.value"] = layer.values.numpy()
        stepper.load(CacheState(arrays, torch.ones(batch, past, dtype=torch.long), torch.full((batch,), past)))
    step = stepper.prefill_tokens(ids[:, past:], logits="all")
    out = step.outputs
    point = {"batch_size": batch, "sequence_length": seq, "past_sequence_length": past}
    logits = tensor_metrics(full.logits[:, past:].numpy(), step.logits.numpy())
    present = _worst([tensor_metrics(tensor.numpy(), np.asarray(out[f"present.{i}.{kind}"]))
                      for i, layer in enumerate(full.past_key_values.layers)
                      for kind, tensor in (("key", layer.keys), ("value", layer.values))])
    return [_result("decoder", point, "logits", logits, gates.logits),
            _result("decoder", point, "present.*", present, gates.present)]


def validate(
    out_dir: Path | str,
    checkpoint: Path | str,
    precision: str = "fp32",
    atol_logits: float | None = None,
    atol_vision: float | None = None,
    show_progress: bool = True,
    max_points: int | None = None,
) -> ValidationReport:
    """Compare ``OUT/onnx/PRECISION`` with transformers over the export's dim grid.

    Gates: the precision's rows of the gate table (fp32: max abs 1e-4 logits/KV, 1e-5 image
    features, cosine 0.99999), the max-abs limits overridden by ``atol_logits`` / ``atol_vision``.
    Writes ``OUT/reports/validation[-PRECISION].json`` and raises AtolError on failure.
    """
    from trt_pipeline.export.exporter import read_export_manifest
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    out_dir, checkpoint = Path(out_dir), Path(checkpoint)
    manifest = read_export_manifest(out_dir)
    ranges = dims_from_json(manifest["dims"])
    assets = HostAssets.from_export_dir(out_dir)
    reference = load_reference(checkpoint)
    gates = validation_gates(precision, atol_logits, atol_vision)
    report = ValidationReport(precision)
    components = list(manifest["components"])
    decoder_points = list(itertools.product(
        ranges["batch_size"].grid(), ranges["sequence_length"].grid(), ranges["past_sequence_length"].grid()
    ))
    if max_points:
        decoder_points = decoder_points[:max_points]
    vision_points = ranges["num_patches"].grid()
    total = (len(vision_points) if "vision_encoder" in components else 0) + (
        len(decoder_points) if "decoder" in components else 0)
    with progress_bar(show_progress) as progress:
        task = progress.add_task(f"validate {precision}", total=total)
        if "vision_encoder" in components:
            with ort_runner(onnx_path(out_dir, precision, "vision_encoder")) as runner:
                report.results += validate_vision(reference, assets, runner, vision_points, gates.image_features)
            progress.advance(task, len(vision_points))
        if "decoder" in components:
            with ort_runner(onnx_path(out_dir, precision, "decoder")) as runner:
                for seed, (batch, seq, past) in enumerate(decoder_points):
                    report.results += validate_decoder_point(
                        reference, assets, runner, batch, seq, past, gates, seed)
                    progress.advance(task)
    suffix = "" if precision == "fp32" else f"-{precision}"
    write_json_atomic(out_dir / "reports" / f"validation{suffix}.json", report.to_dict())
    for component in sorted({r.component for r in report.results}):
        log(f"validate {precision} {component}: worst max abs error {report.worst(component):.3g} "
            f"over {sum(1 for r in report.results if r.component == component)} checks")
    failures = [r for r in report.results if not r.passed]
    if failures:
        worst = max(failures, key=lambda r: r.max_abs / r.atol if r.atol else 1 - r.cosine)
        raise AtolError(
            f"{len(failures)} check(s) above tolerance; worst: {worst.component} output `{worst.output}` at "
            f"{worst.point}: max abs error {worst.max_abs:.3g} (atol {worst.atol}), cosine {worst.cosine:.8f} "
            f"(>= {worst.min_cosine}), p99 rel {worst.p99_rel:.3g} (<= {worst.max_p99_rel}).",
            path=out_dir / "reports" / f"validation{suffix}.json",
            hint="inspect the report; re-export, or loosen the tolerance only if the drift is expected.",
        )
    return report
