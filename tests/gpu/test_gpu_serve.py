"""``autoglm-trt serve --backend trt`` on a real GPU: the same greedy replies as the ORT backend.

The engines are built from the session's GPU export (fp32, so the comparison with ONNX Runtime's
fp32 is exact up to kernel-order rounding, and greedy tokens agree on the tiny checkpoint). The
requests go over HTTP with the official ``openai`` client: a text request, then two agent requests
(screenshot + instruction) at once, so the TensorRT decode profile runs a batch of two rows.
The mocked twin of this test (tests/engine/test_serve_trt_mocked.py) runs the same flow everywhere.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_gpu_engines import built_engines, gpu_export  # noqa: F401  (gpu_export: the fixture)

pytestmark = pytest.mark.gpu
MODEL = "autoglm-phone-9b"


def _replies(out: Path, backend: str, bodies: list[list[dict[str, Any]]]) -> list[tuple[str, int]]:
    from trt_pipeline.serve.app import create_app
    from trt_pipeline.serve.chat import MediaPolicy
    from trt_pipeline.serve.launch import ThreadedServer
    from trt_pipeline.serve.model import ServeConfig

    config = ServeConfig(out=out, backend=backend, precision="fp32", media=MediaPolicy(max_pixels=200_000))
    with ThreadedServer(create_app(config)) as server:
        assert server.app.state.serve.model.engine.backend == backend
        client = server.client()

        def ask(messages: list[dict[str, Any]]) -> tuple[str, int]:
            reply = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=8)
            return reply.choices[0].message.content, reply.usage.completion_tokens

        first = ask(bodies[0])
        with ThreadPoolExecutor(2) as pool:
            return [first, *pool.map(ask, bodies[1:])]


def test_trt_backend_serves_the_ort_reply(gpu_export: Path) -> None:
    built_engines(gpu_export, "fp32")
    from PIL import Image

    from trt_pipeline.serve.media import encode_data_url

    image = encode_data_url(Image.new("RGB", (56, 84), (200, 30, 30)))
    bodies = [[{"role": "system", "content": "You are a phone agent."},
               {"role": "user", "content": "Open the settings app."}]] + [
        [{"role": "system", "content": "You are a phone agent."},
         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                      {"type": "text", "text": f"Step {step}: tap the icon."}]}] for step in (1, 2)]
    trt = _replies(gpu_export, "trt", bodies)
    assert trt == _replies(gpu_export, "ort", bodies)
    assert all(tokens >= 1 for _text, tokens in trt)
