"""The request shapes an export was made for, enforced before any runner sees a request.

ONNX Runtime accepts any size on a dynamic axis, so without this check a prompt longer than the
export's ``past_sequence_length`` range runs on CPU and then fails only on the TensorRT engine,
whose profiles stop at the recorded maximum. Refusing on every backend, with the limit and the
export flag that raises it, makes an ORT test of an artifact a faithful rehearsal of the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.errors import OnnxModelError, ShapeError

#: the export flag that raises each limit
FLAGS = {
    "batch_size": "--max-batch",
    "sequence_length": "--max-seq",
    "past_sequence_length": "--max-kv",
    "num_image_tokens": "--max-pixels / --max-image-tokens",
}


@dataclass(frozen=True)
class ExportContract:
    """Limits from ``export.json`` dims (``source`` names the file in every refusal)."""

    source: Path
    max_batch: int
    max_chunk: int
    max_past: int
    min_image_tokens: int
    max_image_tokens: int
    #: the decoder takes an ``inplace`` cache longer than its attended rows (``decoder_graph.kv_cache_free_rows``)
    kv_free_rows: bool = False
    #: the longest cache array a decoder call takes (``total_sequence_length``'s max; None: not recorded)
    max_total: int | None = None

    @property
    def max_sequence(self) -> int:
        """Longest prompt + reply of one request: its last decode step appends to ``max_past`` cached tokens."""
        return self.max_past + 2

    @classmethod
    def from_manifest(cls, manifest: Any) -> ExportContract:
        dims = manifest.dims
        missing = [name for name in FLAGS if name not in dims]
        if missing:
            raise OnnxModelError(f"{manifest.path} defines no {', '.join(missing)} range.", path=manifest.path,
                                 hint=f"re-run `autoglm-trt export` to regenerate {manifest.path.name}.")
        tokens = dims["num_image_tokens"]
        total = dims.get("total_sequence_length")
        return cls(manifest.path, dims["batch_size"].max, dims["sequence_length"].max,
                   dims["past_sequence_length"].max, tokens.min, tokens.max,
                   kv_free_rows=manifest.kv_free_rows, max_total=total.max if total is not None else None)

    def _refuse(self, what: str, value: int, dim: str, limit: int, bound: str = "at most") -> ShapeError:
        return ShapeError(
            # the message names no server path (a server sends it to clients); ``path`` names the file
            f"{what} is {value}, but the export serves {bound} {limit} ({dim} in {self.source.name}).",
            path=self.source,
            hint=f"re-export with a larger {FLAGS[dim]} (or a --workload that covers it), or shorten the request.",
        )

    def check_step(self, batch: int, chunk: int, past: int) -> None:
        """One decoder call: ``batch`` rows of ``chunk`` new tokens onto ``past`` cached ones."""
        if batch > self.max_batch:
            raise self._refuse("the batch", batch, "batch_size", self.max_batch)
        if chunk > self.max_chunk:
            raise self._refuse("a decoder call's token count", chunk, "sequence_length", self.max_chunk)
        if past > self.max_past:
            raise self._refuse("the KV cache", past, "past_sequence_length", self.max_past)

    def check_request(self, batch: int, prompt_tokens: int, max_new_tokens: int) -> None:
        """A whole generation: the last decode step appends to ``prompt + new - 2`` cached tokens."""
        if batch > self.max_batch:
            raise self._refuse("the batch", batch, "batch_size", self.max_batch)
        needed = prompt_tokens + max_new_tokens - 2
        if needed > self.max_past:
            raise self._refuse(f"the cache for {prompt_tokens} prompt + {max_new_tokens} new tokens", needed,
                               "past_sequence_length", self.max_past)

    def check_image_tokens(self, per_image: Sequence[int]) -> None:
        for count in per_image:
            if count > self.max_image_tokens:
                raise self._refuse("an image's token count", count, "num_image_tokens", self.max_image_tokens)
            if count < self.min_image_tokens:
                raise self._refuse("an image's token count", count, "num_image_tokens", self.min_image_tokens,
                                   bound="at least")


__all__ = ["ExportContract", "FLAGS"]
