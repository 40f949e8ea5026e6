"""Start ``autoglm-trt serve`` on 127.0.0.1 and wait until ``/health`` answers ok.

Two ways, one readiness check: :class:`ThreadedServer` runs an app (possibly with a custom loader,
as the tests need) under uvicorn in a thread of this process; :class:`ServerProcess` runs the real
command in a separate process, so a load generator never shares the server's interpreter (GIL,
threads) and what it measures is what a client of the command sees. Both bind a free port and
give an official ``openai`` client for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trt_pipeline.errors import PipelineError

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float, alive: Callable[[], bool], what: str) -> None:
    """Poll ``url/health`` until 200; PipelineError when ``alive()`` turns false or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise PipelineError(f"{what} exited before it became healthy.")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise PipelineError(f"{what} did not become healthy within {timeout:.0f} s.")


class _Endpoint:
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, api_key: str = "none", **kwargs: Any) -> Any:
        """An official ``openai`` client for this server (no retries: a failure shows at once)."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)


class ThreadedServer(_Endpoint):
    """uvicorn serving ``app`` in a background thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 120.0) -> ThreadedServer:
        self.thread.start()
        wait_healthy(self.url, timeout, self.thread.is_alive, "the server thread")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ServerProcess(_Endpoint):
    """``python -m trt_pipeline.cli serve OUT --host 127.0.0.1 --port P ARGS...`` as a child process.

    ``env`` adds variables (e.g. ``OMP_NUM_THREADS``); the child's output goes to ``log`` (a file)
    so a failed start can be read afterwards.
    """

    def __init__(self, out: Path | str, args: Sequence[str] = (), log: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.command = [sys.executable, "-m", "trt_pipeline.cli", "serve", str(out), "--host", HOST,
                        "--port", str(self.port), *args]
        self.log, self.env = log, {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self._sink: Any = None

    def start(self, timeout: float = 900.0) -> ServerProcess:  # model load on a loaded 2-core host took > 300 s
        self._sink = open(self.log, "ab") if self.log else None  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(self.command, stdout=self._sink or subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_healthy(self.url, timeout, lambda: self.process is not None and self.process.poll() is None,
                         f"`{' '.join(self.command[2:])}`" + (f" (log: {self.log})" if self.log else ""))
        except PipelineError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise PipelineError("the server process is not started.")
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ServerProcess", "ThreadedServer", "free_port", "wait_healthy"]
