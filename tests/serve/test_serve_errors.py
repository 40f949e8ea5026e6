"""Every bad input gets an OpenAI-shaped error with the right status, and the server keeps serving.

Each case checks the status code, the ``{"error": {"message", "type", "param", "code"}}`` body and
that a valid request right after it succeeds. Schemathesis then fuzzes ``/v1/chat/completions``
from the server's own OpenAPI schema: no 5xx.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from typing import Any

import httpx
import pytest
from serve_helpers import API_KEY, MODEL, agent_messages, png_data_url

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def valid_body(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": agent_messages(1), "temperature": 0, "max_tokens": 4, **overrides}


#: Where the server's files live: no error a client reads may name them (the server log does).
SERVER_ROOTS = ("/tmp/", "/work/", "/home/", "/root/", "/usr/", "/etc/")


def assert_no_server_path(message: str) -> None:
    assert not any(root in message for root in SERVER_ROOTS), f"an error names a server path: {message}"


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code != "media_not_allowed":  # that refusal quotes the client's own URL back
        assert_no_server_path(error["message"])
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def assert_still_serving(server: Any) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=valid_body(), headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": MODEL}


def post(server: Any, body: Any = None, content: bytes | None = None, headers: dict | None = None) -> httpx.Response:
    headers = {**AUTH, **(headers or {})}
    if content is not None:
        return httpx.post(f"{server.url}/v1/chat/completions", content=content,
                          headers={**headers, "Content-Type": "application/json"}, timeout=60)
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def user_with_image(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}]


CASES: dict[str, tuple[dict[str, Any], int, str | None, str | None]] = {
    "unknown role": (valid_body(messages=[{"role": "wizard", "content": "hi"}]), 422, "invalid_value", None),
    "empty messages": (valid_body(messages=[]), 422, "invalid_value", "messages"),
    "empty user content": (valid_body(messages=[{"role": "user", "content": ""}]), 422, "invalid_value", None),
    "undecodable image": (valid_body(messages=user_with_image("data:image/png;base64," + base64.b64encode(b"not a png").decode())),
                          400, "invalid_image", None),
    "not base64": (valid_body(messages=user_with_image("data:image/png;base64,@@@")), 400, "invalid_image", None),
    "file path refused": (valid_body(messages=user_with_image("/etc/passwd")), 400, "media_not_allowed", None),
    "http refused": (valid_body(messages=user_with_image("http://example.com/a.png")), 400, "media_not_allowed", None),
    "image over pixel limit": (valid_body(messages=user_with_image(png_data_url((500, 500)))), 413, "image_too_large", None),
    "n > 1": (valid_body(n=2), 400, "unsupported_value", "n"),
    "unknown model": (valid_body(model="gpt-4o"), 404, "model_not_found", "model"),
    "prompt longer than the profiles": (
        valid_body(messages=[{"role": "user", "content": "tap the button " * 200}]), 400, "context_length_exceeded", "messages"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_openai_error(server: Any, case: str) -> None:
    body, status, code, param = CASES[case]
    error = assert_error(post(server, body), status, code, param)
    if case == "prompt longer than the profiles":
        assert "--max-kv" in error["message"] and "at most 128 (past_sequence_length in export.json)" in error["message"]
    assert_still_serving(server)


def test_malformed_json(server: Any) -> None:
    assert_error(post(server, content=b'{"model": "autoglm-phone-9b", "messages": ['), 400, "invalid_json")
    assert_still_serving(server)


def test_wrong_api_key(server: Any) -> None:
    import openai

    error = assert_error(post(server, valid_body(), headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert error["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").chat.completions.create(model=MODEL, messages=agent_messages(1), max_tokens=2)
    assert_error(httpx.get(f"{server.url}/v1/models"), 401, "invalid_api_key")
    assert_still_serving(server)


def test_openai_client_maps_errors(server: Any) -> None:
    import openai

    client = server.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=agent_messages(1), max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=agent_messages(1), max_tokens=2, n=3)
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def metric(server: Any, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def slow_server(serve_config: Any, start_server: Any) -> Any:
    """The real engine with 50 ms per decode step, so a client can leave while its reply is running."""
    from trt_pipeline.serve.model import load_model

    def loader(metrics: Any) -> Any:
        model = load_model(serve_config, metrics)
        step = model.engine.decode

        def slow_step(*args: Any) -> Any:
            time.sleep(0.05)
            return step(*args)

        model.engine.decode = slow_step
        return model

    return start_server(serve_config, loader)


def test_client_disconnect_mid_stream_frees_its_slot(slow_server: Any) -> None:
    server = slow_server
    cancelled = 'autoglm_requests_total{outcome="cancelled"}'
    body = valid_body(stream=True, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        lines = list(itertools.islice((line for line in response.iter_lines() if line), 3))
        assert all(line.startswith("data: {") for line in lines)
    deadline = time.monotonic() + 30
    while metric(server, cancelled) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, cancelled) == 1
    assert metric(server, 'autoglm_requests_total{outcome="length"}') == 0
    assert metric(server, "autoglm_num_requests_running") == 0
    assert_still_serving(server)


def test_queue_full_gets_429(serve_config: Any) -> None:
    """A scheduler whose thread never runs: the first request waits, the second is refused."""
    from serve_helpers import small_contract

    from trt_pipeline.serve.errors import APIError
    from trt_pipeline.serve.metrics import ServeMetrics
    from trt_pipeline.serve.scheduler import Scheduler

    class Engine:
        contract = small_contract(max_batch=1)

    scheduler = Scheduler(Engine(), [0], ServeMetrics(), max_queue=1)  # type: ignore[arg-type]
    scheduler.submit(object())  # type: ignore[arg-type]
    with pytest.raises(APIError) as raised:
        scheduler.submit(object())  # type: ignore[arg-type]
    assert raised.value.status == 429 and raised.value.body()["error"]["type"] == "rate_limit_error"


def test_health_is_503_while_loading(serve_config: Any, start_server: Any) -> None:
    from dataclasses import replace

    from trt_pipeline.serve.app import create_app
    from trt_pipeline.serve.model import load_model
    from fastapi.testclient import TestClient

    release = threading.Event()

    def slow_loader(metrics: Any) -> Any:
        release.wait(60)
        return load_model(serve_config, metrics)

    with TestClient(create_app(replace(serve_config, api_key=None), slow_loader)) as client:
        response = client.get("/health")
        assert response.status_code == 503 and response.json() == {"status": "loading", "model": MODEL}
        assert_error(client.post("/v1/chat/completions", json=valid_body()), 503, "loading")
        release.set()
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/health").json() == {"status": "ok", "model": MODEL}
        assert client.post("/v1/chat/completions", json=valid_body()).status_code == 200


def test_schemathesis_chat_completions_no_5xx(server: Any, record_property: Any) -> None:
    """Generated from the server's own OpenAPI schema; the case count and statuses are printed
    (``-s`` / ``-rA``) and recorded in the JUnit XML (``schemathesis_cases``)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema["/v1/chat/completions"]["POST"]
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    def check(case: Any) -> None:
        if isinstance(case.body, dict):
            case.body["model"] = MODEL  # reach past the model check (404 is tested above)
            case.body["max_tokens"] = 4  # bounded cost per case; every other field stays generated
            case.body.pop("max_completion_tokens", None)
        response = case.call(headers=AUTH, timeout=120)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text

    check()
    by_status = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(f"schemathesis: {len(statuses)} cases generated, responses by status {by_status}")
    record_property("schemathesis_cases", len(statuses))
    record_property("schemathesis_statuses", by_status)
    assert len(statuses) >= 30
    assert statuses.count(200) >= 20, "too few generated cases reached generation"
    assert_still_serving(server)


@pytest.fixture(scope="module")
def image_limited_server(serve_config: Any, start_server: Any) -> Any:
    """The tiny export with its image-token limit lowered to the default test image's token count
    (the contract's 413 is unreachable through the tiny image processor, whose largest image fits)."""
    from dataclasses import replace

    from trt_pipeline.serve.chat import build_prompt
    from trt_pipeline.serve.model import load_model
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    def loader(metrics: Any) -> Any:
        model = load_model(serve_config, metrics)
        prompt = build_prompt(model.processing, ChatCompletionRequest(model=MODEL, messages=agent_messages(1)),
                              serve_config.media)
        (start, end), = prompt.image_runs
        model.engine.contract = replace(model.contract, max_image_tokens=end - start)
        return model

    return start_server(serve_config, loader)


def test_image_tokens_over_the_export_limit_get_413(image_limited_server: Any) -> None:
    server = image_limited_server
    limit = server.app.state.serve.model.contract.max_image_tokens
    error = assert_error(post(server, valid_body(messages=user_with_image(png_data_url((280, 280))))), 413,
                         "image_too_large", "messages")
    assert f"serves at most {limit} (num_image_tokens in export.json)" in error["message"]
    assert "--max-pixels / --max-image-tokens" in error["message"]
    assert_still_serving(server)


def test_queue_full_over_http_gets_429_then_serves(serve_config: Any, start_server: Any) -> None:
    """The worker is held inside a prefill: one request runs, one waits (max_queue=1), the next gets 429."""
    from dataclasses import replace

    from trt_pipeline.serve.model import load_model

    gate = threading.Event()

    def loader(metrics: Any) -> Any:
        model = load_model(replace(serve_config, max_queue=1), metrics)
        extend = model.engine.extend

        def held_extend(*args: Any) -> Any:
            assert gate.wait(60), "the test never released the worker"
            return extend(*args)

        model.engine.extend = held_extend
        return model

    server = start_server(replace(serve_config, max_queue=1), loader)
    replies: list[httpx.Response] = []
    senders = [threading.Thread(target=lambda: replies.append(post(server, valid_body()))) for _ in range(2)]
    try:
        for sender, gauge in zip(senders, ("autoglm_prompt_tokens_total", "autoglm_num_requests_waiting")):
            sender.start()  # the first is admitted (its prefill holds the worker), the second waits
            deadline = time.monotonic() + 30
            while metric(server, gauge) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        error = assert_error(post(server, valid_body()), 429, "queue_full")
        assert error["type"] == "rate_limit_error" and "1 requests are already waiting" in error["message"]
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": MODEL}
    finally:
        gate.set()
        for sender in senders:
            sender.join(120)
    assert [r.status_code for r in replies] == [200, 200]
    assert_still_serving(server)


@pytest.fixture(scope="module")
def failing_server(serve_config: Any, start_server: Any) -> Any:
    """The real engine whose next decode step fails with an error naming the server's model file
    (as ONNX Runtime's errors do); ``fail.set()`` arms one failure."""
    from trt_pipeline.serve.model import load_model

    fail = threading.Event()

    def loader(metrics: Any) -> Any:
        model = load_model(serve_config, metrics)
        decode = model.engine.decode

        def failing_decode(*args: Any) -> Any:
            if fail.is_set():
                fail.clear()
                raise RuntimeError(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION in {serve_config.out}/onnx/fp32/decoder.onnx")
            return decode(*args)

        model.engine.decode = failing_decode
        return model

    server = start_server(serve_config, loader)
    server.fail = fail
    return server


def test_engine_failure_gets_500_without_server_paths(failing_server: Any) -> None:
    server = failing_server
    server.fail.set()
    error = assert_error(post(server, valid_body(max_tokens=6)), 500, "internal_error")
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    server.fail.set()
    body = valid_body(max_tokens=6, stream=True)
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200  # the failure comes after the stream started: an SSE error event
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    failure = [event for event in events if '"error"' in event]
    assert len(failure) == 1 and events[-1] == "[DONE]"
    assert_no_server_path(failure[0])
    assert str(failing_server.app.state.serve.config.out) not in failure[0]
    assert_still_serving(server)


def test_load_failure_is_reported_without_server_paths(serve_config: Any, tmp_path: Any) -> None:
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from trt_pipeline.errors import OnnxModelError
    from trt_pipeline.serve.app import create_app

    def broken_loader(metrics: Any) -> Any:
        path = tmp_path / "onnx" / "fp32" / "decoder.onnx"
        raise OnnxModelError(f"ONNX Runtime cannot load {path}: truncated", path=path, hint=f"re-export into {tmp_path}")

    with TestClient(create_app(replace(serve_config, api_key=None), broken_loader)) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").status_code == 503 and client.get("/health").json()["status"] == "error"
        error = assert_error(client.post("/v1/chat/completions", json=valid_body()), 500, "internal_error")
        assert error["message"] == "loading failed: ONNX Runtime cannot load <path>: truncated re-export into <path>"
