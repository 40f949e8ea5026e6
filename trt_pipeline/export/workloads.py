"""Named workloads: the request shapes an export is made for, and where every number came from.

An export's dynamic ranges (``export.json`` dims) and the TensorRT profiles built from them
decide which requests an artifact can serve. Small defaults made the first artifacts unable to
serve one real phone-agent step, so the ranges come from a named *workload*:

``phone-agent``
    The Open-AutoGLM phone agent against AutoGLM-Phone-9B (ARCHITECTURE.md, "The workload"):
    one 1080x2400 screenshot per step (1092x2408 px after resizing, 3,354 image tokens), images
    up to 5,000,000 pixels (6,377 tokens), up to 10 images per prompt, a first prefill of 4-5k
    tokens, ~3.5k tokens appended per later step to a cache of 10-25k tokens, a context of
    25,480 tokens. The default for checkpoints of the real model's width.
``tiny``
    The small ranges the tests and the built-in demo use (prompts <= 256 tokens, cache <= 512).

Every number can be overridden by an export flag; :func:`resolve_workload` records, per dim,
whether it came from the workload, a flag or the checkpoint's image processor.

``--max-pixels`` counts the pixels of one image (height x width), as the agent's documentation
does. GLM-4.1V's processor compares ``temporal_patch_size * h * w`` against its ``longest_edge``,
so the processor limit is ``temporal_patch_size * max_pixels`` (see :func:`processor_longest_edge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trt_pipeline.errors import ConfigError

#: pixels of one image covered by one image token: (patch 14 x merge 2)^2
PIXELS_PER_TOKEN_SIDE = 28


@dataclass(frozen=True)
class Workload:
    """The request shapes one deployment serves.

    Attributes:
        name: registry key (``--workload``).
        description: one line for ``--help``.
        max_batch: concurrent sequences decoded together.
        max_chunk: most tokens fed in one decoder call (a longer prompt is prefilled in chunks).
        max_past: most tokens already in the cache when a chunk or token is fed (the context
            minus the token being decoded).
        max_pixels: most pixels (h x w) of one image; ``None``: the checkpoint processor's limit.
        images_per_prompt: most images in one request.
        min_image_tokens: fewest image tokens the vision profile starts at; ``None``: what the
            processor's ``min_pixels`` allows.
        typical: opt values of the profiles: ``prefill`` (first-step tokens), ``append``
            (tokens added per later step), ``append_past`` / ``decode_past`` (cache length then).
    """

    name: str
    description: str
    max_batch: int
    max_chunk: int
    max_past: int
    max_pixels: int | None
    images_per_prompt: int
    min_image_tokens: int | None = None
    typical: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "typical", MappingProxyType(dict(self.typical)))


PHONE_AGENT = Workload(
    name="phone-agent",
    description="Open-AutoGLM phone agent: 1080x2400 screenshots, 4-5k first prefill, +3.5k per step, 25,480-token context",
    max_batch=4,
    max_chunk=8192,
    max_past=25_480 - 1,
    max_pixels=5_000_000,
    images_per_prompt=10,
    typical={"prefill": 4608, "append": 3584, "append_past": 8192, "decode_past": 12288},
)

TINY = Workload(
    name="tiny",
    description="tests and the built-in demo: prompts <= 256 tokens, cache <= 512",
    max_batch=4,
    max_chunk=256,
    max_past=512,
    max_pixels=None,
    images_per_prompt=2,
    min_image_tokens=4,
    typical={"prefill": 128},
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (PHONE_AGENT, TINY)}

#: text width from which a checkpoint counts as the real model (AutoGLM-Phone-9B: 4096)
REAL_MODEL_HIDDEN_SIZE = 4096


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ConfigError(
            f"unknown workload {name!r}; choose from {', '.join(sorted(WORKLOADS))}.",
            hint="pass --workload phone-agent for real phone-agent requests or --workload tiny for tests.",
        ) from None


def default_workload(hidden_size: int) -> Workload:
    """``phone-agent`` for checkpoints of the real model's width, ``tiny`` for test-sized ones."""
    return PHONE_AGENT if hidden_size >= REAL_MODEL_HIDDEN_SIZE else TINY


def processor_longest_edge(max_pixels: int, temporal_patch_size: int) -> int:
    """The processor's ``size.longest_edge`` that admits images of ``max_pixels`` (h x w)."""
    return int(max_pixels) * int(temporal_patch_size)


def image_token_bounds(
    min_edge: int, longest_edge: int, temporal_patch_size: int, merge: int, patch: int
) -> tuple[int, int]:
    """(fewest, most) image tokens one image can become under the processor's pixel limits.

    ``smart_resize`` rounds each side to ``patch * merge`` and scales into
    ``[min_edge, longest_edge]`` counted over ``temporal_patch_size`` frames; one token covers a
    ``(patch * merge)^2`` pixel block.
    """
    block = (patch * merge) ** 2
    most = max(1, longest_edge // temporal_patch_size // block)
    fewest = max(1, -(-min_edge // temporal_patch_size // block))
    return min(fewest, most), most


@dataclass(frozen=True)
class ResolvedWorkload:
    """Dims (name -> (min, opt, max)), where each came from, and the profiles' opt values."""

    workload: str
    dims: Mapping[str, tuple[int, int, int]]
    sources: Mapping[str, str]
    profile_opts: Mapping[str, Mapping[str, int]]
    max_pixels: int | None = None  # pixels (h x w) of one image the export is made for

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.workload,
            "max_pixels": self.max_pixels,
            "sources": dict(self.sources),
            "profiles": {name: dict(opts) for name, opts in self.profile_opts.items()},
        }


def _pick(name: str, workload_value: int, overrides: Mapping[str, int | None], flag: str, sources: dict) -> int:
    value = overrides.get(name)
    if value is None:
        sources[name] = f"workload {flag}"
        return workload_value
    if int(value) < 1:
        raise ConfigError(f"{flag} must be >= 1, got {value}.", hint=f"pass a positive {flag}.")
    sources[name] = f"flag {flag}"
    return int(value)


def resolve_workload(
    workload: Workload,
    *,
    image_tokens: tuple[int, int],
    image_tokens_source: str,
    overrides: Mapping[str, int | None] = MappingProxyType({}),
) -> ResolvedWorkload:
    """min/opt/max of every symbolic axis for ``workload``, with per-dim provenance.

    Args:
        workload: the named workload.
        image_tokens: (fewest, most) tokens of one image under the effective pixel limits.
        image_tokens_source: where those limits came from (processor config file or flag).
        overrides: explicit flags: ``max_batch``, ``max_seq`` (chunk), ``max_kv`` (cache),
            ``min_image_tokens``, ``max_image_tokens``; ``None`` entries mean "not given".
    """
    sources: dict[str, str] = {}
    batch = _pick("batch_size", workload.max_batch, {"batch_size": overrides.get("max_batch")}, "--max-batch", sources)
    chunk = _pick("sequence_length", workload.max_chunk, {"sequence_length": overrides.get("max_seq")}, "--max-seq", sources)
    past = _pick(
        "past_sequence_length", workload.max_past, {"past_sequence_length": overrides.get("max_kv")}, "--max-kv", sources
    )
    low, high = image_tokens
    sources["num_image_tokens"] = image_tokens_source
    if workload.min_image_tokens is not None:
        low = workload.min_image_tokens
    if overrides.get("min_image_tokens") is not None:
        low, sources["num_image_tokens"] = int(overrides["min_image_tokens"]), "flag --min-image-tokens"
    if overrides.get("max_image_tokens") is not None:
        high, sources["num_image_tokens"] = int(overrides["max_image_tokens"]), "flag --max-image-tokens"
    if not 1 <= low <= high:
        raise ConfigError(f"image tokens min {low} > max {high} ({sources['num_image_tokens']}).",
                          hint="check --min-image-tokens/--max-image-tokens.")
    typical = workload.typical
    prefill_opt = min(chunk, typical.get("prefill", chunk))
    dims = {
        "batch_size": (1, 1, batch),
        "sequence_length": (1, prefill_opt, chunk),
        "past_sequence_length": (0, min(past, typical.get("decode_past", past // 2)), past),
        "num_image_tokens": (low, min(high, max(low, (low + high) // 2)), high),
    }
    profile_opts = {
        "prefill": {"sequence_length": prefill_opt},
        "append": {
            "sequence_length": max(2, min(chunk, typical.get("append", chunk // 2))),
            "past_sequence_length": max(1, min(past, typical.get("append_past", past // 2))),
        },
        "decode": {"past_sequence_length": max(1, min(past, typical.get("decode_past", past // 2)))},
    }
    return ResolvedWorkload(workload.name, MappingProxyType(dims), MappingProxyType(sources), MappingProxyType(profile_opts))


__all__ = [
    "PHONE_AGENT",
    "TINY",
    "WORKLOADS",
    "ResolvedWorkload",
    "Workload",
    "default_workload",
    "get_workload",
    "image_token_bounds",
    "processor_longest_edge",
    "resolve_workload",
]
