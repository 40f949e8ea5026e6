"""Load test of ``autoglm-trt serve`` (ORT backend): throughput and latency at 1/4/8 streaming clients,
every concurrent reply checked against its sequential run, and TTFT of a 5-step agent conversation
with and without prefix (KV) reuse.

Steps (the export is reused when its ranges match, unless ``--fresh``):

1. ``init-checkpoint --preset PRESET`` + ``export --max-batch 8 --max-seq 256 --max-kv 1024 --no-validate``
   into ``engines/bench-serve-PRESET/``;
   Then the decode step of the server's engine alone, in this process (no HTTP, no sampling), at
   batch 1/4/8 over the benchmark's prompts (``engine_step``: what batching can gain at most);
2. two servers run as the real command, each in its own process on 127.0.0.1
   (:class:`~trt_pipeline.serve.launch.ServerProcess`): the measured one with its default options
   (prefix cache on) and a reference one with ``--prefix-cache 0``. This process is only the load
   generator: each client is a thread with the official ``openai`` client sending streaming
   agent-style first steps back to back: the shared system prompt, then a screenshot and a task of
   the request's own (every request is unique, so only the system prompt is reused, as for agent
   traffic), ``temperature=0``, ``top_p=0.85``, ``frequency_penalty=0.2``, ``max_tokens=--max-tokens``;
3. the levels run interleaved (1, 4, 8 clients, then again, ``--rounds`` times), so a change of the
   machine's load hits every level alike; each level sends ``--requests`` requests in all.
   TTFT = request sent -> first content delta; ITL = gaps between content deltas; tokens/s =
   completion tokens (``usage``) / wall time of the level;
4. identity: every reply of the last round's concurrent levels (4 and 8 clients) is compared with
   the same request sent alone to the reference server (from scratch): ``identical_to_sequential``;
5. prefix reuse: a 5-step agent conversation as Open-AutoGLM sends it (each step resends the
   conversation; the previous screenshot is dropped, its text kept; a new screenshot is added),
   sent step by step alternately to the measured server and the reference one (same load);
   replies must be equal; tokens saved from the measured server's ``/metrics``.

Writes ``benchmarks/results/serve_load_PRESET.json`` (with ``uptime`` before and after: the machine
is shared) and ``.png``. Exits 1 when a concurrent reply differs from its sequential run.

    python benchmarks/serve_load.py [--preset small] [--rounds 2] [--requests 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "autoglm-phone-9b"
EXPORT_RANGES = {"max_batch": 8, "max_seq": 256, "max_kv": 1024}
SYSTEM = ("You are a phone agent. Read the screenshot, think inside <think>...</think>, then answer with one "
          "action inside <answer>do(action=...)</answer>. Actions: Launch, Tap, Type, Swipe, Back, Home, Wait, "
          "Finish. Tap takes element=[x,y] in 0-999 coordinates. Finish takes message. Never invent elements.")


def prepare_export(preset: str, fresh: bool) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
    from trt_pipeline.generate import export_contract

    base = ROOT / "engines" / f"bench-serve-{preset}"
    out = base / "export"
    if not fresh and (out / "export.json").is_file():
        contract = export_contract(out)
        fresh = (contract.max_batch, contract.max_chunk, contract.max_past) != tuple(EXPORT_RANGES.values())
    if fresh and base.exists():
        shutil.rmtree(base)
    if not (out / "export.json").is_file():
        checkpoint = write_checkpoint(base / "checkpoint", preset=preset, seed=0, overwrite=True)
        export(checkpoint, out, ExportConfig(**EXPORT_RANGES, validate=False), show_progress=False)
    return out


def screenshot(seed: int, size: tuple[int, int] = (224, 224)) -> str:
    from PIL import Image

    from trt_pipeline.serve.media import encode_data_url

    rng = np.random.default_rng(seed)
    return encode_data_url(Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)))


def user_turn(seed: int, text: str, image: bool = True) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image:
        parts.insert(0, {"type": "image_url", "image_url": {"url": screenshot(seed)}})
    return {"role": "user", "content": parts}


TASKS = ["open settings", "turn on wifi", "call mom", "open the camera", "search for a hotel",
         "send a message to Li", "set an alarm for 7", "play music"]


def agent_request(seed: int) -> list[dict[str, Any]]:
    """A first agent step: the shared system prompt, then a screenshot and a task of its own (unique per seed)."""
    return [{"role": "system", "content": SYSTEM}, user_turn(seed, f"Task {seed}: {TASKS[seed % len(TASKS)]}.")]


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


def run_level(server: Any, seeds: list[int], clients: int, max_tokens: int) -> tuple[float, list[dict]]:
    """One request per seed from ``clients`` threads, back to back; -> (wall seconds, results with their seed)."""
    from concurrent.futures import ThreadPoolExecutor

    def worker(index: int) -> list[dict[str, Any]]:
        client = server.client()
        return [{**timed_request(client, agent_request(seed), max_tokens), "seed": seed}
                for seed in seeds[index::clients]]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(worker, range(clients)))  # a failed request raises here, not in a thread
    return time.perf_counter() - start, [result for part in parts for result in part]


def summarize(clients: int, walls: list[float], results: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [r["ttft"] for r in results]  # NaN: the reply was empty (EOS first), no content delta to time
    itl = [gap for r in results for gap in r["itl"]] or [float("nan")]
    tokens = sum(r["tokens"] for r in results)

    def ms(values: list[float], q: float) -> float:
        return round(1000 * float(np.nanpercentile(values, q)), 1)

    return {"clients": clients, "requests": len(results), "empty_replies": int(np.isnan(ttft).sum()),
            "completion_tokens": tokens, "seconds": round(sum(walls), 2),
            "tokens_per_s": round(tokens / sum(walls), 2),
            "tokens_per_s_per_round": [round(sum(r["tokens"] for r in part) / wall, 2)
                                       for wall, part in zip(walls, _rounds(results, len(walls)))],
            "ttft_p50_ms": ms(ttft, 50), "ttft_p99_ms": ms(ttft, 99),
            "itl_p50_ms": ms(itl, 50), "itl_p99_ms": ms(itl, 99)}


def _rounds(results: list[dict[str, Any]], rounds: int) -> list[list[dict[str, Any]]]:
    size = len(results) // rounds
    return [results[i * size:(i + 1) * size] for i in range(rounds)]


def load_test(server: Any, levels: list[int], rounds: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """Interleaved levels against one server process; every request unique (its own screenshot and task)."""
    walls: dict[int, list[float]] = {c: [] for c in levels}
    results: dict[int, list[dict]] = {c: [] for c in levels}
    loads: list[str] = []
    run_level(server, [0], 1, max_tokens)  # warm-up (seed 0: no measured request uses it)
    for round_ in range(rounds):
        for clients in levels:
            seeds = [10_000 * (round_ + 1) + 100 * clients + k for k in range(requests)]
            wall, part = run_level(server, seeds, clients, max_tokens)
            walls[clients].append(wall)
            results[clients] += part
            loads.append(f"round {round_ + 1}, {clients} clients: {load_average(uptime())}")
            print(f"round {round_ + 1} clients {clients}: {sum(r['tokens'] for r in part) / wall:.1f} tok/s "
                  f"({wall:.1f} s)", flush=True)
    summary = [summarize(c, walls[c], results[c]) for c in levels]
    base = summary[0]["tokens_per_s"]
    per_round = {s["clients"]: [round(a / b, 2) for a, b in zip(s["tokens_per_s_per_round"],
                                                                summary[0]["tokens_per_s_per_round"])]
                 for s in summary}
    speedup = {s["clients"]: round(s["tokens_per_s"] / base, 2) for s in summary}
    return {"levels": summary, "speedup_vs_1_client": speedup,
            "speedup_per_round": per_round, "load_average_after_each_level": loads,
            "last_round_concurrent": [r for c in levels[1:] for r in results[c][-requests:]]}


def engine_step_cost(out: Path, batches: list[int], rounds: int = 3, steps: int = 16) -> dict[str, Any]:
    """One decode step of the server's engine outside the server (this process, no HTTP, no sampling):
    the same ORT settings as ``serve`` (spinning off), the benchmark's agent prompts prefilled, then
    ``steps`` steps per batch size, the sizes interleaved ``rounds`` times. What the server adds on top
    is the difference to its inter-token latency."""
    import torch

    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings
    from trt_pipeline.serve.batch import DecodeBatch
    from trt_pipeline.serve.chat import MediaPolicy, build_prompt
    from trt_pipeline.serve.engine import ServeEngine
    from trt_pipeline.serve.prefill import PrefillJob
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    torch.set_num_threads(1)  # as the server process
    engine = ServeEngine.load(out, "ort", "fp32", ort=OrtSettings(spinning=False))
    processing = Glm4vProcessing(out / "hf")
    prefilled = []
    for seed in range(max(batches)):
        prompt = build_prompt(processing, ChatCompletionRequest(model=MODEL, messages=agent_request(seed)), MediaPolicy())
        job = PrefillJob(engine, prompt, None, 0)
        while not job.advance():
            pass
        prefilled.append((job.cache(), int(job.logits.argmax())))
    times: dict[int, list[float]] = {b: [] for b in batches}
    try:
        for _round in range(rounds):
            for size in batches:
                batch = DecodeBatch(engine)
                for row in range(size):
                    batch.join(row, prefilled[row][0])
                tokens = [token for _cache, token in prefilled[:size]]
                batch.step(tokens)  # the join's one-off rebuild
                for _ in range(steps):
                    start = time.perf_counter()
                    tokens = batch.step(tokens).argmax(-1).tolist()
                    times[size].append(time.perf_counter() - start)
    finally:
        engine.close()
    median = {size: round(1000 * float(np.median(values)), 1) for size, values in times.items()}
    return {"decode_step_ms_median": median, "decode_step_ms_p10": {
                size: round(1000 * float(np.percentile(values, 10)), 1) for size, values in times.items()},
            "step_cost_vs_batch_1": {size: round(median[size] / median[batches[0]], 2) for size in batches},
            "ideal_speedup_vs_batch_1": {size: round(size * median[batches[0]] / median[size], 2) for size in batches},
            "prompt_tokens": [cache.length for cache, _token in prefilled], "steps": steps, "rounds": rounds}


def identity_check(scratch: Any, concurrent: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    """Each concurrent reply against the same request sent alone, from scratch (no prefix reuse)."""
    mismatches = []
    for result in concurrent:
        alone = timed_request(scratch.client(), agent_request(result["seed"]), max_tokens)
        if alone["text"] != result["text"] or alone["tokens"] != result["tokens"]:
            mismatches.append({"seed": result["seed"], "concurrent": result["text"], "sequential": alone["text"]})
    return {"identical_to_sequential": not mismatches, "replies_checked": len(concurrent),
            "distinct_replies": len({r["text"] for r in concurrent}), "mismatches": mismatches[:5]}


def agent_steps(conversation: int, replies: list[str]) -> list[dict[str, Any]]:
    """Messages of the next step: the earlier screenshots dropped (their text kept), one new screenshot."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for step, reply in enumerate(replies):
        messages += [user_turn(0, f"Step {step + 1}: continue the task.", image=False),
                     {"role": "assistant", "content": reply}]
    seed = 5000 + 1000 * conversation + len(replies)
    messages.append(user_turn(seed, f"Step {len(replies) + 1}: continue the task."))
    return messages


def prefix_reuse(reuse: Any, scratch: Any, steps: int, conversations: int, max_tokens: int) -> dict[str, Any]:
    """The agent replay sent alternately to the reuse and the no-reuse server, step by step."""
    clients = {"with_reuse": reuse.client(), "without_reuse": scratch.client()}
    saved_before = metric(reuse.url, "autoglm_prefix_cache_saved_tokens_total")
    prompt_before = metric(reuse.url, "autoglm_prompt_tokens_total")
    ttft: dict[str, list[list[float]]] = {name: [] for name in clients}
    same, replies_by_conversation = True, []
    for conversation in range(conversations):
        replies: list[str] = []
        for name in clients:
            ttft[name].append([])
        for _step in range(steps):
            messages = agent_steps(conversation, replies)
            got = {name: timed_request(client, messages, max_tokens) for name, client in clients.items()}
            same &= got["with_reuse"]["text"] == got["without_reuse"]["text"]
            for name in clients:
                ttft[name][-1].append(got[name]["ttft"])
            replies.append(got["without_reuse"]["text"])
        replies_by_conversation.append(replies)
    median = {name: [round(1000 * float(np.median([c[s] for c in runs])), 1) for s in range(steps)]
              for name, runs in ttft.items()}
    later = {name: float(np.mean(values[1:])) for name, values in median.items()}
    return {"steps": steps, "conversations": conversations, "ttft_ms_median": median,
            "ttft_ms_steps_2_to_5_mean": {k: round(v, 1) for k, v in later.items()},
            "reuse_faster_at_every_later_step": all(a < b for a, b in zip(median["with_reuse"][1:],
                                                                           median["without_reuse"][1:])),
            "same_text": same,
            "prefill_tokens_saved": metric(reuse.url, "autoglm_prefix_cache_saved_tokens_total") - saved_before,
            "prompt_tokens": metric(reuse.url, "autoglm_prompt_tokens_total") - prompt_before,
            "replies": replies_by_conversation[0]}


def metric(url: str, name: str) -> int:
    import httpx

    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["load"]["levels"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    clients = [lv["clients"] for lv in levels]
    axes[0].bar([str(c) for c in clients], [lv["tokens_per_s"] for lv in levels])
    axes[0].set(title="throughput (interleaved rounds)", xlabel="concurrent streaming clients", ylabel="tokens/s")
    for key, label in (("ttft", "TTFT"), ("itl", "inter-token")):
        axes[1].plot(clients, [lv[f"{key}_p50_ms"] for lv in levels], marker="o", label=f"{label} p50")
        axes[1].plot(clients, [lv[f"{key}_p99_ms"] for lv in levels], marker="x", linestyle="--", label=f"{label} p99")
    axes[1].set(title="latency", xlabel="concurrent streaming clients", ylabel="ms", xticks=clients, yscale="log")
    axes[1].legend(fontsize=7)
    replay = report["prefix_reuse"]["ttft_ms_median"]
    steps = list(range(1, len(replay["with_reuse"]) + 1))
    axes[2].plot(steps, replay["with_reuse"], marker="o", label="prefix reuse")
    axes[2].plot(steps, replay["without_reuse"], marker="x", label="from scratch")
    axes[2].set(title="agent replay TTFT (median)", xlabel="step", ylabel="ms", xticks=steps)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"autoglm-trt serve, {report['preset']} preset, ORT {report['precision']}, "
                 f"{report['cpu_count']} CPUs shared (load {load_average(report['uptime_before'])})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def load_average(uptime_line: str) -> str:
    return uptime_line.split("load average:")[-1].strip()


def main() -> int:
    from trt_pipeline.serve.launch import ServerProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every level")
    parser.add_argument("--requests", type=int, default=8, help="requests per level and round")
    parser.add_argument("--max-tokens", type=int, default=128, help="reply length of the load levels "
                        "(agent replies are ~100-300 tokens)")
    parser.add_argument("--replays", type=int, default=2, help="5-step agent conversations for prefix reuse")
    parser.add_argument("--replay-max-tokens", type=int, default=48, help="reply length in the agent replay "
                        "(5 steps of replies must fit the export's 1024-token cache)")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    out = prepare_export(args.preset, args.fresh)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"preset": args.preset, "precision": "fp32", "cpu_count": os.cpu_count(),
                              "uptime_before": uptime(), "max_tokens": args.max_tokens,
                              "replay_max_tokens": args.replay_max_tokens, "rounds": args.rounds,
                              "requests_per_level_and_round": args.requests, "export_ranges": EXPORT_RANGES}
    started = time.perf_counter()
    levels = [int(c) for c in args.clients.split(",")]
    report["engine_step"] = engine_step_cost(out, levels)
    print(f"engine step alone: {report['engine_step']['decode_step_ms_median']} ms", flush=True)
    report["uptime_after_engine_step"] = uptime()
    log = out.parent / "server.log"
    with ServerProcess(out, log=log) as server, ServerProcess(out, ["--prefix-cache", "0"], log=log) as scratch:
        load = load_test(server, levels, args.rounds, args.requests, args.max_tokens)
        load.update(identity_check(scratch, load.pop("last_round_concurrent"), args.max_tokens))
        report["load"] = load
        report["prefix_reuse"] = prefix_reuse(server, scratch, 5, args.replays, args.replay_max_tokens)
    step = report["engine_step"]["decode_step_ms_median"]
    report["itl_p50_minus_engine_step_ms"] = {  # what the server adds to a step (sampling, HTTP, prefill turns)
        level["clients"]: round(level["itl_p50_ms"] - step[level["clients"]], 1) for level in load["levels"]}
    report["uptime_after"], report["seconds"] = uptime(), round(time.perf_counter() - started, 1)
    path = RESULTS / f"serve_load_{args.preset}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plot(report, path.with_suffix(".png"))
    print(json.dumps({"speedup": report["load"]["speedup_vs_1_client"], "engine_step_ms": step,
                      "identical": report["load"]["identical_to_sequential"],
                      "reuse": report["prefix_reuse"]["ttft_ms_steps_2_to_5_mean"],
                      "saved": report["prefix_reuse"]["prefill_tokens_saved"]}))
    return 0 if report["load"]["identical_to_sequential"] and report["prefix_reuse"]["same_text"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
