"""One request's prompt, prefilled a piece at a time so it never stalls the running replies for long.

A :class:`PrefillJob` is the prompt suffix left after prefix reuse, cut into units of work: first
one vision-encoder call per image whose placeholders lie in the suffix, then decoder calls of at
most ``engine.prefill_chunk`` tokens, each appended to the cache the previous one left (the
export's append path). The scheduler runs ONE unit between two decode steps of the batch
(chunked prefill, as vLLM's ``--enable-chunked-prefill``), so a new request's prefill interleaves
with the others' decoding. The chunking depends only on the prompt and the reused length, never
on the load, so a request's tokens are the same alone and under concurrency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trt_pipeline.errors import PipelineError
from trt_pipeline.models.glm4v.stepper import CacheState
from trt_pipeline.serve.engine import SequenceCache, ServeEngine


def _image_patch_offsets(grid_thw: torch.Tensor) -> list[int]:
    offsets = [0]
    for t, h, w in grid_thw.tolist():
        offsets.append(offsets[-1] + int(t) * int(h) * int(w))
    return offsets


class PrefillJob:
    """Prefill of ``prompt`` (a :class:`~trt_pipeline.serve.chat.Prompt`) on top of ``reuse`` cached tokens.

    ``past`` is the reused prefix's KV (``reuse`` positions); ``reuse == 0`` is a from-scratch
    prefill. :meth:`advance` runs one unit; :attr:`logits` is set once the last chunk ran.
    """

    def __init__(self, engine: ServeEngine, prompt: Any, past: list[np.ndarray] | None, reuse: int) -> None:
        ids = prompt.token_ids
        if not 0 <= reuse < len(ids) or (reuse > 0) != bool(past):
            raise PipelineError(f"reuse {reuse} must leave at least one of {len(ids)} prompt tokens to prefill "
                                "and come with the reused cache.")
        self.engine, self.prompt, self.reuse = engine, prompt, reuse
        self.embeds = engine.embed(ids[reuse:])
        self.pending_images = [i for i, (_start, end) in enumerate(prompt.image_runs) if end > reuse]
        self.offsets = _image_patch_offsets(prompt.image_grid_thw) if self.pending_images else []
        self.state: CacheState = engine.state_of(past, 0) if past else engine.empty_state()
        self.cursor = reuse  # next prompt position to prefill
        self.logits: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.logits is not None

    def advance(self) -> bool:
        """Run one unit (an image through the vision encoder, or one decoder chunk); True when done."""
        if self.pending_images:
            self._encode(self.pending_images.pop(0))
            return False
        ids, chunk = self.prompt.token_ids, self.engine.prefill_chunk
        end = min(self.cursor + chunk, len(ids))
        embeds = self.embeds[self.cursor - self.reuse:end - self.reuse]
        logits, self.state = self.engine.extend(self.state, embeds, self.prompt.positions[:, self.cursor:end])
        self.cursor = end
        if end == len(ids):
            self.logits = logits
        return self.done

    def _encode(self, index: int) -> None:
        """Write image ``index``'s features into its placeholder rows of the suffix."""
        prompt = self.prompt
        pixels = prompt.pixel_values[self.offsets[index]:self.offsets[index + 1]]
        features = self.engine.encode_images(pixels, prompt.image_grid_thw[index:index + 1])
        start, end = prompt.image_runs[index]
        first = max(start, self.reuse)
        self.embeds[first - self.reuse:end - self.reuse] = features[first - start:]

    def cache(self) -> SequenceCache:
        """The finished prompt's cache; the next token goes to the prompt's next M-RoPE position."""
        if not self.done:
            raise PipelineError("the prompt is not prefilled yet.")
        return self.engine.sequence_cache(self.engine.kv_of(self.state), self.prompt.next_position)

