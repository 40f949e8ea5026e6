"""Errors a client can act on, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure of one request becomes an :class:`APIError` with the HTTP status OpenAI (and vLLM)
use for it, so clients (``openai`` raises ``BadRequestError``, ``AuthenticationError``,
``NotFoundError``, ``RateLimitError`` ...) and agents react to the status, and the server keeps
serving everyone else.
"""

from __future__ import annotations

import re
from typing import Any

#: An absolute (or ``~``) file path of two or more components; ``/v1/...`` routes are not paths.
_PATH = re.compile(r"(?<![\w/.:~-])(?!/v1/)[~]?/(?:[^\s/'\"`()<>,;:]+/)+[^\s/'\"`()<>,;:]*")


def redact_paths(text: str) -> str:
    """``text`` with every server file path replaced by ``<path>``.

    Error texts of the layers below (ONNX Runtime, TensorRT, the pipeline's typed errors) name the
    files they read, which tells a client where the server keeps its model; the full text goes to the
    server log, the client gets this.
    """
    return _PATH.sub("<path>", text)


def public_message(error: BaseException) -> str:
    """What a client may read of ``error``: a pipeline error's message and hint (they say what to do),
    otherwise only its type (the traceback is in the server log); server paths redacted either way."""
    from trt_pipeline.errors import PipelineError

    if isinstance(error, PipelineError):
        return redact_paths(" ".join(part for part in (error.message, error.hint) if part))
    return f"{type(error).__name__} (details in the server log)"


class APIError(Exception):
    """One request failed; ``status`` is the HTTP status, ``type``/``code``/``param`` OpenAI's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The response body; the message never names a server path (:func:`redact_paths`)."""
        return {"error": {"message": redact_paths(self.message), "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def too_large(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """413: the payload (an image) is bigger than the server accepts."""
    return APIError(413, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(
        401,
        "Incorrect API key provided. Pass the key given to `autoglm-trt serve --api-key` as a Bearer token.",
        type="authentication_error",
        code="invalid_api_key",
    )


def model_not_found(model: str, served: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist. This server serves `{served}` (see GET /v1/models).",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def queue_full(limit: int) -> APIError:
    return APIError(
        429,
        f"The server is busy: {limit} requests are already waiting. Retry later.",
        type="rate_limit_error",
        code="queue_full",
    )


def not_ready() -> APIError:
    return APIError(503, "The model is still loading; poll GET /health.", type="server_error", code="loading")


def internal(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")
