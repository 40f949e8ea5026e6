"""The model behind the server: (vision, decoder) runners of one backend and the decoder calls on them.

``ServeEngine`` is the only place the scheduler touches the model. It makes exactly two kinds of
decoder call, both on a :class:`~trt_pipeline.models.glm4v.stepper.CacheState` the caller keeps:

* :meth:`ServeEngine.extend` appends a segment of one sequence's prompt (a prefill chunk, on an
  empty cache or on a reused prefix) and returns its last-position logits;
* :meth:`ServeEngine.decode` appends one token to every row of a left-padded batch
  (:class:`~trt_pipeline.serve.batch.DecodeBatch` keeps that batch between steps).

Limits come from the export's :class:`~trt_pipeline.models.glm4v.contract.ExportContract` (the
one place that knows the profiles and names the export flag that raises each of them); the
stepper refuses a call outside them before the runner sees it.

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

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.errors import ConfigError, OnnxModelError, PipelineError
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.stepper import CacheState

#: Longest prefill call between two decode steps by default: a long prompt then stalls the running
#: replies for one chunk at a time, not for its whole prefill (the export's own limit if smaller).
DEFAULT_PREFILL_CHUNK = 512


@dataclass
class SequenceCache:
    """One sequence's KV cache (per past input an array of ``layout.shape(1, length)``) and next position.

    ``layout`` is the export's :class:`~trt_pipeline.models.glm4v.io_spec.KvLayout` (``concat``
    ``[1, kv_heads, length, head_dim]`` or ``inplace`` ``[1, length, kv_heads * head_dim]``): the
    server slices, pads and measures caches through it, never by axis number.
    """

    kv: list[np.ndarray]
    next_position: int
    layout: KvLayout

    @property
    def length(self) -> int:
        return self.layout.length(self.kv[0]) if self.kv else 0


def ort_runners(out_dir: Path, precision: str, ort: Any = None) -> tuple[Any, Any]:
    """``ort``: the ONNX Runtime session settings (``OrtSettings``: threads, IO binding); None: defaults."""
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    return ort_component_runners(out_dir, precision, settings=ort)


def trt_runners(out_dir: Path, precision: str, ort: Any = None) -> tuple[Any, Any]:
    from trt_pipeline.runtime.tensorrt_runner import trt_component_runners

    return trt_component_runners(out_dir, precision)  # TensorRTUnavailableError without TensorRT/GPU


def torch_runners(out_dir: Path, precision: str, ort: Any = None) -> tuple[Any, Any]:
    from trt_pipeline.generate import require_checkpoint, resolve_source
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    checkpoint = require_checkpoint(resolve_source(out_dir), "torch")
    dtype = {"fp32": "float32", "fp16": "float16"}.get(precision)
    if dtype is None:
        raise ConfigError(f"--backend torch runs fp32 or fp16, not {precision!r}.")
    model = Glm4vExportModel.from_pretrained(checkpoint, dtype=dtype)
    manifest = read_export_manifest(out_dir)
    model.decoder.use_graph(manifest.decoder_ops, manifest.kv_cache)  # the flavour the export traced
    return torch_component_runners(model)


#: backend name -> (OUT, precision, ONNX Runtime settings) -> (vision runner, decoder runner). Add a
#: runtime here (the ONNX Runtime settings are ignored by the other runtimes).
RUNNER_FACTORIES: dict[str, Callable[[Path, str, Any], tuple[Any, Any]]] = {
    "ort": ort_runners,
    "trt": trt_runners,
    "torch": torch_runners,
}


class ServeEngine:
    """Vision encoding, prefill segments and batched decode over one runner pair (module docstring).

    Feeds and steps go through the model's own
    :class:`~trt_pipeline.models.glm4v.stepper.FeedBuilder` / :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`
    (``logits_positions``, runner dtypes, the contract's checks); the stepper is shared, and each
    call loads the caller's cache into it and hands the new one back.
    """

    def __init__(self, assets: Any, vision: Any, decoder: Any, contract: ExportContract,
                 backend: str = "ort", precision: str = "fp32", prefill_chunk: int | None = None) -> None:
        self.assets, self.vision, self.decoder, self.contract = assets, vision, decoder, contract
        self.backend, self.precision = backend, precision
        self.prefill_chunk = min(prefill_chunk or DEFAULT_PREFILL_CHUNK, contract.max_chunk)
        self.dims = assets.dims
        self._cached_stepper: Any = None

    def _stepper(self) -> Any:
        from trt_pipeline.models.glm4v.stepper import DecoderStepper, FeedBuilder

        if self._cached_stepper is None:
            self.vision_builder = FeedBuilder.for_runner(self.assets, self.vision)
            self._cached_stepper = DecoderStepper(self.assets, self.decoder, chunk_size=self.prefill_chunk,
                                                  check_inputs=False, contract=self.contract)
        return self._cached_stepper

    @property
    def kv_layout(self) -> KvLayout:
        """The decoder's cache layout (read from its runner's inputs: ``concat`` or ``inplace`` export)."""
        return self._stepper().builder.kv_layout

    @property
    def past_names(self) -> list[str]:
        from trt_pipeline.models.glm4v.io_spec import past_names

        return past_names(self.dims.text.num_hidden_layers)

    @classmethod
    def load(cls, out_dir: Path | str, backend: str = "ort", precision: str = "fp32",
             prefill_chunk: int | None = None, ort: Any = None) -> ServeEngine:
        from trt_pipeline.generate import export_contract
        from trt_pipeline.models.glm4v.generation import HostAssets

        if backend not in RUNNER_FACTORIES:
            raise ConfigError(f"unknown backend {backend!r}; choose from {sorted(RUNNER_FACTORIES)}.")
        out_dir = Path(out_dir)
        contract = export_contract(out_dir)
        vision, decoder = RUNNER_FACTORIES[backend](out_dir, precision, ort)
        engine = cls(HostAssets.from_export_dir(out_dir), vision, decoder, contract, backend, precision, prefill_chunk)
        for runner in (vision, decoder):
            if not runner.is_active:
                runner.activate()
        try:
            engine.check_kv_cache(read_export_manifest(out_dir))
        except PipelineError:
            engine.close()
            raise
        return engine

    def check_kv_cache(self, manifest: Any) -> None:
        """Refuse a decoder runner whose cache layout is not the export's (``OnnxModelError``): the
        server would cut and pad its caches on the wrong axis."""
        kind = self.kv_layout.kind
        if kind != manifest.kv_cache:
            raise OnnxModelError(f"the {self.backend} decoder takes a {kind} KV cache, but {manifest.path} records "
                                 f"--kv-cache {manifest.kv_cache}.", path=manifest.path,
                                 hint="serve the runtime files made from this export (rebuild the engine), or re-export")

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

    def empty_state(self) -> CacheState:
        stepper = self._stepper()
        stepper.reset(1)
        return stepper.save()

    def state_of(self, kv: Sequence[np.ndarray], next_position: int) -> CacheState:
        """A batch-of-one cache state over ``kv`` (e.g. a reused prefix), the next token at ``next_position``."""
        length = self.kv_layout.length(kv[0])
        return CacheState(dict(zip(self.past_names, kv)), torch.ones(1, length, dtype=torch.long),
                          torch.tensor([next_position], dtype=torch.long))

    def extend(self, state: CacheState, embeds: torch.Tensor,
               positions: torch.Tensor) -> tuple[torch.Tensor, CacheState]:
        """Append ``embeds`` [S, hidden] at M-RoPE ``positions`` [3, S] in ONE call; -> (last logits [vocab], state)."""
        if embeds.shape[0] < 1:
            raise PipelineError("a prefill segment needs at least one token.")
        stepper = self._stepper()
        stepper.load(state)
        out = stepper.prefill(embeds.unsqueeze(0), torch.ones(1, embeds.shape[0], dtype=torch.long),
                              positions.unsqueeze(1), chunk_size=embeds.shape[0])
        return out.last_logits[0], stepper.save()

    def decode(self, state: CacheState, tokens: Sequence[int]) -> tuple[torch.Tensor, CacheState]:
        """One token per row of a left-padded batch ``state`` in ONE call; -> (logits [B, vocab], state)."""
        stepper = self._stepper()
        stepper.load(state)
        out = stepper.decode(torch.tensor(list(tokens), dtype=torch.long))
        return out.last_logits, stepper.save()

    def kv_of(self, state: CacheState) -> list[np.ndarray]:
        """The per-layer arrays of a batch-of-one state (in ``past_names`` order).

        With an ``inplace`` cache these may be prefix views of the stepper's
        :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` buffers; its copy-on-write rule keeps
        them unchanged (a later step writes only rows past every view handed out, or copies first),
        which ``tests/serve/test_serve_inplace.py`` checks for prefix-cache entries.
        """
        return [state.past[name] for name in self.past_names]

    def sequence_cache(self, kv: Sequence[np.ndarray], next_position: int) -> SequenceCache:
        """One sequence's cache in this engine's layout."""
        return SequenceCache(list(kv), next_position, self.kv_layout)
