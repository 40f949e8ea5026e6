"""Multi-turn conversations on one KV cache: each turn prefills only what the cache does not hold.

A phone-agent step re-sends the whole conversation. :class:`PromptCache` keeps the decoder's KV
cache and one key per cached position (the token id; for an image placeholder also its image's
sha256, since every placeholder of an image has the same id). For a new prompt it keeps the
longest cached prefix whose keys match, backed off to the start of an image it would split,
truncates the cache there and prefills the rest as an append on the filled cache (in chunks if
the stepper has a chunk size). Only the images of the new part go through the vision encoder.
Because the kept prefix is exactly what a from-scratch run would have computed, the tokens are
the same as running every full prompt from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trt_pipeline.models.glm4v.processing import MultimodalInputs
from trt_pipeline.models.glm4v.stepper import DecoderStepper, FeedBuilder, HostTables, StepOutput, encode_images

Key = int | tuple[int, str]


@dataclass
class TurnResult:
    """One generated reply and what its prefill cost."""

    token_ids: list[int]
    prompt_tokens: int
    reused_tokens: int

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


def image_runs(mm_token_type_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of image placeholders in a row, in order (one run per image)."""
    flags = mm_token_type_ids.tolist()
    runs, start = [], None
    for index, flag in enumerate([*flags, 0]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append((start, index))
            start = None
    return runs


def position_keys(inputs: MultimodalInputs, image_keys: Sequence[str]) -> list[Key]:
    """One key per prompt position: the token id, paired with its image's key for placeholders."""
    keys: list[Key] = [int(t) for t in inputs.input_ids[0].tolist()]
    runs = image_runs(inputs.mm_token_type_ids[0])
    if len(runs) != len(image_keys):
        raise ValueError(f"{len(runs)} image placeholder runs but {len(image_keys)} image keys")
    for (start, end), image in zip(runs, image_keys):
        for index in range(start, end):
            keys[index] = (keys[index], image)
    return keys


def reusable_prefix(cached: Sequence[Key], keys: Sequence[Key], runs: Sequence[tuple[int, int]]) -> int:
    """Cached positions a new prompt can keep: the common prefix, not splitting an image, leaving >= 1 token."""
    length = 0
    for old, new in zip(cached, keys):
        if old != new:
            break
        length += 1
    length = min(length, len(keys) - 1)
    for start, end in runs:
        if start < length < end:
            return start
    return length


class PromptCache:
    """A :class:`DecoderStepper` over one conversation (batch 1) that appends each new turn."""

    def __init__(self, assets: HostTables, vision_runner: Any, decoder_runner: Any, *, chunk_size: int | None = None) -> None:
        self.assets = assets
        self.vision_runner = vision_runner
        self.stepper = DecoderStepper(assets, decoder_runner, chunk_size=chunk_size)
        self.keys: list[Key] = []

    def extend(self, inputs: MultimodalInputs, image_keys: Sequence[str]) -> tuple[StepOutput, int]:
        """Make the cache hold ``inputs`` (batch 1, no padding); returns the last step and the reused length."""
        keys = position_keys(inputs, image_keys)
        runs = image_runs(inputs.mm_token_type_ids[0])
        reused = reusable_prefix(self.keys, keys, runs)
        builder = self.stepper.builder
        positions = builder.prompt_positions(inputs)
        next_position = positions[:, :, :reused].amax(dim=(0, 2)) + 1 if reused else torch.zeros(1, dtype=torch.long)
        self.stepper.truncate(min(reused, self.stepper.past_length), next_position)
        embeds = builder.token_embeddings(inputs.input_ids[:, reused:]).clone()
        features = self._new_image_features(inputs, runs, reused)
        if features is not None:
            embeds[inputs.mm_token_type_ids[:, reused:].bool()] = features.to(embeds.dtype)
        step = self.stepper.prefill(embeds, inputs.attention_mask[:, reused:], positions[:, :, reused:])
        self.keys = keys
        return step, reused

    def _new_image_features(self, inputs: MultimodalInputs, runs: Sequence[tuple[int, int]], reused: int) -> Any:
        """Vision features of the images whose placeholders start at or after ``reused``."""
        if inputs.pixel_values is None:
            return None
        patches = inputs.image_grid_thw.prod(-1).tolist()
        offsets = [sum(patches[:i]) for i in range(len(patches) + 1)]
        wanted = [i for i, (start, _) in enumerate(runs) if start >= reused]
        if not wanted:
            return None
        rows = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in wanted])
        subset = MultimodalInputs(inputs.input_ids, inputs.attention_mask, inputs.mm_token_type_ids,
                                  inputs.pixel_values[rows], inputs.image_grid_thw[wanted])
        return encode_images(FeedBuilder.for_runner(self.assets, self.vision_runner), self.vision_runner, subset)

    def generate(
        self, inputs: MultimodalInputs, image_keys: Sequence[str], max_new_tokens: int, eos_token_ids: Sequence[int] = ()
    ) -> TurnResult:
        """Greedy reply to ``inputs`` (the full prompt so far), appending to the cache."""
        step, reused = self.extend(inputs, image_keys)
        tokens: list[int] = []
        for index in range(max_new_tokens):
            token = step.last_logits.argmax(dim=-1)
            tokens.append(int(token[0]))
            if tokens[-1] in eos_token_ids or index + 1 == max_new_tokens:
                break
            step = self.stepper.decode(token)
            self.keys.append(tokens[-1])
        return TurnResult(tokens, int(inputs.input_ids.shape[1]), reused)


__all__ = ["PromptCache", "TurnResult", "image_runs", "position_keys", "reusable_prefix"]
