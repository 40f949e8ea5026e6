"""The FastAPI application: ``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/metrics``.

:func:`create_app` builds the app around a loader; the model loads in a background thread at
start-up, so ``/health`` answers 503 ``{"status": "loading"}`` until it is ready and
``{"status": "ok", "model": NAME}`` afterwards (the Open-AutoGLM deployment check). Every error is
OpenAI-shaped (:mod:`trt_pipeline.serve.errors`); streaming uses server-sent events with
``chat.completion.chunk`` objects and ends with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from trt_pipeline.serve import errors
from trt_pipeline.serve.chat import build_prompt
from trt_pipeline.serve.completion import collect, stream_chunks
from trt_pipeline.serve.metrics import ServeMetrics
from trt_pipeline.serve.model import ServeConfig, ServedModel, load_model
from trt_pipeline.serve.output import TextAssembler
from trt_pipeline.serve.protocol import ChatCompletion, ChatCompletionRequest, ErrorResponse, ModelCard, ModelList, now
from trt_pipeline.serve.sampling import Sampler, SamplingParams
from trt_pipeline.serve.scheduler import GenerationRequest

log = logging.getLogger("trt_pipeline.serve")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503)
}


class ServerState:
    """The loaded model (or why not yet) shared by all handlers."""

    def __init__(self, config: ServeConfig, loader: Callable[[ServeMetrics], ServedModel]) -> None:
        self.config, self.loader = config, loader
        self.metrics = ServeMetrics()
        self.model: ServedModel | None = None
        self.load_error: str | None = None
        self.created = now()

    def load(self) -> None:
        try:
            self.model = self.loader(self.metrics)
        except Exception as error:  # reported by /health and the log; the process stays up to say so
            log.exception("loading failed")  # the whole story (with paths) for the operator
            self.load_error = errors.public_message(error)

    def ready_model(self) -> ServedModel:
        if self.model is None:
            raise errors.not_ready() if self.load_error is None else errors.internal(f"loading failed: {self.load_error}")
        return self.model


def _check_auth(state: ServerState, request: Request) -> None:
    key = state.config.api_key
    if key and request.headers.get("authorization", "") != f"Bearer {key}":
        raise errors.unauthorized()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.APIError)
    async def api_error(_request: Request, error: errors.APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            api = errors.bad_request("the request body is not valid JSON.", code="invalid_json")
        else:
            first = problems[0] if problems else {}
            param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
            message = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}"
                                for p in problems[:5])
            api = errors.APIError(422, message, param=param, code="invalid_value")
        return JSONResponse(api.body(), status_code=api.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        api = errors.APIError(error.status_code, str(error.detail), code="not_found" if error.status_code == 404 else None)
        return JSONResponse(api.body(), status_code=error.status_code)


def _make_request(model: ServedModel, body: ChatCompletionRequest, prompt: Any,
                  loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> GenerationRequest:
    room = model.contract.max_sequence - len(prompt.token_ids)  # >= 1 once _check_prompt passed
    params = SamplingParams(body.temperature, body.top_p, body.top_k, body.frequency_penalty,
                            body.presence_penalty, body.repetition_penalty, body.seed)
    return GenerationRequest(
        prompt=prompt, sampler=Sampler(params, prompt.token_ids),
        max_tokens=min(body.token_budget() or room, room),
        assembler=TextAssembler(model.processing.tokenizer, body.stop_strings()),
        emit=lambda event: loop.call_soon_threadsafe(queue.put_nowait, event),
    )


def _check_prompt(model: ServedModel, prompt: Any) -> None:
    """The export's contract refuses what its profiles cannot run; its message names the limit and the flag."""
    from trt_pipeline.errors import ShapeError

    try:
        model.contract.check_image_tokens([end - start for start, end in prompt.image_runs])
    except ShapeError as error:
        raise errors.APIError(413, errors.public_message(error), param="messages", code="image_too_large") from None
    try:
        model.contract.check_request(1, len(prompt.token_ids), 1)
    except ShapeError as error:
        raise errors.bad_request(f"the prompt has {len(prompt.token_ids)} tokens: {errors.public_message(error)}",
                                 param="messages", code="context_length_exceeded") from None


async def _submit(state: ServerState, body: ChatCompletionRequest) -> tuple[GenerationRequest, asyncio.Queue]:
    model = state.ready_model()
    if body.model != state.config.served_model_name:
        raise errors.model_not_found(body.model, state.config.served_model_name)
    if body.n != 1:
        raise errors.bad_request("only n=1 is supported.", param="n", code="unsupported_value")
    prompt = await run_in_threadpool(build_prompt, model.processing, body, state.config.media)
    _check_prompt(model, prompt)
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    generation = _make_request(model, body, prompt, loop, queue)
    model.scheduler.submit(generation)
    return generation, queue


def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> JSONResponse:
        name = state.config.served_model_name
        if state.model is not None and state.model.scheduler.alive:
            return JSONResponse({"status": "ok", "model": name})
        status = "loading" if state.model is None and state.load_error is None else "error"
        return JSONResponse({"status": status, "model": name}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def models(request: Request) -> ModelList:
        _check_auth(state, request)
        limit = state.model.contract.max_sequence if state.model else None
        return ModelList(data=[ModelCard(id=state.config.served_model_name, created=state.created, max_model_len=limit)])

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        _check_auth(state, request)
        generation, queue = await _submit(state, body)
        model_name = state.config.served_model_name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = stream_chunks(generation, queue, model_name, body.return_reasoning, include_usage,
                                   state.ready_model().scheduler.wake)
            return StreamingResponse(chunks, media_type="text/event-stream")
        try:
            return await collect(queue, model_name, body.return_reasoning)
        finally:
            generation.cancel()
            state.ready_model().scheduler.wake()


def create_app(config: ServeConfig, loader: Callable[[ServeMetrics], ServedModel] | None = None) -> FastAPI:
    """The server app; ``loader`` (default: :func:`load_model` of ``config``) runs in a thread at start-up."""
    state = ServerState(config, loader or (lambda metrics: load_model(config, metrics)))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=state.load, name="autoglm-load", daemon=True)
        thread.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if state.model is not None:
            state.model.close()

    app = FastAPI(title="autoglm-trt", description="OpenAI-compatible API over autoglm-trt artifacts",
                  lifespan=lifespan)
    app.state.serve = state
    _install_error_handlers(app)
    _add_routes(app, state)
    return app
