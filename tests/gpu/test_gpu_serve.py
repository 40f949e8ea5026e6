"""``autoglm-trt serve --backend trt``: the same greedy replies as the ORT backend (GPU hosts only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from test_gpu_engines import built_engines, gpu_export  # noqa: F401  (gpu_export: the fixture)


def _reply(out: Path, backend: str, body: dict[str, Any]) -> str:
    from fastapi.testclient import TestClient

    from trt_pipeline.serve.app import create_app
    from trt_pipeline.serve.model import ServeConfig

    with TestClient(create_app(ServeConfig(out=out, backend=backend, precision="fp32"))) as client:
        deadline = time.monotonic() + 300
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health").json()
            time.sleep(0.2)
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]


def test_trt_backend_serves_the_ort_reply(gpu_export: Path) -> None:
    built_engines(gpu_export, "fp32")
    body = {"model": "autoglm-phone-9b", "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "system", "content": "You are a phone agent."},
                         {"role": "user", "content": "Open the settings app."}]}
    assert _reply(gpu_export, "trt", body) == _reply(gpu_export, "ort", body)
