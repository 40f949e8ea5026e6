"""Request and response bodies of ``/v1/chat/completions`` and ``/v1/models`` in OpenAI's shapes.

Field names, defaults and ranges follow the OpenAI Chat Completions API reference
(https://platform.openai.com/docs/api-reference/chat) plus the vLLM extensions that GLM clients send
in ``extra_body`` (``top_k``, ``repetition_penalty``, ``chat_template_kwargs``, ``enable_thinking``,
``return_reasoning``). Unknown extra fields are ignored, as OpenAI-compatible servers do, so newer
clients keep working; unknown roles and malformed parts are refused (422).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ImageURL(BaseModel):
    url: str = Field(min_length=1, description="data:image/png;base64,... (file/http only with --allowed-media-path)")
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


NonEmptyText = Annotated[str, Field(min_length=1)]
NonEmptyParts = Annotated[list[ContentPart], Field(min_length=1)]


class _Message(BaseModel):
    """One turn; a model per role so the OpenAPI schema states what each role needs (clients and
    schema-driven fuzzers see the real constraints, not only the server's 422)."""

    model_config = ConfigDict(extra="ignore")

    content: NonEmptyText | NonEmptyParts | None = None
    name: str | None = None

    def text_parts(self) -> list[str]:
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [self.content]
        return [part.text for part in self.content if isinstance(part, TextPart)]


class SystemMessage(_Message):
    role: Literal["system"]
    content: NonEmptyText | NonEmptyParts


class UserMessage(_Message):
    role: Literal["user"]
    content: NonEmptyText | NonEmptyParts


class AssistantMessage(_Message):
    """An earlier reply; its content may be absent (OpenAI: e.g. a tool-call turn)."""

    role: Literal["assistant"]


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``n`` must be 1 (checked by the server: 400 otherwise)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1, description="vLLM extension: -1 or 0 disables top-k")
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: bool | None = None
    return_reasoning: bool = False

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]

    def template_kwargs(self) -> dict[str, Any]:
        """``chat_template_kwargs`` plus ``enable_thinking`` (top-level wins, as in vLLM/SGLang)."""
        kwargs = dict(self.chat_template_kwargs or {})
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = self.enable_thinking
        return kwargs

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "autoglm-trt"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
