"""The host side of an ``inplace`` KV cache: one growing buffer per cache tensor, fed as prefix views.

An ``inplace`` decoder (:data:`~trt_pipeline.models.glm4v.decoder_ops.KV_CACHES`) takes each cache
tensor as ``[B, past + S, kv_heads * head_dim]`` with the last S rows free for the new tokens and
returns that array with them written. For a batch of one, the first ``past + S`` rows of a larger
``[1, capacity, kv_heads * head_dim]`` buffer are one C-contiguous block, so :class:`KvArena` feeds
such prefix views; ONNX Runtime's IO-bound runner (:class:`~trt_pipeline.runtime.ort_binding.BoundOrtRunner`)
binds every ``present.*`` output to its input's memory, and a decode step then writes one row per
tensor instead of copying the whole cache (and the process holds one cache, not two).

Writing in place is only safe while no one else still reads the rows being written. Every view
the arena hands out covers rows ``[0, n)``; the arena remembers the longest ``n`` it handed out
(``high``). A step that starts from a cache of ``length >= high`` rows (the normal case: decode
continues the latest state) writes in place. One that starts shorter (after ``truncate``, or
``load`` of an older state) writes in place only when the state's own view is the last reference
to the buffer (CPython reference counts, as :class:`~trt_pipeline.runtime.ort_binding.BufferPool`
uses them: a saved state, a prefix-cache entry or a kept step output holds a view, hence a
reference); otherwise it first copies its rows into a new buffer, so such a holder never sees its
rows change. Rewinding and re-decoding (what a benchmark does per timed step) thus stays in place. Batches of more than one row
(not contiguous as a prefix) get an exactly sized copy per step: the cost the ``concat`` cache has.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from trt_pipeline.models.glm4v.io_spec import KvLayout

#: Rows of headroom a new buffer gets beyond what the step needs (at least), so decode steps keep fitting.
MIN_HEADROOM = 64


class KvArena:
    """Growing per-tensor buffers of a batch-of-one ``inplace`` cache (see the module docstring)."""

    def __init__(self, layout: KvLayout) -> None:
        if not layout.inplace:
            raise ValueError("KvArena serves inplace KV caches only")
        self.layout = layout
        self.buffers: dict[str, np.ndarray] = {}
        self.handed: dict[str, np.ndarray] = {}  # the views the last feed returned (a decode step's state is them)
        # references a buffer has when only the arena and ONE view hold it, counted in _exclusive's frame
        probe = {"": np.empty((1, 2, 1))}
        view = probe[""][:, :1]
        self._alone = self._references(probe, "")
        del view

    def feed(self, past: Mapping[str, np.ndarray], new: int) -> dict[str, np.ndarray]:
        """Per tensor: an array of ``past``'s rows plus ``new`` free rows (a view of the arena when batch is 1)."""
        if not past:
            return {}
        first = next(iter(past.values()))
        if first.ndim != 3:
            raise ValueError(f"an inplace KV cache holds [batch, positions, kv_heads * head_dim] arrays, got shape "
                             f"{tuple(first.shape)}: a concat-layout cache (made by another export?) cannot be fed to it")
        batch, length = int(first.shape[0]), int(first.shape[1])
        need = length + new
        if batch != 1:
            return {name: self.extended(value, need) for name, value in past.items()}
        handed = self.handed
        # a decode step continuing the last one feeds back exactly the views handed out (the runner wrote
        # into them): checked by identity, the per-array checks below are for every other start
        if not (len(handed) == len(past) and all(handed.get(name) is value for name, value in past.items())
                and need <= self.capacity):
            high = self.high
            self.handed = handed = {}  # the arena's own views must not count as readers below
            holds = all(self._holds(name, value, length, need) for name, value in past.items())
            if not holds or (length < high and not all(self._exclusive(name) for name in past)):
                self._rebuild(past, length, need)
        buffers = self.buffers
        self.handed = {name: buffers[name][:, :need] for name in past}
        return dict(self.handed)

    @property
    def high(self) -> int:
        """Rows the views of the last feed cover: the longest prefix of the buffers anyone may still read
        (a shorter start either copied into new buffers or was the only reader of the old ones)."""
        return next(iter(self.handed.values())).shape[1] if self.handed else 0

    @property
    def capacity(self) -> int:
        """Rows every buffer holds (0 before the first feed)."""
        return next(iter(self.buffers.values())).shape[1] if self.buffers else 0

    def _holds(self, name: str, value: np.ndarray, length: int, need: int) -> bool:
        """Whether ``value`` is the first ``length`` rows of this arena's buffer, which has room for ``need``."""
        buffer = self.buffers.get(name)
        return (buffer is not None and value.base is buffer and value.shape[1] == length
                and buffer.shape[1] >= need and value.dtype == buffer.dtype and value.flags.c_contiguous
                and value.ctypes.data == buffer.ctypes.data)  # a prefix: the view starts at row 0

    def _exclusive(self, name: str) -> bool:
        """Whether the state's view is the only view of ``name``'s buffer (nobody else reads its rows)."""
        return self._references(self.buffers, name) <= self._alone

    @staticmethod
    def _references(buffers: Mapping[str, np.ndarray], name: str) -> int:
        buffer = buffers[name]
        return sys.getrefcount(buffer)

    def _rebuild(self, past: Mapping[str, np.ndarray], length: int, need: int) -> None:
        """New buffers with headroom holding ``past``'s rows (old buffers stay with whoever still reads them)."""
        capacity = need + max(need // 2, MIN_HEADROOM)
        buffers = {}
        for name, value in past.items():
            buffer = np.empty((1, capacity, value.shape[2]), dtype=value.dtype)
            buffer[:, :length] = value
            buffers[name] = buffer
        self.buffers = buffers

    @staticmethod
    def extended(value: np.ndarray, need: int) -> np.ndarray:
        """A ``[B, need, width]`` copy whose first rows are ``value`` (batches of more than one)."""
        out = np.empty((value.shape[0], need, value.shape[2]), dtype=value.dtype)
        out[:, :value.shape[1]] = value
        return out


__all__ = ["KvArena", "MIN_HEADROOM"]
