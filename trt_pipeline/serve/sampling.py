"""Next-token choice from last-position logits: penalties, temperature, top-k, top-p, seed.

Order and semantics follow vLLM's sampler (``vllm/model_executor/layers/sampler.py`` and
``vllm/v1/sample/ops/penalties.py``), which is what GLM clients are tuned against:

1. **repetition_penalty** (HF/CTRL, Keskar et al. 2019; vLLM applies it to prompt *and* output
   tokens): for every token already seen, ``logit / p`` if the logit is positive, ``logit * p``
   otherwise. 1.0 disables it.
2. **frequency_penalty** (OpenAI: "penalize new tokens based on their existing frequency in the
   text so far"; vLLM counts *output* tokens only): ``logit -= frequency_penalty * count(token)``.
3. **presence_penalty** (OpenAI: "whether they appear in the text so far"; output tokens only):
   ``logit -= presence_penalty * (count(token) > 0)``.
   Both as in https://platform.openai.com/docs/guides/text-generation (parameter details:
   ``mu[j] -> mu[j] - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence``).
4. ``temperature < 1e-5`` -> greedy ``argmax`` of the penalised logits (top-k/top-p ignored; vLLM's
   ``_SAMPLING_EPS``: dividing by a near-zero temperature overflows the logits to inf/NaN);
   otherwise ``logits / temperature``, keep the ``top_k`` largest (-1/0: all), keep the smallest set
   whose probability reaches ``top_p``, and draw from the softmax with a per-request
   ``torch.Generator`` seeded by ``seed`` (reproducible) or by the OS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Temperatures below this are greedy (vLLM ``_SAMPLING_EPS``).
SAMPLING_EPS = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS


def apply_penalties(
    logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int], output_ids: Sequence[int]
) -> torch.Tensor:
    """Penalised copy of 1-D ``logits`` (see the module docstring for each penalty's source)."""
    out = logits.clone().float()
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long)
        if len(seen):
            values = out[seen]
            out[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if output_ids and (params.frequency_penalty or params.presence_penalty):
        counts = Counter(int(t) for t in output_ids)
        ids = torch.tensor(list(counts), dtype=torch.long)
        freq = torch.tensor([counts[int(t)] for t in ids], dtype=torch.float32)
        out[ids] -= params.frequency_penalty * freq + params.presence_penalty * (freq > 0).float()
    return out


def finite(scores: torch.Tensor) -> torch.Tensor:
    """Overflow from extreme (valid) parameters, e.g. ``repetition_penalty=5e-324``, made well-defined:
    +inf -> the largest float32 (those tokens share the mass), NaN -> -inf (never drawn)."""
    return torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) set to -inf; the most likely token always stays."""
    out = logits.clone()
    if 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k).values[-1]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
        drop[0] = False
        out[order[drop]] = float("-inf")
    return out


class TokenCounts:
    """Per-token output counts and the seen set (prompt + output) as dense vocab-sized tensors, updated
    with each new token only: a step's penalties then cost a few vector ops instead of recounting
    the whole reply in Python (the values equal :func:`apply_penalties`: a token never seen gets
    ``- 0.0`` and stays as it was)."""

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int]) -> None:
        self.params = params
        self.prompt_ids = list(prompt_ids)
        self.counts: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.counted = 0

    def _update(self, vocab: int, output_ids: Sequence[int]) -> None:
        if self.counts is None or self.counts.shape[0] != vocab or self.counted > len(output_ids):
            self.counts, self.counted = torch.zeros(vocab, dtype=torch.float32), 0
            self.seen = torch.zeros(vocab, dtype=torch.bool)
            self.seen[torch.tensor([t for t in self.prompt_ids if 0 <= t < vocab], dtype=torch.long)] = True
        new = torch.tensor([int(t) for t in output_ids[self.counted:]], dtype=torch.long)
        self.counts.index_add_(0, new, torch.ones(len(new)))
        self.seen[new] = True
        self.counted = len(output_ids)

    def apply(self, logits: torch.Tensor, output_ids: Sequence[int]) -> torch.Tensor:
        """Penalised copy of 1-D ``logits`` (same result as :func:`apply_penalties`)."""
        params = self.params
        out = logits.float().clone()
        if params.repetition_penalty == 1.0 and not (output_ids and (params.frequency_penalty or params.presence_penalty)):
            return out
        self._update(out.shape[0], output_ids)
        if params.repetition_penalty != 1.0:
            penalised = torch.where(out > 0, out / params.repetition_penalty, out * params.repetition_penalty)
            out = torch.where(self.seen, penalised, out)
        if output_ids and (params.frequency_penalty or params.presence_penalty):
            out -= params.frequency_penalty * self.counts + params.presence_penalty * (self.counts > 0).float()
        return out


class Sampler:
    """Per-request token chooser; keeps its own generator so concurrent requests never share RNG state."""

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int]) -> None:
        self.params = params
        self.penalties = TokenCounts(params, prompt_ids)
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(int(params.seed) % (2**63))
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor, output_ids: Sequence[int]) -> int:
        scores = finite(self.penalties.apply(logits, output_ids))
        if self.params.greedy:
            return int(scores.argmax())
        scores = filter_top_k_top_p(finite(scores / self.params.temperature), self.params.top_k, self.params.top_p)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
