"""Token-level agreement: does each backend still produce the same greedy continuation?

For every held-out prompt (with its image) the reference generates ``N`` tokens with transformers'
``generate(do_sample=False)`` (what ``autoglm-trt generate --backend torch`` does); every candidate
backend generates with :func:`~trt_pipeline.models.glm4v.generation.greedy_generate` over its runners
(what ``--backend torch-export/ort/trt`` do). Rows are cut after the first EOS like ``generate``.

Reported per backend: the **exact-match rate** (whole sequences equal to the reference), the
**first divergence** index per prompt (0-based position of the first differing token; ``None``
when equal) with its mean over diverging prompts, and the mean length of the common prefix.
The gate is the exact-match rate (``PrecisionGates.token_exact_match``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def first_divergence(reference: Sequence[int], candidate: Sequence[int]) -> int | None:
    """Index of the first position where the sequences differ (length difference counts); None if equal."""
    for index, (a, b) in enumerate(zip(reference, candidate)):
        if a != b:
            return index
    if len(reference) != len(candidate):
        return min(len(reference), len(candidate))
    return None


@dataclass
class TokenAgreement:
    backend: str
    precision: str
    threshold: float
    ids: list[str] = field(default_factory=list)
    reference: list[list[int]] = field(default_factory=list)
    candidate: list[list[int]] = field(default_factory=list)

    @property
    def divergences(self) -> list[int | None]:
        return [first_divergence(r, c) for r, c in zip(self.reference, self.candidate)]

    @property
    def prompts(self) -> int:
        return len(self.ids)

    @property
    def exact_matches(self) -> int:
        return sum(d is None for d in self.divergences)

    @property
    def exact_match_rate(self) -> float:
        return self.exact_matches / self.prompts if self.prompts else 1.0

    @property
    def mean_first_divergence(self) -> float | None:
        diverged = [d for d in self.divergences if d is not None]
        return sum(diverged) / len(diverged) if diverged else None

    @property
    def mean_common_prefix(self) -> float:
        lengths = [len(r) if d is None else d for r, d in zip(self.reference, self.divergences)]
        return sum(lengths) / len(lengths) if lengths else 0.0

    @property
    def passed(self) -> bool:
        return self.exact_match_rate >= self.threshold

    def failure(self) -> str | None:
        if self.passed:
            return None
        first = min((d for d in self.divergences if d is not None), default=None)
        return (f"{self.backend} tokens: exact match {self.exact_matches}/{self.prompts} = {self.exact_match_rate:.1%} "
                f"(gate >= {self.threshold:.0%}); mean first divergence at token {self.mean_first_divergence:.2f}, "
                f"earliest at token {first}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "prompts": self.prompts,
            "exact_matches": self.exact_matches,
            "exact_match_rate": self.exact_match_rate,
            "mean_first_divergence": self.mean_first_divergence,
            "mean_common_prefix": self.mean_common_prefix,
            "threshold": self.threshold,
            "passed": self.passed,
            "per_prompt": [
                {"id": i, "first_divergence": d, "reference": r, "candidate": c}
                for i, d, r, c in zip(self.ids, self.divergences, self.reference, self.candidate)
            ],
        }


@torch.no_grad()
def reference_tokens(model: Any, processing: Any, heldout: Sequence[Any], max_new_tokens: int) -> list[list[int]]:
    """transformers ``generate(do_sample=False)``, one prompt at a time (as ``generate --backend torch``)."""
    from trt_pipeline.generate import _strip_after_eos

    eos = processing.eos_token_ids
    rows = []
    for entry in heldout:
        inputs = entry.inputs
        out = model.generate(
            **inputs.hf_kwargs(), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos or None, pad_token_id=processing.pad_token_id,
        )
        rows.append(_strip_after_eos(out[0, inputs.input_ids.shape[1]:].tolist(), eos))
    return rows


def backend_tokens(
    assets: Any, vision_runner: Any, decoder_runner: Any, processing: Any, heldout: Sequence[Any], max_new_tokens: int
) -> list[list[int]]:
    """``greedy_generate`` over one backend's runners (activated once for all prompts)."""
    from trt_pipeline.generate import _strip_after_eos
    from trt_pipeline.models.glm4v.generation import greedy_generate

    eos = processing.eos_token_ids
    rows = []
    with contextlib.ExitStack() as stack:
        for runner in (vision_runner, decoder_runner):
            stack.enter_context(runner)
        for entry in heldout:
            result = greedy_generate(assets, vision_runner, decoder_runner, entry.inputs, max_new_tokens,
                                     eos_token_ids=eos, pad_token_id=processing.pad_token_id)
            rows.append(_strip_after_eos(result.token_lists()[0], eos))
    return rows


__all__ = ["TokenAgreement", "backend_tokens", "first_divergence", "reference_tokens"]
