"""One phone-agent step through ``autoglm-trt serve``, as the Open-AutoGLM agent sends it, timed.

WHY: the bench times the decoder alone; a phone agent waits for the whole step: the screenshot through
the vision encoder, the prompt prefilled in chunks, the reply streamed. This script measures that on
any export (the real 9B's int4 included), through the OpenAI client the agent uses:

1. starts ``autoglm-trt serve OUT --backend ort --precision P`` on 127.0.0.1 (a free port) and waits
   until ``/health`` says it is ready (the load time), through :class:`trt_pipeline.serve.launch.ServerProcess`;
2. sends ``--requests`` streamed chat completions (system prompt + a ``--width`` x ``--height`` PNG
   screenshot as a data URL + an instruction; greedy, ``max_tokens=--max-tokens``, usage included).
   They are the same conversation, so the first is cold and the later ones show the prefix cache;
3. records time to first token, total time and usage per request, and the server's peak RSS
   (``VmHWM``), then stops the server (every request and the wait are bounded by ``--timeout``).

Writes ``--out`` (JSON) and prints it.

    python benchmarks/serve_request.py OUT --precision int4 [--width 540 --height 1200] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def screenshot_url(width: int, height: int) -> str:
    """A deterministic noise PNG (every patch differs) as the data URL the agent sends."""
    import numpy as np
    from PIL import Image

    from trt_pipeline.serve.media import encode_data_url

    return encode_data_url(Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)))


def one_request(client: Any, url: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "system", "content": "You are a phone agent."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "Open the settings app. ** Screen Info ** "
                                                                      '{"current_app": "Launcher"}'}]}]
    start, first, text, usage = time.perf_counter(), None, "", None
    stream = client.chat.completions.create(model="autoglm-phone-9b", messages=messages, max_tokens=max_tokens,
                                            temperature=0.0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            text += chunk.choices[0].delta.content
        if getattr(chunk, "usage", None):
            usage = chunk.usage.model_dump()
    total = time.perf_counter() - start
    return {"ttft_s": round(first if first is not None else total, 3), "total_s": round(total, 3),
            "reply_chars": len(text), "prompt_tokens": (usage or {}).get("prompt_tokens"),
            "completion_tokens": (usage or {}).get("completion_tokens"),
            "cached_tokens": ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="export folder")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--width", type=int, default=540)
    ap.add_argument("--height", type=int, default=1200)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the load and for each request")
    ap.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_request.json")
    args = ap.parse_args()
    from trt_pipeline.bench.memory import peak_rss_bytes
    from trt_pipeline.serve.launch import ServerProcess

    server = ServerProcess(args.out, ["--backend", "ort", "--precision", args.precision, "--threads", str(args.threads)])
    start = time.perf_counter()
    server.start(timeout=args.timeout)  # waits for /health
    try:
        load_s = time.perf_counter() - start
        client = server.client(timeout=args.timeout)
        url = screenshot_url(args.width, args.height)
        requests = [one_request(client, url, args.max_tokens) for _ in range(args.requests)]
        peak = peak_rss_bytes(server.pid)
    finally:
        server.stop()  # terminate, then kill after 30 s (a server still loading ignores SIGTERM)
    result = {"export": str(args.out), "precision": args.precision, "threads": args.threads,
              "screenshot": [args.width, args.height], "max_tokens": args.max_tokens, "server_load_s": round(load_s, 1),
              "requests": requests, "server_peak_rss_bytes": peak,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
