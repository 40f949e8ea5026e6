"""Fixtures for the server tests: the tiny export served by uvicorn on 127.0.0.1 in a thread.

The official ``openai`` client (and LangChain) talk to it over real HTTP, exactly as the
Open-AutoGLM agent does; every server here runs the ORT backend of ``tiny_export``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import API_KEY

from trt_pipeline.serve.launch import ThreadedServer


class RunningServer(ThreadedServer):
    """A server of the tests: clients carry the tests' API key unless told otherwise."""

    def client(self, api_key: str = API_KEY, **kwargs: Any) -> Any:
        return super().client(api_key=api_key, **kwargs)


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
