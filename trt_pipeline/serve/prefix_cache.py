"""KV reuse across agent steps: keep recent conversations' caches, prefill only what differs.

Each agent step resends the whole conversation (system prompt, earlier replies, a new screenshot).
After a request finishes, its KV cache (prompt + reply) is stored under its *identity key*: the
token ids, except that image placeholder positions carry a digest of their image, since every image
has the same placeholder id. A new request reuses the longest common prefix with any stored entry
and prefills only the rest on top of it (the decoder's append path: past length > 0, several new
tokens). Position ids of a prefix depend only on the prefix, so the cache of a common prefix is
exactly what a from-scratch prefill would compute.

Bounded LRU by entries and by tokens; entries are immutable (arrays are sliced, never written).
With an ``inplace`` export an entry's arrays may be prefix views of the stepper's
:class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` buffer; the arena writes only rows past every
view it handed out and copies before continuing from a shorter one, so they stay as stored.
Positions are cut through the entry's :class:`~trt_pipeline.models.glm4v.io_spec.KvLayout`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trt_pipeline.models.glm4v.io_spec import KvLayout


@dataclass(frozen=True)
class CachedPrefix:
    key: tuple[int, ...]
    kv: tuple[np.ndarray, ...]  # per past input, layout.shape(1, len(key))
    layout: KvLayout

    def sliced(self, length: int) -> list[np.ndarray]:
        """The first ``length`` positions of every array (views)."""
        return [self.layout.rows(array, 0, length) for array in self.kv]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    left = np.asarray(a[:limit], dtype=np.int64)
    right = np.asarray(b[:limit], dtype=np.int64)
    mismatch = np.flatnonzero(left != right)
    return int(mismatch[0]) if len(mismatch) else limit


class PrefixCache:
    """LRU of :class:`CachedPrefix` (``max_entries`` conversations, ``max_tokens`` tokens in all)."""

    def __init__(self, max_entries: int = 8, max_tokens: int = 1 << 20) -> None:
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], CachedPrefix] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Sequence[int]) -> tuple[CachedPrefix | None, int]:
        """The entry sharing the longest prefix with ``key`` and that length (0: nothing to reuse)."""
        with self._lock:
            best, best_len = None, 0
            for entry in self._entries.values():
                length = common_prefix(entry.key, key)
                if length > best_len:
                    best, best_len = entry, length
            if best is not None:
                self._entries.move_to_end(best.key)
            return best, best_len

    def store(self, key: Sequence[int], kv: Sequence[np.ndarray], layout: KvLayout) -> None:
        """Keep ``kv`` (``layout``, one row of ``len(key)`` positions) under ``key``, evicting the least recently used."""
        if self.max_entries <= 0 or not key:
            return
        entry = CachedPrefix(tuple(int(k) for k in key), tuple(kv), layout)
        with self._lock:
            self._entries.pop(entry.key, None)
            self._entries[entry.key] = entry
            while len(self._entries) > self.max_entries or (
                len(self._entries) > 1 and sum(len(e.key) for e in self._entries.values()) > self.max_tokens
            ):
                self._entries.popitem(last=False)
