"""Hand a serialized engine (plan) to TensorRT without a second host copy, hashing it on the way.

Reading the plan with ``read_bytes()`` and hashing those bytes costs the plan's size in host memory
before TensorRT even starts (about 2x the engine at load on a Jetson's shared memory, review
failure 5). Here:

* the sha256 is computed by streaming the file in :data:`CHUNK` pieces *before* TensorRT sees a
  byte: a damaged or replaced plan is refused without being deserialized (TensorRT's own plan
  checks are not meant for hostile or corrupt input). The second pass reads from the page cache.
* TensorRT >= 10.7 (``IStreamReaderV2``): TensorRT pulls the plan in chunks of at most
  :data:`CHUNK` bytes from the open file (seeks honoured).
* older TensorRT (buffer only): the file is memory-mapped (clean, reclaimable page-cache pages,
  not an anonymous copy).

Why not Polygraphy's ``FileReader`` (``polygraphy/backend/trt/file_reader.py``, used by
``EngineFromPath``): it prefers the older ``IStreamReader`` whenever the module has it (TensorRT 10.x),
answers each ``read`` with as many bytes as TensorRT asks for (no bound on the host buffer), its
``seek`` returns the new position rather than the success flag ``IStreamReaderV2.seek`` returns, and
it has no fallback for a TensorRT without stream readers and no digest. Here reads are capped at
:data:`CHUNK`, 10.3-10.6 get the memory map, and the digest is checked first.

API: ``IStreamReaderV2.read(num_bytes, stream) -> bytes`` and ``seek(offset, SeekPosition) -> bool``
(TensorRT Python API, ``tensorrt.IStreamReaderV2`` docstring, 10.7+ and 11.x);
``Runtime.deserialize_cuda_engine`` accepts either a buffer or a stream reader.
"""

from __future__ import annotations

import hashlib
import mmap
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

#: Largest chunk handed to TensorRT or hashed at once (bounds the extra host memory).
CHUNK = 32 << 20


class PlanFile:
    """An engine file opened for deserialization in bounded host memory."""

    def __init__(self, path: Path | str, chunk: int | None = None) -> None:
        self.path = Path(path)
        self.chunk = int(chunk if chunk is not None else CHUNK)
        self.size = self.path.stat().st_size
        self._handle: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._map: mmap.mmap | None = None

    # -- stream-reader side ----------------------------------------------------------------
    def read(self, num_bytes: int) -> bytes:
        """Up to ``min(num_bytes, chunk)`` bytes at the current position (TensorRT asks again for the rest)."""
        return self._handle.read(max(0, min(int(num_bytes), self.chunk)))

    def seek(self, offset: int, whence: int) -> bool:
        """``whence``: 0 from the start, 1 from the current position, 2 backwards from the end."""
        base = {0: 0, 1: self._handle.tell(), 2: self.size}[int(whence)]
        target = base - int(offset) if int(whence) == 2 else base + int(offset)
        if not 0 <= target <= self.size:
            return False
        self._handle.seek(target)
        return True

    # -- buffer side -----------------------------------------------------------------------
    def buffer(self) -> memoryview:
        """The whole plan as a read-only memory map (for TensorRT without ``IStreamReaderV2``)."""
        if self._map is None:
            self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        return memoryview(self._map) if self._map is not None else memoryview(b"")

    # -- digest ----------------------------------------------------------------------------
    def hexdigest(self) -> str:
        """sha256 of the file, streamed in chunks (never the whole plan in memory)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(self.chunk), b""):
                digest.update(block)
        return digest.hexdigest()

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # TensorRT still holds a view; the map is freed with it
                pass
            self._map = None
        self._handle.close()

    def __enter__(self) -> PlanFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def has_stream_reader(trt: Any) -> bool:
    """True when this TensorRT can deserialize from an ``IStreamReaderV2`` (10.7+, 11.x)."""
    return hasattr(trt, "IStreamReaderV2") and hasattr(trt, "SeekPosition")


def make_stream_reader(trt: Any, plan: PlanFile) -> Any:
    """A ``trt.IStreamReaderV2`` over ``plan`` (TensorRT keeps a raw pointer: keep it alive)."""
    whence = {trt.SeekPosition.SET: 0, trt.SeekPosition.CUR: 1, trt.SeekPosition.END: 2}

    class PlanStreamReader(trt.IStreamReaderV2):
        def __init__(self) -> None:
            trt.IStreamReaderV2.__init__(self)

        def read(self, num_bytes: int, stream: int) -> bytes:
            return plan.read(num_bytes)

        def seek(self, offset: int, where: Any) -> bool:
            return plan.seek(offset, whence[where])

    return PlanStreamReader()
