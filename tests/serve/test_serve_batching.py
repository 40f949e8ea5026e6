"""The engine-level pieces of continuous batching on the tiny ORT export: chunked prefill and the
persistent padded decode batch (sequences joining and leaving) against each sequence run alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from serve_helpers import MODEL, agent_messages


@pytest.fixture(scope="module")
def engine(tiny_export: Path) -> Any:
    from trt_pipeline.serve.engine import ServeEngine

    engine = ServeEngine.load(tiny_export, "ort", "fp32")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(tiny_export: Path) -> list[Any]:
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.serve.chat import MediaPolicy, build_prompt
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    processing = Glm4vProcessing(tiny_export / "hf")
    bodies = [agent_messages(1), [{"role": "user", "content": "hi"}], agent_messages(2),
              [{"role": "user", "content": "open the settings app and turn on wifi please"}]]
    return [build_prompt(processing, ChatCompletionRequest(model=MODEL, messages=m), MediaPolicy()) for m in bodies]


def run_prefill(engine: Any, prompt: Any, past: Any = None, reuse: int = 0) -> tuple[Any, Any, int]:
    from trt_pipeline.serve.prefill import PrefillJob

    job, units = PrefillJob(engine, prompt, past, reuse), 1
    while not job.advance():
        units += 1
    return job.logits, job.cache(), units


def solo_greedy(engine: Any, prompt: Any, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    from trt_pipeline.serve.batch import DecodeBatch

    logits, cache, _ = run_prefill(engine, prompt)
    tokens, every = [int(logits.argmax())], [logits]
    batch = DecodeBatch(engine)
    batch.join("solo", cache)
    for _ in range(steps):
        logits = batch.step([tokens[-1]])[0]
        every.append(logits)
        tokens.append(int(logits.argmax()))
    return tokens, every


def test_chunked_prefill_equals_one_call(engine: Any, prompts: list[Any]) -> None:
    """Small chunks (and images as their own units) give the one-call logits and the same cache."""
    prompt = prompts[2]
    whole, whole_cache, _ = run_prefill(engine, prompt)
    chunk = engine.prefill_chunk
    engine.prefill_chunk = 7
    try:
        chunked, chunked_cache, units = run_prefill(engine, prompt)
    finally:
        engine.prefill_chunk = chunk
    assert units == len(prompt.image_runs) + -(-len(prompt.token_ids) // 7) and units > 3
    assert float((whole - chunked).abs().max()) < 1e-4
    assert chunked_cache.length == whole_cache.length == len(prompt.token_ids)
    assert max(float(abs(a - b).max()) for a, b in zip(whole_cache.kv, chunked_cache.kv)) < 1e-4


def test_batch_with_joins_and_leaves_equals_each_sequence_alone(engine: Any, prompts: list[Any]) -> None:
    """Rows join at steps 0/0/3/5 and leave at different steps; every token and logit as run alone."""
    from trt_pipeline.serve.batch import DecodeBatch

    plan = {0: (0, 9), 1: (0, 4), 2: (3, 8), 3: (5, 6)}  # prompt -> (join step, decode steps)
    alone = {i: solo_greedy(engine, prompts[i], steps) for i, (_join, steps) in plan.items()}
    batch, tokens, logits_seen, left = DecodeBatch(engine), {}, {}, {}
    for step in range(12):
        for i, (join, _steps) in plan.items():
            if join == step:
                first, cache, _ = run_prefill(engine, prompts[i])
                tokens[i], logits_seen[i] = [int(first.argmax())], [first]
                batch.join(i, cache)
        if not len(batch):
            break
        members = batch.members
        out = batch.step([tokens[i][-1] for i in members])
        for row, i in enumerate(members):
            logits_seen[i].append(out[row])
            tokens[i].append(int(out[row].argmax()))
            if len(tokens[i]) == plan[i][1] + 1:
                left[i] = batch.leave(i)
    assert not len(batch) and batch.state is None
    for i, (want_tokens, want_logits) in alone.items():
        assert tokens[i] == want_tokens
        assert max(float((a - b).abs().max()) for a, b in zip(logits_seen[i], want_logits)) < 1e-4
        assert left[i].length == len(prompts[i].token_ids) + plan[i][1]


def test_left_cache_continues_like_the_batch(engine: Any, prompts: list[Any]) -> None:
    """The cache a sequence takes out of the batch (padding stripped) is its own: prefilling a
    continuation on it gives the logits of prefilling the whole text from scratch."""
    from trt_pipeline.serve.batch import DecodeBatch

    prompt = prompts[1]
    first, cache, _ = run_prefill(engine, prompt)
    batch = DecodeBatch(engine)
    batch.join("long", run_prefill(engine, prompts[2])[1])
    batch.join("short", cache)
    token = int(first.argmax())
    batch.step([0, token])
    mine = batch.leave("short")
    assert mine.length == len(prompt.token_ids) + 1 and len(batch) == 1
    state = engine.state_of(mine.kv, mine.next_position)
    logits, _ = engine.extend(state, engine.embed([5, 6]), text_positions(mine.next_position, 2))
    whole = torch.cat([prompt.positions, text_positions(prompt.next_position, 3)], dim=1)
    scratch, _ = engine.extend(engine.empty_state(), engine.embed(prompt.token_ids + [token, 5, 6]), whole)
    assert float((logits - scratch).abs().max()) < 1e-4


def text_positions(start: int, count: int) -> torch.Tensor:
    """M-RoPE ids [3, count] of text tokens from ``start`` (all three sections advance together)."""
    return torch.arange(start, start + count).expand(3, count)
