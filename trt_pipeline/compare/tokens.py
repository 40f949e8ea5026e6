"""Token-level agreement: does each backend still produce the same greedy continuation?

For every held-out prompt (with its image) the reference generates ``N`` tokens with transformers'
``generate(do_sample=False)`` (what ``autoglm-trt generate --backend torch`` does); every candidate
backend generates with :func:`~trt_pipeline.models.glm4v.generation.greedy_generate` over its runners
(what ``--backend torch-export/ort/trt`` do). Rows are cut after the first EOS like ``generate``.
Each candidate also predicts every reference token given the reference's prefix (teacher forcing,
:func:`~trt_pipeline.models.glm4v.generation.teacher_forced_tokens`): one prefill per prompt.

The arithmetic (exact-match rate, first divergence, common prefix) and the gate are
:class:`trt_pipeline.accuracy.tokens.TokenAgreement`'s; this module only produces the sequences.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def reference_tokens(model: Any, processing: Any, heldout: Sequence[Any], max_new_tokens: int) -> list[list[int]]:
    """transformers ``generate(do_sample=False)``, one prompt at a time (as ``generate --backend torch``)."""
    from trt_pipeline.models.glm4v.generation import strip_after_eos

    eos = processing.eos_token_ids
    rows = []
    for entry in heldout:
        inputs = entry.inputs
        out = model.generate(
            **inputs.hf_kwargs(), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos or None, pad_token_id=processing.pad_token_id,
        )
        rows.append(strip_after_eos(out[0, inputs.input_ids.shape[1]:].tolist(), eos))
    return rows


def backend_tokens(
    assets: Any, vision_runner: Any, decoder_runner: Any, processing: Any, heldout: Sequence[Any], max_new_tokens: int,
    references: Sequence[Sequence[int]] | None = None,
) -> tuple[list[list[int]], list[list[int]] | None]:
    """``greedy_generate`` over one backend's runners (activated once for all prompts), and with
    ``references`` (one row per prompt) the backend's teacher-forced predictions of each row."""
    from trt_pipeline.models.glm4v.generation import strip_after_eos
    from trt_pipeline.models.glm4v.generation import greedy_generate, teacher_forced_tokens

    eos = processing.eos_token_ids
    rows: list[list[int]] = []
    forced: list[list[int]] | None = None if references is None else []
    with contextlib.ExitStack() as stack:
        for runner in (vision_runner, decoder_runner):
            stack.enter_context(runner)
        for index, entry in enumerate(heldout):
            result = greedy_generate(assets, vision_runner, decoder_runner, entry.inputs, max_new_tokens,
                                     eos_token_ids=eos, pad_token_id=processing.pad_token_id)
            rows.append(strip_after_eos(result.token_lists()[0], eos))
            if forced is not None and references is not None:
                forced.append(teacher_forced_tokens(assets, vision_runner, decoder_runner, entry.inputs,
                                                    references[index]))
    return rows, forced


__all__ = ["backend_tokens", "reference_tokens"]
