"""Batch-of-one decode steps through one kept binding per cache block: the stepper's lean decode path.

A decode step of a small model is a few milliseconds of ONNX Runtime, and the Python around it
(the feed dict, binding 30 inputs and the outputs, planning the output slab, the new state's
dicts) cost another 0.2 ms on the small preset: run right after the run has streamed every weight
through the CPU caches, each of those small steps misses the caches. onnxruntime-genai's C++ loop
has none of it. With an ``inplace`` cache fed in blocks
(:class:`~trt_pipeline.models.glm4v.kv_arena.KvArena`), every input of a decode step keeps its
shape for a whole block of ``KV_BLOCK`` steps, so :class:`KeptDecode` builds the step's feed once per block
(:meth:`~trt_pipeline.models.glm4v.stepper.FeedBuilder.decode_feed`, the same arrays as the general
path), keeps it bound (:class:`~trt_pipeline.runtime.ort_binding.KeptBinding`) and per step only
writes the token's embedding row, its rotary rows and one mask column into those arrays, then runs.

It serves a batch of one whose mask attends every cached row (a prompt without padding: what a
server or ``generate`` decodes); anything else returns None and the stepper takes its general path.
The numbers are those of that path (``tests/models/test_kept_decode.py`` compares feeds, logits and
states step by step). A step's ``feed`` and ``outputs`` are the kept arrays: valid until the next step.
Whatever the step's result needs (the next state's mask, the logits tensor) is made before the run:
objects made after it pay for cache misses (a torch call then costs ~10 us).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trt_pipeline.models.glm4v.kv_arena import KvArena


class KeptDecode:
    """One kept binding per cache block over a stepper's builder, arena and runner (see the module docstring)."""

    def __init__(self, builder: Any, arena: KvArena, runner: Any, check_inputs: bool) -> None:
        self.builder, self.arena, self.runner, self.check_inputs = builder, arena, runner, check_inputs
        self.tables = builder.decode_tables()
        self._views: Mapping[str, np.ndarray] | None = None  # the arena's block views the binding holds
        self._kept: Any = None
        self.feed: dict[str, np.ndarray] = {}  # the kept feed (valid until the next step)
        self.state_mask = self.logits = torch.empty(0)  # what prepare() made for the step it prepared
        self._logits_out = np.empty(0, np.float32)
        self._logits_shape: tuple[int, ...] = ()
        self._mask: np.ndarray | None = None  # the fed mask: ones over the rows of the last step, zeros after
        self._attended = 0  # rows the fed mask attends now
        self._ones = np.ones((1, 0), np.int64)  # states' masks are (torch views of) prefix views of it
        self._known: tuple[Any, Any] = (None, None)  # the state masks last seen to attend every row

    @staticmethod
    def applies(builder: Any, arena: KvArena | None, runner: Any) -> bool:
        """Whether a stepper of ``builder``, ``arena`` and ``runner`` can decode this way."""
        return (arena is not None and arena.block is not None and callable(getattr(runner, "keep", None))
                and not builder.reference_inputs)

    def prepare(self, state: Any, tokens: torch.Tensor) -> bool:
        """Everything of one decode step of ``state`` (a CacheState) with ``tokens [1]`` but the run: the
        kept feed written, :attr:`state_mask` and :attr:`logits` made (before the run, which evicts the
        CPU caches), the next state's cache left in ``arena.handed``. False: this path does not serve it."""
        mask = state.attention_mask
        if mask.shape[0] != 1 or not self._attends_all(mask):
            return False
        length = mask.shape[1]
        need = length + 1
        views = self.arena.feed(state.past, 1)
        positions = state.next_position.numpy()
        token_ids = tokens.numpy().reshape(1)
        if views is not self._views:
            if not self._bind(views, token_ids, positions, need):
                return False
        else:
            feed, fed = self.feed, self._mask
            if self._attended == length:
                fed[0, length] = 1
            else:  # another state than the last step's (a load, a truncate): the mask again
                fed[0, :need] = 1
                fed[0, need:] = 0
            feed["inputs_embeds"][:, 0] = self.tables.embeddings(token_ids)
            cos, sin = self.tables.rope(positions)
            feed["rope_cos"][...] = cos
            feed["rope_sin"][...] = sin
        self._attended = need
        self.state_mask = self._state_mask(need)
        self.logits = torch.empty(self._logits_shape, dtype=torch.float32)
        self._logits_out = self.logits.numpy()
        return True

    def run(self) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """Run the prepared step; -> (float32 logits ``[1, 1, vocab]``, its own copy; the kept outputs)."""
        out = self._kept.run()
        np.copyto(self._logits_out, out["logits"])
        return self.logits, out

    def _attends_all(self, mask: torch.Tensor) -> bool:
        """Whether ``mask [1, T]`` is all ones (remembered for the last own and foreign masks seen)."""
        own, foreign = self._known
        if mask is own or mask is foreign:
            return True
        if not bool(mask.all()):
            return False
        self._known = (own, mask)
        return True

    def _state_mask(self, need: int) -> torch.Tensor:
        """The new state's all-ones mask ``[1, need]`` (numpy slicing: a torch slice costs several times more)."""
        if self._ones.shape[1] < need:
            self._ones = np.ones((1, max(2 * need, 256)), np.int64)
        mask = torch.from_numpy(self._ones[:, :need])
        self._known = (mask, self._known[1])
        return mask

    def _bind(self, views: Mapping[str, np.ndarray], token_ids: np.ndarray, positions: np.ndarray, need: int) -> bool:
        """A new block (or new buffers): the feed built as the general path builds it, then kept bound."""
        rows = self.builder.kv_layout.length(next(iter(views.values())))
        mask = np.zeros((1, rows), np.int64)
        mask[0, :need] = 1
        feed = dict(self.builder.decode_feed(token_ids, positions, mask, views))
        names = self.builder.past_names
        if any(feed.get(name) is not views[name] for name in names):  # cast or copied: not the arena's own rows
            return False
        kept = self.runner.keep(feed, self.check_inputs)
        present = self.builder.present_names[0]
        if kept.outputs[present] is not feed[names[0]]:  # not written in place: the general path copes
            return False
        self._views, self._kept, self.feed, self._mask = views, kept, feed, mask
        self._logits_shape = tuple(kept.outputs["logits"].shape)
        return True


__all__ = ["KeptDecode"]
