"""Token agreement: does a candidate still produce the reference's greedy continuation?

One implementation for ``compare`` (each backend vs transformers' ``generate``) and ``precision``
(the fp16/int8 ONNX vs the fp32 ONNX). Both hand over, per prompt, the reference's and the
candidate's generated token ids (cut after the first EOS); this class does the arithmetic:

* **exact-match rate**: share of prompts whose whole sequence equals the reference (a gate,
  ``PrecisionGates.token_exact_match``: one flipped near-tie changes every later token, so a
  per-token rate hides how often the agent would act differently);
* **first divergence** per prompt: 0-based index of the first differing token (a sequence that
  stops early diverges where it stops; None when equal), its mean over diverging prompts, and the
  mean common-prefix length;
* **token agreement**: matching positions / compared positions, where a prompt contributes the
  longer of its two lengths (missing positions count as mismatches);
* **first-token agreement**: share of prompts whose first token agrees (prefill quality alone);
* **teacher-forced agreement** (when the caller adds the candidate's teacher-forced predictions):
  the candidate predicts each next token given the *reference's* prefix (one prefill of the
  reference sequence, argmax at every position,
  :func:`~trt_pipeline.models.glm4v.generation.teacher_forced_tokens`); matching positions /
  reference tokens. Greedy sequences diverge for good after the first flipped near-tie, so the
  exact rate says how often the agent's action changes, while the teacher-forced rate says how
  often a single step is wrong, independent of where the first flip happened (the primary gate,
  ``PrecisionGates.token_teacher_forced``; see :mod:`trt_pipeline.accuracy.gates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def first_divergence(reference: Sequence[int], candidate: Sequence[int]) -> int | None:
    """Index of the first position where the sequences differ (length difference counts); None if equal."""
    for index, (a, b) in enumerate(zip(reference, candidate)):
        if a != b:
            return index
    if len(reference) != len(candidate):
        return min(len(reference), len(candidate))
    return None


#: the scalar results of a :class:`TokenAgreement`, in report order
SUMMARY_FIELDS = ("backend", "precision", "prompts", "exact_matches", "exact_match_rate", "token_agreement",
                  "teacher_forced_agreement", "first_token_agreement", "mean_first_divergence", "mean_common_prefix",
                  "threshold", "teacher_forced_threshold", "passed")


def teacher_forced_matches(reference: Sequence[int], predicted: Sequence[int]) -> int:
    """Positions where the teacher-forced prediction equals the reference token."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} teacher-forced predictions for {len(reference)} reference tokens")
    return sum(a == b for a, b in zip(reference, predicted))


@dataclass
class TokenAgreement:
    """Reference and candidate sequences of one candidate over the held-out prompts, and the gate."""

    backend: str
    precision: str
    threshold: float
    ids: list[str] = field(default_factory=list)
    reference: list[list[int]] = field(default_factory=list)
    candidate: list[list[int]] = field(default_factory=list)
    #: per prompt, the candidate's argmax after each reference prefix (None: not measured)
    teacher_forced: list[list[int] | None] = field(default_factory=list)
    #: min teacher-forced agreement (None: not gated; gated but not measured fails)
    teacher_forced_threshold: float | None = None

    def add(self, prompt_id: str, reference: Sequence[int], candidate: Sequence[int],
            teacher_forced: Sequence[int] | None = None) -> None:
        if teacher_forced is not None:
            teacher_forced_matches(reference, teacher_forced)  # same length, or ValueError
        self.ids.append(prompt_id)
        self.reference.append(list(reference))
        self.candidate.append(list(candidate))
        self.teacher_forced.append(None if teacher_forced is None else list(teacher_forced))

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
    def token_agreement(self) -> float:
        compared = sum(max(len(r), len(c)) for r, c in zip(self.reference, self.candidate))
        same = sum(sum(a == b for a, b in zip(r, c)) for r, c in zip(self.reference, self.candidate))
        return same / compared if compared else 1.0

    @property
    def teacher_forced_agreement(self) -> float | None:
        """Reference tokens the candidate predicts given the reference prefix / reference tokens
        (None unless every prompt has teacher-forced predictions)."""
        if not self.teacher_forced or any(t is None for t in self.teacher_forced):
            return None
        total = sum(len(r) for r in self.reference)
        same = sum(teacher_forced_matches(r, t) for r, t in zip(self.reference, self.teacher_forced))
        return same / total if total else 1.0

    @property
    def first_token_agreement(self) -> float:
        agree = sum(bool(r) and bool(c) and r[0] == c[0] for r, c in zip(self.reference, self.candidate))
        return agree / self.prompts if self.prompts else 1.0

    @property
    def teacher_forced_passed(self) -> bool:
        if not self.teacher_forced_threshold:
            return True
        forced = self.teacher_forced_agreement
        return forced is not None and forced >= self.teacher_forced_threshold

    @property
    def passed(self) -> bool:
        return self.exact_match_rate >= self.threshold and self.teacher_forced_passed

    def failure(self) -> str | None:
        if self.passed:
            return None
        first = min((d for d in self.divergences if d is not None), default=None)
        forced = self.teacher_forced_agreement
        forced_text = "not measured" if forced is None else f"{forced:.1%}"
        gate = f" (gate >= {self.teacher_forced_threshold:.0%})" if self.teacher_forced_threshold else ""
        return (f"{self.backend} tokens: teacher-forced {forced_text}{gate}, exact match {self.exact_matches}/"
                f"{self.prompts} = {self.exact_match_rate:.1%} (gate >= {self.threshold:.0%}); mean first divergence "
                f"at token {_number(self.mean_first_divergence)}, earliest at token {first}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SUMMARY_FIELDS},
            "per_prompt": [
                {"id": i, "first_divergence": d, "reference": r, "candidate": c, "teacher_forced": t,
                 "teacher_forced_matches": None if t is None else teacher_forced_matches(r, t)}
                for i, d, r, c, t in zip(self.ids, self.divergences, self.reference, self.candidate, self.teacher_forced)
            ],
        }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


__all__ = ["TokenAgreement", "first_divergence", "teacher_forced_matches"]
