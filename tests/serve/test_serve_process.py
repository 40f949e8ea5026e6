"""The real command in its own process (as the load benchmark runs it): start-up log, health, a reply."""

from __future__ import annotations

from pathlib import Path

from serve_helpers import API_KEY, MODEL, agent_messages


def test_serve_command_as_a_process(tiny_export: Path, tmp_path: Path) -> None:
    from trt_pipeline.serve.launch import ServerProcess

    log = tmp_path / "serve.log"
    with ServerProcess(tiny_export, ["--api-key", API_KEY, "--prefill-chunk", "32"], log=log) as server:
        import httpx

        assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": MODEL}
        reply = server.client(api_key=API_KEY).chat.completions.create(
            model=MODEL, messages=agent_messages(1), temperature=0, max_tokens=4)
        assert reply.usage.completion_tokens >= 1 and reply.choices[0].finish_reason in ("stop", "length")
        pid = server.pid
    assert server.process is not None and server.process.poll() is not None, f"server {pid} still running"
    started = log.read_text()
    for fact in ("backend ort", "precision fp32", "batch <= ", "prefill chunks of 32", "prompt + reply <= 130",
                 "image tokens "):
        assert fact in started, (fact, started)
