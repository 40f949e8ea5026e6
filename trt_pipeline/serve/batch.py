"""The running sequences as ONE left-padded decoder batch, kept from one step to the next.

Every decode step of the server is a single decoder call over all running sequences
(:meth:`~trt_pipeline.serve.engine.ServeEngine.decode`): row ``r`` holds sequence ``r``'s cache
right-aligned, the columns before it are padding with ``attention_mask`` 0 (the decoder builds its
causal + padding bias from the mask, so padded slots get no attention weight), and each row has
its own M-RoPE position. The decoder returns the whole batch's cache one column longer, which
becomes the next step's input as is: while the members stay the same, no cache is copied on the
host between steps.

Sequences join and leave between steps. A change of members rebuilds the padded arrays once
(dropping padding columns no row needs any more; a sequence joining an empty batch keeps its
own arrays); a leaving sequence takes its own rows out as a
:class:`~trt_pipeline.serve.engine.SequenceCache` (for the prefix cache).

Cache positions ("columns") are addressed through the engine's
:class:`~trt_pipeline.models.glm4v.io_spec.KvLayout`, so a ``concat`` export (``[B, kv_heads, T,
head_dim]``) and an ``inplace`` one (``[B, T, kv_heads * head_dim]``) batch alike. With an
``inplace`` cache a batch of one decodes in place in the stepper's arena; a batch of several rows
gets an exactly sized copy per step (what the ``concat`` cache costs anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.kv_arena import prefix_of_buffer
from trt_pipeline.models.glm4v.stepper import CacheState
from trt_pipeline.serve.engine import SequenceCache, ServeEngine


class DecodeBatch:
    """Members (any objects, compared by identity) and their padded cache; see the module docstring.

    Row order is :attr:`members`: the rows already in the padded cache, then the ones that joined
    since the last step (appended as rows at the next :meth:`step`).
    """

    def __init__(self, engine: ServeEngine) -> None:
        self.engine = engine
        self.rows: list[Any] = []  # members in ``state``, in row order
        self.lengths: list[int] = []  # real cached tokens per row
        self.state: CacheState | None = None
        self.joining: list[tuple[Any, SequenceCache]] = []

    @property
    def members(self) -> list[Any]:
        return self.rows + [member for member, _cache in self.joining]

    def __len__(self) -> int:
        return len(self.rows) + len(self.joining)

    def join(self, member: Any, cache: SequenceCache) -> None:
        """Add ``member`` with its prefilled cache; it runs from the next :meth:`step` on."""
        self.joining.append((member, cache))

    def leave(self, member: Any) -> SequenceCache:
        """Remove ``member``; -> its own cache (padding stripped, a copy)."""
        for index, (other, cache) in enumerate(self.joining):
            if other is member:
                del self.joining[index]
                return cache
        row = next(row for row, other in enumerate(self.rows) if other is member)
        cache = self._row_cache(row)
        del self.rows[row], self.lengths[row]
        self.state = _select_rows(self.state, [r for r in range(len(self.rows) + 1) if r != row], self.engine.kv_layout)
        return cache

    def _row_cache(self, row: int) -> SequenceCache:
        state, rows = self._current(), self.engine.kv_layout.rows
        start = state.attention_mask.shape[1] - self.lengths[row]
        kv = [_own_rows(rows(state.past[name][row:row + 1], start)) for name in self.engine.past_names]
        return self.engine.sequence_cache(kv, int(state.next_position[row]))

    def _current(self) -> CacheState:
        if self.state is None:
            raise RuntimeError("the decode batch has no rows.")
        return self.state

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """One token per member (in :attr:`members` order) in ONE decoder call; -> logits [B, vocab]."""
        if self.joining:
            self._add_joining()
        logits, self.state = self.engine.decode(self._current(), tokens)
        self.lengths = [length + 1 for length in self.lengths]
        return logits

    def _add_joining(self) -> None:
        """Rebuild the padded cache with the joining sequences as new rows (right-aligned to the longest)."""
        if self.state is None and len(self.joining) == 1:
            self._start_alone(*self.joining[0])
            return
        old, kept = self.state, len(self.rows)
        lengths = self.lengths + [cache.length for _member, cache in self.joining]
        longest, batch = max(lengths), len(lengths)
        width = min(old.attention_mask.shape[1], longest) if old is not None else 0
        layout = self.engine.kv_layout
        rows = layout.rows
        past: dict[str, np.ndarray] = {}
        for index, name in enumerate(self.engine.past_names):
            padded = np.zeros(layout.shape(batch, longest), dtype=self.joining[0][1].kv[index].dtype)
            if old is not None and width:
                before = old.past[name]
                rows(padded[:kept], longest - width)[...] = rows(before, layout.length(before) - width)
            for offset, (_member, cache) in enumerate(self.joining):
                row = kept + offset
                rows(padded[row:row + 1], longest - cache.length)[...] = cache.kv[index]
            past[name] = padded
        mask = torch.zeros(batch, longest, dtype=torch.long)
        positions = torch.zeros(batch, dtype=torch.long)
        if old is not None:
            mask[:kept, longest - width:] = old.attention_mask[:, old.attention_mask.shape[1] - width:]
            positions[:kept] = old.next_position
        for offset, (_member, cache) in enumerate(self.joining):
            mask[kept + offset, longest - cache.length:] = 1
            positions[kept + offset] = cache.next_position
        self.state = CacheState(past, mask, positions)
        self.rows += [member for member, _cache in self.joining]
        self.lengths, self.joining = lengths, []


    def _start_alone(self, member: Any, cache: SequenceCache) -> None:
        """A sequence joining an empty batch runs on its own arrays: no padding, so no copy (with an
        ``inplace`` cache its first decode step continues the prefill's arena buffer in place)."""
        self.state = self.engine.state_of(cache.kv, cache.next_position)
        self.rows, self.lengths, self.joining = [member], [cache.length], []


def _own_rows(view: np.ndarray) -> np.ndarray:
    """A leaving row's cache as its sequence keeps it: the view itself when it is the first rows of a
    batch-of-one buffer (the stepper's arena: the next turn continues it in place), else a contiguous
    copy (padding stripped)."""
    if view.base is not None and view.base.shape[0] == 1 and prefix_of_buffer(view):
        return view
    return np.ascontiguousarray(view)


def _select_rows(state: CacheState | None, rows: list[int], layout: KvLayout) -> CacheState | None:
    """The batch without the rows not listed, minus padding columns no remaining row needs."""
    if state is None or not rows:
        return None
    mask = state.attention_mask[rows]
    keep_from = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading all-padding columns
    index = np.asarray(rows)
    past = {name: np.ascontiguousarray(layout.rows(array[index], keep_from)) for name, array in state.past.items()}
    return CacheState(past, mask[:, keep_from:].contiguous(), state.next_position[rows].clone())
