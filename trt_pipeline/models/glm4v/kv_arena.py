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
rows change. Rewinding and re-decoding (what a benchmark does per timed step) thus stays in place.
A stepper's ``load`` settles this once (:meth:`KvArena.adopt`), so the steps after it continue the
latest state like any other. Batches of more than one row (not contiguous as a prefix) get an
exactly sized copy per step: the cost the ``concat`` cache has.
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
        batch, length = self._shape(past)
        need = length + new
        if batch != 1:
            return {name: self.extended(value, need) for name, value in past.items()}
        # a decode step continuing the last one feeds back exactly the views handed out (the runner wrote
        # into them): checked by identity; every other start is settled by the per-array checks
        if not (self._is_handed(past) and need <= self.capacity):
            self._settle(past, length, need)
        buffers = self.buffers
        self.handed = {name: buffers[name][:, :need] for name in past}
        return dict(self.handed)

    def adopt(self, past: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Make ``past`` (a state being loaded) the arena's latest state; -> the arrays the state should hold.

        What :meth:`feed` decides for a start from rows already in these buffers that is not the
        latest state (keep writing in place, or copy first) is decided here, once, when the state is
        loaded: the returned prefix views are then what the arena handed out last, so the decode
        steps after a ``load`` (a server resuming a prefix-cache entry, the benchmark's rewind to a
        filled cache) take :meth:`feed`'s identity path like any other step. A state on a buffer of its
        own that nothing else reads (a saved state the arena once copied away from) hands that buffer
        to the arena. Any other state whose rows live elsewhere (empty, made by another runner, or on
        a buffer others read) is returned as it is: the next :meth:`feed` copies it, sized for that
        step. The caller must have let go of its previous state first (its views would count as
        readers). Batches of more than one row are returned as they are.
        """
        if not past:
            return {}
        batch, length = self._shape(past)
        if batch != 1 or self._is_handed(past):
            return dict(past)
        if all(self._holds(n, v, length, length) for n, v in past.items()):
            self._settle(past, length, length, holds=True)
        elif self._sole_owner(past):
            # rows of another buffer only this state reads (a saved state whose buffer the arena left when it
            # copied for another reader): that buffer becomes the arena's, instead of a copy per load
            self.handed, self.buffers = {}, {name: value.base for name, value in past.items()}
        else:
            return dict(past)
        buffers = self.buffers
        self.handed = {name: buffers[name][:, :length] for name in past}
        return dict(self.handed)

    def _shape(self, past: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """(batch, cached rows) of an inplace-layout ``past`` (a 4-D concat-layout array is refused by name)."""
        first = next(iter(past.values()))
        if first.ndim != 3:
            raise ValueError(f"an inplace KV cache holds [batch, positions, kv_heads * head_dim] arrays, got shape "
                             f"{tuple(first.shape)}: a concat-layout cache (made by another export?) cannot be fed to it")
        return int(first.shape[0]), int(first.shape[1])

    def _is_handed(self, past: Mapping[str, np.ndarray]) -> bool:
        """Whether ``past`` is exactly the views the arena handed out last (the latest state)."""
        handed = self.handed
        return len(handed) == len(past) and all(handed.get(name) is value for name, value in past.items())

    def _settle(self, past: Mapping[str, np.ndarray], length: int, need: int, holds: bool | None = None) -> None:
        """Keep ``past``'s rows where they are when they are a prefix of these buffers with room for ``need``
        rows (``holds``, when the caller checked it already) and nobody reads rows beyond ``length``; else
        copy them into new buffers."""
        high = self.high
        self.handed = {}  # the arena's own views must not count as readers below
        if holds is None:
            holds = all(self._holds(name, value, length, need) for name, value in past.items())
        if not holds or (length < high and not all(self._exclusive(name) for name in past)):
            self._rebuild(past, length, need)

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

    def _sole_owner(self, past: Mapping[str, np.ndarray]) -> bool:
        """Whether each array of ``past`` is a row-0 prefix view of a ``[1, capacity, width]`` buffer that
        no other view references (so writing rows past it changes nothing anyone reads)."""
        if not all(self._prefix_of_base(value) for value in past.values()):
            return False
        if len({value.base.shape[1] for value in past.values()}) != 1:  # the arena's buffers share one capacity
            return False
        # counted as the arena's own buffers are: one dict entry and the state's view
        return all(self._references({name: value.base}, name) <= self._alone for name, value in past.items())

    @staticmethod
    def _prefix_of_base(value: np.ndarray) -> bool:
        """Whether ``value`` is the first rows of the C-contiguous 3-D array that owns its memory."""
        base = value.base
        return (type(base) is np.ndarray and base.ndim == 3 and base.base is None and base.dtype == value.dtype
                and base.flags.c_contiguous and value.flags.c_contiguous and value.ctypes.data == base.ctypes.data)

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
