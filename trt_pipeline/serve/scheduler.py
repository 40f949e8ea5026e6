"""Continuous batching: one thread owns the engine; requests join and leave between decode steps.

Each iteration (a) drops cancelled requests (a client that disconnected frees its slot at once),
(b) admits waiting requests into free batch slots (prefill on top of a reused prefix, first token
sampled), then (c) runs one decode step for every running request together
(:meth:`~trt_pipeline.serve.engine.ServeEngine.decode_step`, padding-aware). Finished requests leave
the batch immediately and their KV cache goes to the prefix cache. Nobody waits for another request
to finish; beyond ``max_batch`` running requests, up to ``max_queue`` wait, and more get 429.

Results go back to the asyncio side through a per-request ``emit`` callback (thread-safe, e.g.
``loop.call_soon_threadsafe(queue.put_nowait, event)``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trt_pipeline.serve.engine import SequenceCache, ServeEngine, prefill_prompt
from trt_pipeline.serve.errors import queue_full
from trt_pipeline.serve.metrics import ServeMetrics
from trt_pipeline.serve.output import TextAssembler
from trt_pipeline.serve.prefix_cache import PrefixCache
from trt_pipeline.serve.sampling import Sampler

log = logging.getLogger("trt_pipeline.serve")


@dataclass
class TextEvent:
    text: str


@dataclass
class DoneEvent:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass
class ErrorEvent:
    message: str


Event = TextEvent | DoneEvent | ErrorEvent


@dataclass
class GenerationRequest:
    prompt: Any  # serve.chat.Prompt
    sampler: Sampler
    max_tokens: int
    assembler: TextAssembler
    emit: Callable[[Event], None]
    arrival: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    cache: SequenceCache | None = None
    cached_tokens: int = 0
    last_token_time: float = 0.0
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, engine: ServeEngine, eos_token_ids: Sequence[int], metrics: ServeMetrics,
                 prefix_cache: PrefixCache | None = None, max_queue: int = 64) -> None:
        self.engine = engine
        self.eos = set(int(t) for t in eos_token_ids)
        self.metrics = metrics
        self.prefix_cache = prefix_cache
        self.max_batch = engine.limits.max_batch
        self.max_queue = max_queue
        self.waiting: deque[GenerationRequest] = deque()
        self.running: list[GenerationRequest] = []
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="autoglm-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; 429 (``APIError``) when ``max_queue`` requests already wait."""
        with self._wake:
            if len(self.waiting) >= self.max_queue:
                raise queue_full(self.max_queue)
            self.waiting.append(request)
            self.metrics.set_load(len(self.waiting), len(self.running))
            self._wake.notify_all()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self.waiting and not self.running:
                    self._wake.wait(timeout=0.5)
                if self._stop:
                    return
            try:
                self._drop_cancelled()
                self._admit()
                if self.running:
                    self._step()
            except Exception as error:  # engine failure: fail the batch, keep the server up
                log.exception("decode step failed")
                for request in self.running:
                    self._fail(request, f"generation failed: {error}")
                self.running = []
            self.metrics.set_load(len(self.waiting), len(self.running))

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.running if r.cancelled]:
            self.running.remove(request)
            self.metrics.record_request("cancelled")
        with self._wake:
            kept = [r for r in self.waiting if not r.cancelled]
            dropped = len(self.waiting) - len(kept)
            self.waiting = deque(kept)
        for _ in range(dropped):
            self.metrics.record_request("cancelled")

    def _admit(self) -> None:
        while len(self.running) < self.max_batch:
            with self._wake:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            try:
                finished = self._accept(request, self._prefill(request))
            except Exception as error:  # this request fails alone; its client gets an error event
                log.exception("prefill failed")
                self._fail(request, f"prefill failed: {error}")
                continue
            if not finished:
                self.running.append(request)

    def _prefill(self, request: GenerationRequest) -> Any:
        prompt = request.prompt
        past, reuse = None, 0
        if self.prefix_cache is not None:
            entry, common = self.prefix_cache.lookup(prompt.key)
            reuse = min(common, len(prompt.token_ids) - 1)
            past = entry.sliced(reuse) if entry is not None and reuse > 0 else None
            reuse = reuse if past is not None else 0
        logits, request.cache = prefill_prompt(self.engine, prompt, past, reuse)
        request.cached_tokens = reuse
        self.metrics.record_prefill(len(prompt.token_ids), reuse)
        return logits

    def _step(self) -> None:
        batch = list(self.running)
        logits = self.engine.decode_step([r.cache for r in batch], [r.output_ids[-1] for r in batch])
        for row, request in enumerate(batch):
            try:
                finished = self._accept(request, logits[row])
            except Exception as error:  # e.g. sampling: fail this request, keep the batch going
                log.exception("sampling failed")
                self._fail(request, f"sampling failed: {error}")
                finished = True
            if finished:
                self.running.remove(request)

    def _accept(self, request: GenerationRequest, logits: Any) -> bool:
        """Sample, emit and check the end conditions of one new token; True when the request finished."""
        token = request.sampler(logits, request.output_ids)
        request.output_ids.append(token)
        now = time.perf_counter()
        first = len(request.output_ids) == 1
        self.metrics.record_token(first, now - (request.arrival if first else request.last_token_time))
        request.last_token_time = now
        reason = None
        if token in self.eos:
            reason = "stop"
        elif len(request.output_ids) >= request.max_tokens or request.cache.length > self.engine.limits.max_past:
            reason = "length"
        delta = request.assembler.update(request.output_ids, final=reason is not None)
        if request.assembler.stopped:
            reason = "stop"
        if delta:
            request.emit(TextEvent(delta))
        if reason is None:
            return False
        self._finish(request, reason)
        return True

    def _finish(self, request: GenerationRequest, reason: str) -> None:
        prompt = request.prompt
        if self.prefix_cache is not None and request.cache is not None:
            fed = request.cache.length - len(prompt.token_ids)
            self.prefix_cache.store(prompt.key + request.output_ids[:fed], request.cache.kv)
        self.metrics.record_request(reason)
        request.emit(DoneEvent(reason, len(prompt.token_ids), len(request.output_ids), request.cached_tokens))

    def _fail(self, request: GenerationRequest, message: str) -> None:
        self.metrics.record_request("error")
        request.emit(ErrorEvent(message))
