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

**Blocks.** A graph that takes free rows after the attended ones (export.json
``decoder_graph.kv_cache_free_rows``: the write position comes from ``attention_mask``, not from
the cache's length) is fed views that grow by ``block`` rows at a time (:data:`KV_BLOCK`) instead
of one row per step. The fed arrays are then the very same objects for ``block`` decode steps, so
an IO-bound runner binds the cache once per block instead of every tensor every step (the binding
was about half the host work of a small model's decode step). The state keeps exact views
(``handed``); the fed block views (``bound``) are the arena's own, like its buffers: a feed is not
a state, and the free rows of a fed view change with the next step. Free rows are zero (new
buffers) or rows of an earlier step, never uninitialised memory: the graph masks them out, and a
masked NaN would still poison the attention sum.

**Shared caches.** A ``shared`` cache (the ``onnxruntime`` flavour) is ``[1, kv_heads, T, head_dim]``:
its row prefixes are not contiguous, so in block mode the arena feeds each buffer whole (the block
is the capacity, at most ``max_rows``) and GroupQueryAttention reads only the attended rows: the cache
is bound once per buffer, not once per block. Without blocks (a runner that does not write in place)
each step gets exactly sized copies, as batches of more than one do.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from trt_pipeline.models.glm4v.io_spec import KvLayout

#: Rows of headroom a new buffer gets beyond what the step needs (at least), so decode steps keep fitting.
MIN_HEADROOM = 64
#: Rows a fed cache view grows by in block mode. ONNX Runtime's CPU ``Attention`` reads every fed row,
#: masked or not (~1.5 us a row on the small preset's int4 decoder), and a new block costs one binding of
#: the whole feed; continuous decode on the small preset was fastest at 16 (``benchmarks/kv_block_sweep.py``,
#: int4, 128 steps from 64 / 512 tokens: 2.85 / 3.70 ms a step; 8 rows 2.88 / 3.72, 32: 2.90 / 3.70,
#: 64: 2.94 / 3.77, a binding every step 3.01 / 3.85). At a 25k-token phone-agent context 15 rows are 0.06 %.
KV_BLOCK = 16


class KvArena:
    """Growing per-tensor buffers of a batch-of-one ``inplace`` cache (see the module docstring)."""

    def __init__(self, layout: KvLayout, block: int | None = None, max_rows: int | None = None) -> None:
        """``block``: feed views that grow ``block`` rows at a time, up to ``max_rows`` (the longest cache the
        graph takes: ``total_sequence_length``'s max); only for graphs that take free rows. None: exact views."""
        if not layout.inplace:
            raise ValueError("KvArena serves inplace KV caches only")
        if block is not None and block < 1:
            raise ValueError(f"block must be >= 1 rows, got {block}")
        self.layout = layout
        self.block, self.max_rows = block, max_rows
        self.buffers: dict[str, np.ndarray] = {}
        self.handed: dict[str, np.ndarray] = {}  # the exact views of the last feed (a decode step's state is them)
        self.bound: dict[str, np.ndarray] = {}  # block mode: the block views fed last (reused while they fit)
        self._bound_rows = 0
        # references a buffer has when only the arena and ONE view hold it, counted in _exclusive's frame
        probe = {"": np.empty((1, 2, 1))}
        view = probe[""][:, :1]
        self._alone = self._references(probe, "")
        del view

    def feed(self, past: Mapping[str, np.ndarray], new: int) -> Mapping[str, np.ndarray]:
        """Per tensor: an array of ``past``'s rows plus ``new`` rows to write (a view of the arena when batch
        is 1; in block mode one that may run further, and the same objects while the block lasts: read only).

        :attr:`handed` then holds the exact views (``past + new`` rows) the next state should be."""
        if not past:
            return {}
        batch, length = self._shape(past)
        need = length + new
        if batch != 1 or (self.block is None and not self.layout.sequence_major):
            return {name: extended(self.layout, value, need) for name, value in past.items()}
        # a decode step continuing the last one feeds back exactly the views handed out (the runner wrote
        # into them): checked by identity; every other start is settled by the per-array checks
        if not (self._is_handed(past) and need <= self.capacity):
            self._settle(past, length, need)
        buffers, rows = self.buffers, self.layout.rows
        self.handed = {name: rows(buffers[name], 0, need) for name in past}
        if self.block is None:
            return dict(self.handed)
        return self._block_views(need)

    def _block_views(self, need: int) -> dict[str, np.ndarray]:
        """The fed views in block mode: ``need`` rows rounded up to the block (within the buffers and
        ``max_rows``), the same objects as last time when that is still the row count."""
        block = self.block
        if self.layout.sequence_major:
            rows = min(-(-need // block) * block, self.capacity, self.max_rows or need)
            rows = max(rows, need)
        else:  # [1, kv, T, D]: only the whole buffer is contiguous
            rows = self.capacity
        bound = self.bound
        if bound and self._bound_rows == rows:
            return bound
        cut = self.layout.rows
        self.bound = {name: cut(buffer, 0, rows) for name, buffer in self.buffers.items()}
        self._bound_rows = rows
        return self.bound

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
            self.handed, self.bound, self.buffers = {}, {}, {name: value.base for name, value in past.items()}
            if self.block is not None:  # its free rows are fed (masked): never uninitialised memory
                for buffer in self.buffers.values():
                    self.layout.rows(buffer, length)[...] = 0
        else:
            return dict(past)
        buffers, rows = self.buffers, self.layout.rows
        self.handed = {name: rows(buffers[name], 0, length) for name in past}
        return dict(self.handed)

    def _shape(self, past: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """(batch, cached rows) of a ``past`` in this arena's layout (an array of another layout is refused)."""
        first = next(iter(past.values()))
        layout = self.layout
        if first.ndim != len(layout.shape(1, 1)):
            spelled = ("[batch, positions, kv_heads * head_dim]" if layout.sequence_major
                       else "[batch, kv_heads, positions, head_dim]")
            raise ValueError(f"an {layout.kind} KV cache holds {spelled} arrays, got shape {tuple(first.shape)}: a "
                             "cache of another layout (made by another export?) cannot be fed to it")
        return int(first.shape[0]), layout.length(first)

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
        return self.layout.length(next(iter(self.handed.values()))) if self.handed else 0

    @property
    def capacity(self) -> int:
        """Rows every buffer holds (0 before the first feed)."""
        return self.layout.length(next(iter(self.buffers.values()))) if self.buffers else 0

    def _holds(self, name: str, value: np.ndarray, length: int, need: int) -> bool:
        """Whether ``value`` is the first ``length`` rows of this arena's buffer, which has room for ``need``."""
        buffer = self.buffers.get(name)
        length_of = self.layout.length
        return (buffer is not None and value.base is buffer and length_of(value) == length
                and length_of(buffer) >= need and value.dtype == buffer.dtype and value.strides == buffer.strides
                and value.ctypes.data == buffer.ctypes.data)  # a prefix: the view starts at row 0

    def _sole_owner(self, past: Mapping[str, np.ndarray]) -> bool:
        """Whether each array of ``past`` is a row-0 prefix view of a buffer (``[1, capacity, width]``, or
        ``[1, kv, capacity, D]`` shared) that no other view references (so writing rows past it changes
        nothing anyone reads)."""
        if not all(prefix_of_buffer(value) for value in past.values()):
            return False
        if len({self.layout.length(value.base) for value in past.values()}) != 1:  # one capacity for all buffers
            return False
        # counted as the arena's own buffers are: one dict entry and the state's view
        return all(self._references({name: value.base}, name) <= self._alone for name, value in past.items())

    def _exclusive(self, name: str) -> bool:
        """Whether the state's view is the only view of ``name``'s buffer (nobody else reads its rows;
        the arena's own block view is not a reader)."""
        return self._references(self.buffers, name) <= self._alone + (name in self.bound)

    @staticmethod
    def _references(buffers: Mapping[str, np.ndarray], name: str) -> int:
        buffer = buffers[name]
        return sys.getrefcount(buffer)

    def _rebuild(self, past: Mapping[str, np.ndarray], length: int, need: int) -> None:
        """New buffers with headroom holding ``past``'s rows (old buffers stay with whoever still reads them)."""
        capacity = need + max(need // 2, MIN_HEADROOM)
        if self.block is not None:  # whole blocks; zeroed (calloc): block mode feeds the free rows
            capacity = -(-capacity // self.block) * self.block
            if self.max_rows is not None and not self.layout.sequence_major:  # fed whole: within the graph's range
                capacity = max(min(capacity, self.max_rows), need)
        make = np.empty if self.block is None else np.zeros
        layout, buffers = self.layout, {}
        for name, value in past.items():
            buffer = make(layout.shape(1, capacity), dtype=value.dtype)
            layout.rows(buffer, 0, length)[...] = value
            buffers[name] = buffer
        self.buffers, self.bound = buffers, {}



def prefix_of_buffer(value: np.ndarray) -> bool:
    """Whether ``value`` is the first rows of the C-contiguous array (of its rank) that owns its memory (a view
    the arena handed out, in either layout: a ``shared`` cache's row prefix is such a view without being
    contiguous)."""
    base = value.base
    return (type(base) is np.ndarray and base.ndim == value.ndim and base.base is None
            and base.dtype == value.dtype and base.flags.c_contiguous and value.strides == base.strides
            and value.ctypes.data == base.ctypes.data)


def extended(layout: KvLayout, value: np.ndarray, need: int) -> np.ndarray:
    """A C-contiguous ``layout`` array of ``need`` rows whose first rows are ``value``'s (the rest uninitialised):
    what a batch of more than one, or a shared cache without blocks, is fed instead of an arena view."""
    out = np.empty(layout.shape(int(value.shape[0]), need), dtype=value.dtype)
    layout.rows(out, 0, layout.length(value))[...] = value
    return out


__all__ = ["KV_BLOCK", "KvArena", "MIN_HEADROOM", "extended", "prefix_of_buffer"]
