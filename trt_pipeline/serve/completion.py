"""Turn a request's event queue into a ``chat.completion`` or a stream of ``chat.completion.chunk``s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from trt_pipeline.serve import errors
from trt_pipeline.serve.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
    completion_id,
    now,
)
from trt_pipeline.serve.reasoning import ReasoningStream, split_reasoning
from trt_pipeline.serve.scheduler import DoneEvent, ErrorEvent, GenerationRequest, TextEvent


def usage_of(done: DoneEvent) -> Usage:
    return Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                 total_tokens=done.prompt_tokens + done.completion_tokens,
                 prompt_tokens_details={"cached_tokens": done.cached_tokens})


async def collect(queue: asyncio.Queue, model: str, return_reasoning: bool) -> ChatCompletion:
    """Wait for the whole reply (non-streaming request)."""
    parts: list[str] = []
    while True:
        event = await queue.get()
        if isinstance(event, TextEvent):
            parts.append(event.text)
        elif isinstance(event, ErrorEvent):
            raise errors.internal(event.message)
        else:
            break
    text = "".join(parts)
    reasoning, content = split_reasoning(text) if return_reasoning else (None, text)
    message = ResponseMessage(content=content, reasoning_content=reasoning)
    return ChatCompletion(id=completion_id(), created=now(), model=model,
                          choices=[Choice(message=message, finish_reason=event.finish_reason)], usage=usage_of(event))


async def _pending(queue: asyncio.Queue) -> tuple[str, DoneEvent | ErrorEvent | None]:
    """The text of every event already queued (at least one awaited) and the end event if one came.

    While the event loop keeps up this is one token per chunk; when it falls behind (many streams on
    a loaded host) the tokens that queued meanwhile go out as one chunk, so the loop does one chunk's
    work (JSON, socket write) instead of one per token and leaves the cores to the decode steps.
    """
    parts: list[str] = []
    event = await queue.get()
    while isinstance(event, TextEvent):
        parts.append(event.text)
        if queue.empty():
            return "".join(parts), None
        event = queue.get_nowait()
    return "".join(parts), event


def _sse(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


async def stream_chunks(generation: GenerationRequest, queue: asyncio.Queue, model: str, return_reasoning: bool,
                        include_usage: bool, wake: Callable[[], None]) -> AsyncIterator[str]:
    """SSE lines: a role chunk, content (or reasoning) deltas, a finish chunk, optional usage, ``[DONE]``.

    When the client goes away the generator is closed; ``finally`` cancels the request so the
    scheduler frees its batch slot before the next step.
    """
    ident, created = completion_id(), now()
    splitter = ReasoningStream() if return_reasoning else None

    def chunk(delta: Delta, finish: str | None = None) -> str:
        return _sse(ChatCompletionChunk(id=ident, created=created, model=model,
                                        choices=[ChunkChoice(delta=delta, finish_reason=finish)]))

    try:
        yield chunk(Delta(role="assistant", content=""))
        while True:
            text, event = await _pending(queue)
            final = isinstance(event, DoneEvent)
            reasoning, content = splitter.feed(text, final=final) if splitter else ("", text)
            if reasoning or content:
                yield chunk(Delta(content=content or None, reasoning_content=reasoning or None))
            if isinstance(event, ErrorEvent):
                yield f"data: {json.dumps(errors.internal(event.message).body())}\n\n"
                break
            if final:
                yield chunk(Delta(), event.finish_reason)
                if include_usage:
                    yield _sse(ChatCompletionChunk(id=ident, created=created, model=model, choices=[],
                                                   usage=usage_of(event)))
                break
        yield "data: [DONE]\n\n"
    finally:
        generation.cancel()
        wake()
