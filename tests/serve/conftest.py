"""Fixtures for the server tests: the tiny export served by uvicorn on 127.0.0.1 in a thread.

The official ``openai`` client (and LangChain) talk to it over real HTTP, exactly as the
Open-AutoGLM agent does; every server here runs the ORT backend of ``tiny_export``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from serve_helpers import API_KEY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """uvicorn serving one app in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> RunningServer:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=kwargs.pop("api_key", API_KEY), max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def serve_config(tiny_export: Path) -> Any:
    from trt_pipeline.serve.chat import MediaPolicy
    from trt_pipeline.serve.model import ServeConfig

    return ServeConfig(out=tiny_export, backend="ort", api_key=API_KEY, media=MediaPolicy(max_pixels=200_000))


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``start_server(config)`` -> a healthy :class:`RunningServer` (stopped at session end)."""
    from trt_pipeline.serve.app import create_app

    servers: list[RunningServer] = []

    def start(config: Any, loader: Any = None) -> RunningServer:
        server = RunningServer(create_app(config, loader)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(serve_config: Any, start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(serve_config)


@pytest.fixture(scope="session")
def server_no_reuse(serve_config: Any, start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(replace(serve_config, prefix_cache_entries=0))
