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
        from trt_pipeline.export.exporter import read_export_manifest

        ranges = read_export_manifest(out_dir)["dims"]
        return cls(int(ranges["batch_size"]["max"]), int(ranges["sequence_length"]["max"]),
                   int(ranges["past_sequence_length"]["max"]), int(ranges["num_image_tokens"]["max"]))


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
    """Prefill and batched decode over one (vision, decoder) runner pair (see the module docstring)."""

    def __init__(self, assets: Any, vision: Any, decoder: Any, limits: EngineLimits,
                 backend: str = "ort", precision: str = "fp32") -> None:
        from trt_pipeline.models.glm4v.io_spec import past_names, present_names

        self.assets, self.vision, self.decoder, self.limits = assets, vision, decoder, limits
        self.backend, self.precision = backend, precision
        self.dims = assets.dims
        layers = self.dims.text.num_hidden_layers
        self.past_names, self.present_names = past_names(layers), present_names(layers)

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
        return engine

    def close(self) -> None:
        for runner in (self.vision, self.decoder):
            if runner.is_active:
                runner.deactivate()

    def _infer(self, runner: Any, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        from trt_pipeline.models.glm4v.generation import _match_input_dtypes

        return runner.infer(_match_input_dtypes(runner, feed))

    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Image features [tokens, hidden] of the images packed in ``pixel_values``."""
        from trt_pipeline.models.glm4v import host

        feeds = host.vision_inputs(self.dims.vision, self.assets.vision_position_table.float(), grid_thw)
        feed = {"pixel_values": pixel_values.float().numpy(), **{k: v.float().numpy() for k, v in feeds.items()}}
        out = self._infer(self.vision, feed)
        return torch.from_numpy(np.asarray(out["image_features"], dtype=np.float32).copy())

    def embed(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self.assets.embed_table[torch.as_tensor(list(token_ids), dtype=torch.long)].float()

    def _empty_kv(self) -> list[np.ndarray]:
        t = self.dims.text
        return [np.zeros((1, t.num_key_value_heads, 0, t.head_dim), dtype=np.float32) for _ in self.past_names]

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor,
                past: list[np.ndarray] | None = None) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Append ``embeds`` [S, hidden] at ``positions`` [3, S] to ``past``; -> (last logits [vocab], cache)."""
        from trt_pipeline.models.glm4v import host

        kv = past if past is not None else self._empty_kv()
        logits = None
        for start in range(0, embeds.shape[0], self.limits.max_prefill):
            chunk = embeds[start:start + self.limits.max_prefill].unsqueeze(0)
            cos, sin = host.text_rope(self.dims.text, positions[:, start:start + chunk.shape[1]].unsqueeze(1))
            total = int(kv[0].shape[2]) + chunk.shape[1]
            feed = {"inputs_embeds": chunk.numpy(), "attention_mask": np.ones((1, total), dtype=np.int64),
                    "rope_cos": cos.numpy(), "rope_sin": sin.numpy(), **dict(zip(self.past_names, kv))}
            out = self._infer(self.decoder, feed)
            kv = [np.asarray(out[name]) for name in self.present_names]
            logits = out["logits"]
        if logits is None:
            raise PipelineError("prefill needs at least one token.")
        return torch.from_numpy(np.asarray(logits[0, -1], dtype=np.float32).copy()), kv

    def decode_step(self, caches: Sequence[SequenceCache], tokens: Sequence[int]) -> torch.Tensor:
        """One token for each sequence (caches updated in place); -> logits [B, vocab]."""
        from trt_pipeline.models.glm4v import host

        batch = len(caches)
        longest = max(cache.length for cache in caches)
        mask = np.zeros((batch, longest + 1), dtype=np.int64)
        mask[:, -1] = 1
        past = []
        for index, _name in enumerate(self.past_names):
            if batch == 1:
                past.append(caches[0].kv[index])
                continue
            first = caches[0].kv[index]
            padded = np.zeros((batch, first.shape[1], longest, first.shape[3]), dtype=first.dtype)
            for row, cache in enumerate(caches):
                padded[row, :, longest - cache.length:] = cache.kv[index][0]
            past.append(padded)
        for row, cache in enumerate(caches):
            mask[row, longest - cache.length:] = 1
        positions = torch.tensor([c.next_position for c in caches], dtype=torch.long).view(1, batch, 1).expand(3, -1, -1)
        cos, sin = host.text_rope(self.dims.text, positions)
        feed = {"inputs_embeds": self.embed(tokens).unsqueeze(1).numpy(), "attention_mask": mask,
                "rope_cos": cos.numpy(), "rope_sin": sin.numpy(), **dict(zip(self.past_names, past))}
        out = self._infer(self.decoder, feed)
        for row, cache in enumerate(caches):
            start = longest - cache.length
            cache.kv = [np.ascontiguousarray(np.asarray(out[name])[row:row + 1, :, start:])
                        for name in self.present_names]
            cache.next_position += 1
        return torch.from_numpy(np.asarray(out["logits"][:, -1], dtype=np.float32).copy())


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
