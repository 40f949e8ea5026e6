"""The twin's numbers: its exports against transformers on real-workload shapes, one model at a time.

Five models take part: transformers in fp32 and in the export dtype (the references), transformers
in float64 (the yardstick of fp32 rounding, :mod:`trt_pipeline.export.float64_reference`), and the twin exported in fp32 (run on ONNX Runtime) and in the export dtype (ONNX Runtime; for
bf16, which ONNX Runtime's CPU provider cannot run, the traced export modules). At the 9B's widths
one K=2 twin is 1.9 B parameters, 7.7 GB in fp32, so no two of them fit in 12 GB together: each
phase loads one model, runs every shape, keeps only the compared outputs (logits at a few
positions, the KV cache, image features; tens of MB) and frees the model before the next.

The decoder shapes are one agent conversation on one random token sequence: a first prefill of
``prefill`` tokens on an empty cache, a chunk of ``append`` tokens on that cache, and one decoded
token on the result. The reference for every step is transformers on the whole sequence so far (no
cache); its cache of the step before is what the export is fed as ``past_key_values``, so the
export's decode path is checked against transformers' own keys and values.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_pipeline.accuracy.metrics import tensor_metrics


@dataclass(frozen=True)
class TwinShapes:
    """Shapes of the twin comparison (see the module docstring and docs/export.md for the choice)."""

    vision_patches: tuple[int, ...] = (64, 4096)
    prefill: int = 2048
    append: int = 512
    logits_per_step: int = 16
    seed: int = 0

    def decoder_steps(self) -> list[tuple[int, int]]:
        """``(sequence_length, past_sequence_length)`` of each step of the conversation."""
        return [(self.prefill, 0), (self.append, self.prefill), (1, self.prefill + self.append)]

    def logit_positions(self, seq: int) -> list[int]:
        """Positions of a step whose logits are compared: spread over it, always the last."""
        count = min(seq, self.logits_per_step)
        return sorted({int(round(i * (seq - 1) / max(count - 1, 1))) for i in range(count)})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decoder_steps": [{"sequence_length": s, "past_sequence_length": p}
                                                 for s, p in self.decoder_steps()]}


@dataclass
class Outputs:
    """What one model produced for every shape (float32 numpy)."""

    image_features: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    present: list[dict[str, np.ndarray]] = field(default_factory=list)


def token_ids(dims: Any, shapes: TwinShapes) -> torch.Tensor:
    """``[1, T]`` random text tokens (below the image special tokens) for the whole conversation."""
    total = sum(s for s, _ in shapes.decoder_steps())
    generator = torch.Generator().manual_seed(shapes.seed)
    return torch.randint(0, min(dims.text.vocab_size, dims.image_start_token_id), (1, total), generator=generator)


def pixels_and_grid(dims: Any, patches: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image of ``patches`` patches (as square as the count allows), seeded by its index."""
    from trt_pipeline.export.validate import image_grids

    grid = torch.tensor(image_grids(patches, dims.vision.spatial_merge_size, split=False))
    generator = torch.Generator().manual_seed(1000 + index)
    return torch.randn(patches, dims.vision.patch_dim, generator=generator), grid


def _cache_arrays(cache: Any) -> dict[str, np.ndarray]:
    from trt_pipeline.export.validate import as_numpy

    arrays = {}
    for i, layer in enumerate(cache.layers):
        arrays[f"present.{i}.key"], arrays[f"present.{i}.value"] = as_numpy(layer.keys), as_numpy(layer.values)
    return arrays


@torch.no_grad()
def reference_outputs(checkpoint: Path, dtype: str, dims: Any, shapes: TwinShapes) -> Outputs:
    """transformers in ``dtype`` on every shape; the model is freed before returning.

    ``float64``: :mod:`trt_pipeline.export.float64_reference` (stored weights, one component widened
    at a time); its outputs stay float64."""
    from trt_pipeline.export.float64_reference import KeepFloat64, load_float64_reference, widen
    from trt_pipeline.export.validate import reference_image_features, as_numpy, load_reference

    wide = dtype == "float64"
    model = load_float64_reference(checkpoint) if wide else load_reference(checkpoint, dtype)
    out = Outputs()
    with KeepFloat64() if wide else contextlib.nullcontext():
        if wide:
            widen(model, "vision_encoder")
        for index, patches in enumerate(shapes.vision_patches):
            pixels, grid = pixels_and_grid(dims, patches, index)
            out.image_features.append(reference_image_features(model, pixels, grid).numpy())
        if wide:
            widen(model, "decoder")
        ids = token_ids(dims, shapes)
        for seq, past in shapes.decoder_steps():
            keep = torch.tensor([past + p for p in shapes.logit_positions(seq)])
            result = model(input_ids=ids[:, : past + seq], use_cache=True, logits_to_keep=keep)
            out.logits.append(as_numpy(result.logits))
            out.present.append(_cache_arrays(result.past_key_values))
            del result
    del model
    gc.collect()
    return out


@torch.no_grad()
def export_outputs(out_dir: Path, precision: str, dtype: str, checkpoint: Path, shapes: TwinShapes,
                   reference: Outputs) -> Outputs:
    """The twin export on every shape, fed ``reference``'s KV cache as its past; runners freed after."""
    from trt_pipeline.export.validate import component_runner, infer_float32
    from trt_pipeline.models.glm4v import host
    from trt_pipeline.models.glm4v.generation import HostAssets

    assets = HostAssets.from_export_dir(out_dir)
    dims = assets.dims
    out = Outputs()
    with component_runner(out_dir, precision, dtype, checkpoint, "vision_encoder") as runner:
        for index, patches in enumerate(shapes.vision_patches):
            pixels, grid = pixels_and_grid(dims, patches, index)
            feeds = host.vision_feeds(dims.vision, assets.vision_position_table.float(), pixels, grid)
            parts = [infer_float32(runner, {k: v.float().numpy() for k, v in feed.items()}) for feed in feeds]
            out.image_features.append(np.concatenate([p["image_features"] for p in parts]))
    gc.collect()
    with component_runner(out_dir, precision, dtype, checkpoint, "decoder") as runner:
        _decoder_steps(assets, runner, shapes, reference, out)
    gc.collect()
    return out


def _decoder_steps(assets: Any, runner: Any, shapes: TwinShapes, reference: Outputs, out: Outputs) -> None:
    from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper, FeedBuilder, runner_kv_cache

    if hasattr(runner, "spec"):  # torch modules (bf16): float32 feeds, the runner casts by its own spec
        builder = FeedBuilder(assets, None, kv_cache=runner_kv_cache(runner))  # float32 feeds in the runner's cache layout
        stepper = DecoderStepper(assets, runner, builder=builder, check_inputs=False)
    else:
        stepper = DecoderStepper(assets, runner)
    ids = token_ids(assets.dims, shapes)
    layout = stepper.builder.kv_layout  # presents are kept in transformers' [B, kv, T, D] whatever the graph's
    for index, (seq, past) in enumerate(shapes.decoder_steps()):
        stepper.reset(1)
        if past:
            cache = {name.replace("present.", "past_key_values."): layout.from_heads(value)
                     for name, value in reference.present[index - 1].items()}
            stepper.load(CacheState(cache, torch.ones(1, past, dtype=torch.long), torch.full((1,), past)))
        step = stepper.prefill_tokens(ids[:, past: past + seq], logits=shapes.logit_positions(seq))
        out.logits.append(step.logits.numpy())
        out.present.append({k: np.ascontiguousarray(layout.to_heads(np.asarray(v, dtype=np.float32)))
                            for k, v in step.outputs.items() if k.startswith("present.")})


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return tensor_metrics(a, b).max_abs


def compare(expected: Outputs, actual: Outputs, shapes: TwinShapes, gates: Any, compute: str,
            drift: Outputs | None = None, drift_against: str = "float32") -> list[Any]:
    """PointResults of ``actual`` against ``expected`` (both computing in ``compute``, recorded in each
    point). With ``drift`` (transformers in ``drift_against``: fp32 for a bf16/fp16 twin, float64 for
    the fp32 twin) the gate is a multiple of ``|expected - drift|`` (:func:`trt_pipeline.export.validate._drift_gate`);
    that drift and the export's own ``|actual - drift|`` are recorded beside the error."""
    from trt_pipeline.export.validate import point_result, worst_metrics

    def result(component: str, point: dict, output: str, metrics: Any, gate: Any, pick: Any) -> Any:
        """``pick(outputs)``: the list of arrays of this point in an Outputs (several: the KV cache)."""
        drifts = (max(max_abs(w, e) for w, e in zip(pick(drift), pick(expected))),
                  max(max_abs(w, a) for w, a in zip(pick(drift), pick(actual)))) if drift else (None, None)
        return point_result(component, point, output, metrics, gate, drifts[0], drift_against, drifts[1])

    results = []
    for index, patches in enumerate(shapes.vision_patches):
        results.append(result("vision_encoder", {"compute": compute, "num_patches": patches, "images": 1},
                              "image_features", tensor_metrics(expected.image_features[index],
                                                               actual.image_features[index]),
                              gates.image_features, lambda o, i=index: [o.image_features[i]]))
    for index, (seq, past) in enumerate(shapes.decoder_steps()):
        point = {"compute": compute, "batch_size": 1, "sequence_length": seq, "past_sequence_length": past,
                 "logit_positions": len(shapes.logit_positions(seq))}
        names = sorted(expected.present[index])
        present = worst_metrics([tensor_metrics(expected.present[index][n], actual.present[index][n]) for n in names])
        results.append(result("decoder", point, "logits", tensor_metrics(expected.logits[index], actual.logits[index]),
                              gates.logits, lambda o, i=index: [o.logits[i]]))
        results.append(result("decoder", point, "present.*", present, gates.present,
                              lambda o, i=index: [o.present[i][n] for n in names]))
    return results


__all__ = ["Outputs", "TwinShapes", "compare", "export_outputs", "reference_outputs", "token_ids"]
