"""Continuous batching: one worker thread owns the engine; requests join and leave between steps.

Each iteration of the worker thread (a) drops cancelled requests (a client that disconnected frees
its slot at once), (b) admits waiting requests while running + prefilling stay within the batch
profile (prefix-cache lookup, a :class:`~trt_pipeline.serve.prefill.PrefillJob`), (c) runs ONE unit
of the oldest prefill (an image or one prompt chunk; when it completes the first token is sampled
and the request joins the batch), then (d) one decode step for every running request together:
a single decoder call over the :class:`~trt_pipeline.serve.batch.DecodeBatch`, padding-aware.
So a new prompt is prefilled in chunks between the running replies' steps instead of stalling them
for its whole length. Finished requests leave the batch at once and their KV cache goes to the
prefix cache. Nobody waits for another request to finish; beyond ``max_batch`` running or
prefilling requests, up to ``max_queue`` wait, and more get 429.

The engine calls (ONNX Runtime, TensorRT) run in this thread, never on the asyncio event loop;
results go back through a per-request ``emit`` callback (thread-safe, e.g.
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

from trt_pipeline.serve.batch import DecodeBatch
from trt_pipeline.serve.engine import SequenceCache, ServeEngine
from trt_pipeline.serve.errors import public_message, queue_full
from trt_pipeline.serve.metrics import ServeMetrics
from trt_pipeline.serve.output import TextAssembler
from trt_pipeline.serve.prefill import PrefillJob
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


@dataclass(eq=False)
class GenerationRequest:
    prompt: Any  # serve.chat.Prompt
    sampler: Sampler
    max_tokens: int  # already within the export's cache limit (the app clamps it)
    assembler: TextAssembler
    emit: Callable[[Event], None]
    arrival: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    prefill: PrefillJob | None = None
    cached_tokens: int = 0
    last_token_time: float = 0.0
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """The worker thread's loop over waiting, prefilling and running requests (module docstring)."""

    def __init__(self, engine: ServeEngine, eos_token_ids: Sequence[int], metrics: ServeMetrics,
                 prefix_cache: PrefixCache | None = None, max_queue: int = 64) -> None:
        self.engine = engine
        self.eos = set(int(t) for t in eos_token_ids)
        self.metrics = metrics
        self.prefix_cache = prefix_cache
        self.max_batch = engine.contract.max_batch
        self.max_queue = max_queue
        self.waiting: deque[GenerationRequest] = deque()
        self.prefilling: list[GenerationRequest] = []
        self.batch = DecodeBatch(engine)
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="autoglm-scheduler", daemon=True)

    @property
    def running(self) -> list[GenerationRequest]:
        return self.batch.members

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
            self.metrics.set_load(len(self.waiting), len(self.batch))
            self._wake.notify_all()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self.waiting and not self.prefilling and not len(self.batch):
                    self._wake.wait(timeout=0.5)
                if self._stop:
                    return
            try:
                self._drop_cancelled()
                self._admit()
                self._prefill_unit()
                if len(self.batch):
                    self._step()
            except Exception as error:  # engine failure: fail the batch, keep the server up
                log.exception("decode step failed")
                for request in self.batch.members:
                    self._fail(request, f"generation failed: {public_message(error)}")
                self.batch = DecodeBatch(self.engine)
            self.metrics.set_load(len(self.waiting), len(self.batch))

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.batch.members if r.cancelled]:
            self.batch.leave(request)
            self.metrics.record_request("cancelled")
        for request in [r for r in self.prefilling if r.cancelled]:
            self.prefilling.remove(request)
            self.metrics.record_request("cancelled")
        with self._wake:
            kept = [r for r in self.waiting if not r.cancelled]
            dropped = len(self.waiting) - len(kept)
            self.waiting = deque(kept)
        for _ in range(dropped):
            self.metrics.record_request("cancelled")

    def _admit(self) -> None:
        """Waiting requests become prefill jobs while running + prefilling fit the batch profile."""
        while len(self.batch) + len(self.prefilling) < self.max_batch:
            with self._wake:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            try:
                request.prefill = self._prefill_job(request)
            except Exception as error:  # this request fails alone; its client gets an error event
                log.exception("prefill failed")
                self._fail(request, f"prefill failed: {public_message(error)}")
                continue
            self.prefilling.append(request)

    def _prefill_job(self, request: GenerationRequest) -> PrefillJob:
        prompt = request.prompt
        past, reuse = None, 0
        if self.prefix_cache is not None:
            entry, common = self.prefix_cache.lookup(prompt.key)
            reuse = min(common, len(prompt.token_ids) - 1)
            past = entry.sliced(reuse) if entry is not None and reuse > 0 else None
            reuse = reuse if past is not None else 0
        request.cached_tokens = reuse
        self.metrics.record_prefill(len(prompt.token_ids), reuse)
        return PrefillJob(self.engine, prompt, past, reuse)

    def _prefill_unit(self) -> None:
        """One unit of the oldest prefill; a finished prompt samples its first token and joins the batch."""
        if not self.prefilling:
            return
        request = self.prefilling[0]
        job = request.prefill
        try:
            if job is None or not job.advance():
                return
            self.prefilling.pop(0)
            request.prefill, cache = None, job.cache()
            reason = self._accept(request, job.logits)
        except Exception as error:  # this request fails alone; its client gets an error event
            log.exception("prefill failed")
            if request in self.prefilling:
                self.prefilling.remove(request)
            self._fail(request, f"prefill failed: {public_message(error)}")
            return
        if reason is None:
            self.batch.join(request, cache)
        else:
            self._finish(request, reason, cache)

    def _step(self) -> None:
        members = self.batch.members
        logits = self.batch.step([r.output_ids[-1] for r in members])
        for row, request in enumerate(members):
            try:
                reason = self._accept(request, logits[row])
            except Exception as error:  # e.g. sampling: fail this request, keep the batch going
                log.exception("sampling failed")
                self.batch.leave(request)
                self._fail(request, f"sampling failed: {public_message(error)}")
                continue
            if reason is not None:
                self._finish(request, reason, self.batch.leave(request))

    def _accept(self, request: GenerationRequest, logits: Any) -> str | None:
        """Sample and emit one new token; -> the finish reason, or None while the request goes on."""
        token = request.sampler(logits, request.output_ids)
        request.output_ids.append(token)
        now = time.perf_counter()
        first = len(request.output_ids) == 1
        self.metrics.record_token(first, now - (request.arrival if first else request.last_token_time))
        request.last_token_time = now
        reason = None
        if token in self.eos:
            reason = "stop"
        elif len(request.output_ids) >= request.max_tokens:
            reason = "length"
        delta = request.assembler.update(request.output_ids, final=reason is not None)
        if request.assembler.stopped:
            reason = "stop"
        if delta:
            request.emit(TextEvent(delta))
        return reason

    def _finish(self, request: GenerationRequest, reason: str, cache: SequenceCache) -> None:
        """Store the cache (prompt + the reply tokens fed so far) for reuse, and tell the client."""
        prompt = request.prompt
        if self.prefix_cache is not None:
            fed = cache.length - len(prompt.token_ids)
            self.prefix_cache.store(prompt.key + request.output_ids[:fed], cache.kv, cache.layout)
        self.metrics.record_request(reason)
        request.emit(DoneEvent(reason, len(prompt.token_ids), len(request.output_ids), request.cached_tokens))

    def _fail(self, request: GenerationRequest, message: str) -> None:
        self.metrics.record_request("error")
        request.emit(ErrorEvent(message))
