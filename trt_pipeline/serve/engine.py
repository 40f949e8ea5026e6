"""The model behind the server: (vision, decoder) runners of one backend, driven one step at a time.

``ServeEngine`` is the only place the scheduler touches the model:

* :meth:`ServeEngine.prefill` runs one sequence's prompt (in chunks of the prefill profile, on top
  of a reused prefix cache if any) and returns the last-position logits and the sequence's cache;
* :meth:`ServeEngine.decode_step` advances a batch of sequences of *different* lengths by one token
  each: caches are left-padded to the longest, padded slots masked out through ``attention_mask``
  (the decoder builds its causal + padding bias from it), and each row's cache is cut back to its
  own length afterwards. A sequence can therefore join or leave the batch between any two steps.

Runners come from a registry (:data:`RUNNER_FACTORIES`) over the same factories ``generate`` and
``compare`` use: ONNX Runtime (``ort``), TensorRT (``trt``, GPU hosts; elsewhere
:class:`~trt_pipeline.errors.TensorRTUnavailableError` at start-up) and the export-friendly torch
modules (``torch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_pipeline.errors import ConfigError, PipelineError


@dataclass(frozen=True)
class EngineLimits:
    """What the exported profiles allow (from ``export.json``)."""

    max_batch: int
    max_prefill: int  # sequence_length max: tokens per prefill chunk
    max_past: int  # past_sequence_length max: the KV cache a step may attend to
    max_image_tokens: int

    @property
    def max_context(self) -> int:
        """Longest sequence (prompt + reply): the last decode step attends ``max_past`` cached tokens."""
        return self.max_past + 1

    @classmethod
    def from_export(cls, out_dir: Path) -> EngineLimits:
        from trt_pipeline.artifacts import read_export_manifest

        dims = read_export_manifest(out_dir).dims
        return cls(dims["batch_size"].max, dims["sequence_length"].max,
                   dims["past_sequence_length"].max, dims["num_image_tokens"].max)


@dataclass
class SequenceCache:
    """One sequence's KV cache (per past input ``[1, kv_heads, length, head_dim]``) and next position."""

    kv: list[np.ndarray]
    next_position: int

    @property
    def length(self) -> int:
        return int(self.kv[0].shape[2]) if self.kv else 0


def ort_runners(out_dir: Path, precision: str) -> tuple[Any, Any]:
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    return ort_component_runners(out_dir, precision)


def trt_runners(out_dir: Path, precision: str) -> tuple[Any, Any]:
    from trt_pipeline.runtime.tensorrt_runner import trt_component_runners

    return trt_component_runners(out_dir, precision)  # TensorRTUnavailableError without TensorRT/GPU


def torch_runners(out_dir: Path, precision: str) -> tuple[Any, Any]:
    from trt_pipeline.generate import _need_checkpoint, resolve_source
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    checkpoint = _need_checkpoint(resolve_source(out_dir), "torch")
    dtype = {"fp32": "float32", "fp16": "float16"}.get(precision)
    if dtype is None:
        raise ConfigError(f"--backend torch runs fp32 or fp16, not {precision!r}.")
    return torch_component_runners(Glm4vExportModel.from_pretrained(checkpoint, dtype=dtype))


#: backend name -> (OUT, precision) -> (vision runner, decoder runner). Add a runtime here.
RUNNER_FACTORIES: dict[str, Callable[[Path, str], tuple[Any, Any]]] = {
    "ort": ort_runners,
    "trt": trt_runners,
    "torch": torch_runners,
}


class ServeEngine:
    """Prefill and batched decode over one (vision, decoder) runner pair (see the module docstring).

    Feeds and steps go through the model's own
    :class:`~trt_pipeline.models.glm4v.stepper.FeedBuilder` / :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`
    (``logits_positions``, runner dtypes, chunked prefill on a filled cache); this class only loads a
    sequence's cache into the stepper, or a left-padded batch of them, and takes it back out.
    """

    def __init__(self, assets: Any, vision: Any, decoder: Any, limits: EngineLimits,
                 backend: str = "ort", precision: str = "fp32") -> None:
        self.assets, self.vision, self.decoder, self.limits = assets, vision, decoder, limits
        self.backend, self.precision = backend, precision
        self.dims = assets.dims

    def _stepper(self) -> Any:
        from trt_pipeline.models.glm4v.stepper import DecoderStepper, FeedBuilder

        if getattr(self, "_cached_stepper", None) is None:
            self.vision_builder = FeedBuilder.for_runner(self.assets, self.vision)
            self._cached_stepper = DecoderStepper(self.assets, self.decoder, chunk_size=self.limits.max_prefill,
                                                  check_inputs=False)
        return self._cached_stepper

    @property
    def past_names(self) -> list[str]:
        from trt_pipeline.models.glm4v.io_spec import past_names

        return past_names(self.dims.text.num_hidden_layers)

    @classmethod
    def load(cls, out_dir: Path | str, backend: str = "ort", precision: str = "fp32") -> ServeEngine:
        from trt_pipeline.models.glm4v.generation import HostAssets

        if backend not in RUNNER_FACTORIES:
            raise ConfigError(f"unknown backend {backend!r}; choose from {sorted(RUNNER_FACTORIES)}.")
        out_dir = Path(out_dir)
        limits = EngineLimits.from_export(out_dir)
        vision, decoder = RUNNER_FACTORIES[backend](out_dir, precision)
        engine = cls(HostAssets.from_export_dir(out_dir), vision, decoder, limits, backend, precision)
        for runner in (vision, decoder):
            if not runner.is_active:
                runner.activate()
        engine._stepper()
        return engine

    def close(self) -> None:
        for runner in (self.vision, self.decoder):
            if runner.is_active:
                runner.deactivate()

    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Image features [tokens, hidden] of the images packed in ``pixel_values`` (one encoder call per image)."""
        self._stepper()
        features = [np.asarray(self.vision.infer(feed)["image_features"], dtype=np.float32)
                    for feed in self.vision_builder.vision_feeds(pixel_values, grid_thw)]
        return torch.from_numpy(np.concatenate(features))

    def embed(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self.assets.embed_table[torch.as_tensor(list(token_ids), dtype=torch.long)].float()

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor,
                past: list[np.ndarray] | None = None) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Append ``embeds`` [S, hidden] at ``positions`` [3, S] to ``past``; -> (last logits [vocab], cache)."""
        from trt_pipeline.models.glm4v.stepper import CacheState

        if embeds.shape[0] < 1:
            raise PipelineError("prefill needs at least one token.")
        stepper = self._stepper()
        stepper.reset(1)
        if past:
            length = int(past[0].shape[2])
            stepper.load(CacheState(dict(zip(self.past_names, past)), torch.ones(1, length, dtype=torch.long),
                                    torch.zeros(1, dtype=torch.long)))
        out = stepper.prefill(embeds.unsqueeze(0), torch.ones(1, embeds.shape[0], dtype=torch.long),
                              positions.unsqueeze(1))
        return out.last_logits[0], [stepper.state.past[name] for name in self.past_names]

    def decode_step(self, caches: Sequence[SequenceCache], tokens: Sequence[int]) -> torch.Tensor:
        """One token for each sequence (caches updated in place); -> logits [B, vocab]."""
        from trt_pipeline.models.glm4v.stepper import CacheState

        batch, longest = len(caches), max(cache.length for cache in caches)
        mask = torch.zeros(batch, longest, dtype=torch.long)
        past = {}
        for index, name in enumerate(self.past_names):
            if batch == 1:
                past[name] = caches[0].kv[index]
                continue
            first = caches[0].kv[index]
            padded = np.zeros((batch, first.shape[1], longest, first.shape[3]), dtype=first.dtype)
            for row, cache in enumerate(caches):
                padded[row, :, longest - cache.length:] = cache.kv[index][0]
            past[name] = padded
        for row, cache in enumerate(caches):
            mask[row, longest - cache.length:] = 1
        stepper = self._stepper()
        stepper.load(CacheState(past, mask, torch.tensor([c.next_position for c in caches], dtype=torch.long)))
        out = stepper.decode(torch.tensor(list(tokens), dtype=torch.long))
        for row, cache in enumerate(caches):
            start = longest - cache.length
            cache.kv = [np.ascontiguousarray(stepper.state.past[name][row:row + 1, :, start:])
                        for name in self.past_names]
            cache.next_position += 1
        return out.last_logits


def _image_patch_offsets(grid_thw: torch.Tensor) -> list[int]:
    offsets = [0]
    for t, h, w in grid_thw.tolist():
        offsets.append(offsets[-1] + int(t) * int(h) * int(w))
    return offsets


def prefill_prompt(engine: ServeEngine, prompt: Any, past: list[np.ndarray] | None, reuse: int
                   ) -> tuple[torch.Tensor, SequenceCache]:
    """Prefill ``prompt`` (a :class:`~trt_pipeline.serve.chat.Prompt`) on top of ``reuse`` cached tokens.

    Only images whose placeholders reach past ``reuse`` go through the vision encoder; their features
    land at their positions in the suffix. ``reuse == 0`` is a from-scratch prefill.
    """
    ids = prompt.token_ids
    if not 0 <= reuse < len(ids):
        raise PipelineError(f"reuse {reuse} must leave at least one of {len(ids)} prompt tokens to prefill.")
    embeds = engine.embed(ids[reuse:])
    needed = [i for i, (_start, end) in enumerate(prompt.image_runs) if end > reuse]
    if needed:
        offsets = _image_patch_offsets(prompt.image_grid_thw)
        pixels = torch.cat([prompt.pixel_values[offsets[i]:offsets[i + 1]] for i in needed])
        features = engine.encode_images(pixels, prompt.image_grid_thw[needed])
        cursor = 0
        for i in needed:
            start, end = prompt.image_runs[i]
            image_features = features[cursor:cursor + end - start]
            cursor += end - start
            first = max(start, reuse)
            embeds[first - reuse:end - reuse] = image_features[first - start:]
    logits, kv = engine.prefill(embeds, prompt.positions[:, reuse:], past[:] if past else None)
    return logits, SequenceCache(kv, prompt.next_position)
