"""Load test of ``autoglm-trt serve`` (ORT backend): throughput and latency at 1/4/8 streaming clients,
and TTFT of a 5-step agent conversation with and without prefix (KV) reuse.

Steps (the export is reused when it exists, unless ``--fresh``):

1. ``init-checkpoint --preset PRESET`` + ``export --max-batch 8 --max-seq 128 --max-kv 384 --no-validate``
   into ``engines/bench-serve-PRESET/``;
2. the server runs in-process (uvicorn on 127.0.0.1, a free port); each client is a thread with the
   official ``openai`` client sending ``--requests`` streaming agent-style requests (screenshot + text,
   ``temperature=0``, ``frequency_penalty=0.2``, ``max_tokens=--max-tokens``) back to back;
3. TTFT = request sent -> first content delta; ITL = gaps between content deltas; tokens/s = completion
   tokens (``usage``) / wall time of the whole level;
4. prefix reuse: the same 5-step conversation (each step appends the reply and a new screenshot)
   replayed against a server with ``--prefix-cache 8`` and one with ``--prefix-cache 0``.

Writes ``benchmarks/results/serve_load_PRESET.json`` and ``.png``.

    python benchmarks/serve_load.py [--preset tiny] [--clients 1,4,8] [--requests 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "autoglm-phone-9b"


def prepare_export(preset: str, fresh: bool) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    base = ROOT / "engines" / f"bench-serve-{preset}"
    out = base / "export"
    if fresh and base.exists():
        shutil.rmtree(base)
    if not (out / "export.json").is_file():
        checkpoint = write_checkpoint(base / "checkpoint", preset=preset, seed=0, overwrite=True)
        export(checkpoint, out, ExportConfig(max_batch=8, max_seq=128, max_kv=384, validate=False), show_progress=False)
    return out


class Server:
    def __init__(self, config: Any) -> None:
        import uvicorn

        from trt_pipeline.serve.app import create_app

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        import httpx

        self.thread.start()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0)


def screenshot(seed: int) -> str:
    import base64
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (112, 56, 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def user_turn(seed: int, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": screenshot(seed)}},
                                        {"type": "text", "text": text}]}


def timed_request(client: Any, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    """One streaming request: TTFT, inter-token gaps, completion tokens and the text."""
    start = time.perf_counter()
    stamps, text, tokens = [], "", 0
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True, temperature=0.0,
                                            top_p=0.85, frequency_penalty=0.2, max_tokens=max_tokens,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
            text += chunk.choices[0].delta.content
    ttft = (stamps[0] - start) if stamps else float("nan")
    return {"ttft": ttft, "itl": list(np.diff(stamps)), "tokens": tokens, "text": text}


def load_level(server: Server, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = server.client()
        for r in range(requests):
            messages = [{"role": "system", "content": "You are a phone agent."},
                        user_turn(1000 * index + r, f"Client {index} request {r}: open settings.")]
            result = timed_request(client, messages, max_tokens)
            with lock:
                results.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ttft = [r["ttft"] for r in results]  # NaN: the reply was empty (EOS first), no content delta to time
    itl = [gap for r in results for gap in r["itl"]] or [float("nan")]
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "empty_replies": int(np.isnan(ttft).sum()),
            "completion_tokens": tokens, "seconds": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2),
            "ttft_p50_ms": round(1000 * float(np.nanpercentile(ttft, 50)), 2),
            "ttft_p99_ms": round(1000 * float(np.nanpercentile(ttft, 99)), 2),
            "itl_p50_ms": round(1000 * float(np.nanpercentile(itl, 50)), 2),
            "itl_p99_ms": round(1000 * float(np.nanpercentile(itl, 99)), 2)}


def agent_replay(server: Server, steps: int, max_tokens: int) -> list[dict[str, Any]]:
    """A 5-step agent conversation: each step resends everything plus the reply and a new screenshot."""
    client = server.client()
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a phone agent."}]
    out = []
    for step in range(steps):
        messages.append(user_turn(step, f"Step {step + 1}: continue the task."))
        result = timed_request(client, messages, max_tokens)
        messages.append({"role": "assistant", "content": result["text"]})
        out.append({"step": step + 1, "ttft_ms": round(1000 * result["ttft"], 2), "text": result["text"]})
    return out


def saved_tokens(server: Server) -> int:
    import httpx

    for line in httpx.get(f"http://127.0.0.1:{server.port}/metrics").text.splitlines():
        if line.startswith("autoglm_prefix_cache_saved_tokens_total "):
            return int(float(line.split()[1]))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    clients = [lv["clients"] for lv in levels]
    axes[0].bar([str(c) for c in clients], [lv["tokens_per_s"] for lv in levels])
    axes[0].set(title="throughput", xlabel="concurrent clients", ylabel="tokens/s")
    for key, label in (("ttft", "TTFT"), ("itl", "inter-token")):
        axes[1].plot(clients, [lv[f"{key}_p50_ms"] for lv in levels], marker="o", label=f"{label} p50")
        axes[1].plot(clients, [lv[f"{key}_p99_ms"] for lv in levels], marker="x", linestyle="--", label=f"{label} p99")
    axes[1].set(title="latency", xlabel="concurrent clients", ylabel="ms", xticks=clients)
    axes[1].legend(fontsize=7)
    replay = report["prefix_reuse"]
    steps = [s["step"] for s in replay["with_reuse"]]
    axes[2].plot(steps, [s["ttft_ms"] for s in replay["with_reuse"]], marker="o", label="prefix reuse")
    axes[2].plot(steps, [s["ttft_ms"] for s in replay["without_reuse"]], marker="x", label="from scratch")
    axes[2].set(title="agent replay TTFT", xlabel="step", ylabel="ms", xticks=steps)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"autoglm-trt serve, {report['preset']} preset, ORT {report['precision']}, {report['cpu_threads']} CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    import os

    from trt_pipeline.serve.model import ServeConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    out = prepare_export(args.preset, args.fresh)
    config = ServeConfig(out=out, backend="ort", precision="fp32")
    report: dict[str, Any] = {"preset": args.preset, "precision": "fp32", "cpu_threads": os.cpu_count(),
                              "max_tokens": args.max_tokens, "requests_per_client": args.requests, "levels": []}
    with Server(config) as server:
        load_level(server, 1, 1, args.max_tokens)  # warm-up
        for clients in (int(c) for c in args.clients.split(",")):
            report["levels"].append(load_level(server, clients, args.requests, args.max_tokens))
            print(json.dumps(report["levels"][-1]))
    replay: dict[str, Any] = {}
    for name, entries in (("with_reuse", 8), ("without_reuse", 0)):
        with Server(replace(config, prefix_cache_entries=entries)) as server:
            replay[name] = agent_replay(server, 5, args.max_tokens)
            replay[f"{name}_saved_tokens"] = saved_tokens(server)
    replay["same_text"] = [a["text"] for a in replay["with_reuse"]] == [b["text"] for b in replay["without_reuse"]]
    report["prefix_reuse"] = replay
    base = report["levels"][0]["tokens_per_s"]
    report["speedup_vs_1_client"] = {lv["clients"]: round(lv["tokens_per_s"] / base, 2) for lv in report["levels"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"serve_load_{args.preset}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plot(report, path.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("speedup_vs_1_client",)}),
          {k: [s["ttft_ms"] for s in v] for k, v in replay.items() if k in ("with_reuse", "without_reuse")},
          "saved", replay["with_reuse_saved_tokens"], "same text", replay["same_text"])


if __name__ == "__main__":
    main()
