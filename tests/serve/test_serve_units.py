"""Unit tests of the server's pieces: penalties and filters, reasoning split, prefix cache, metrics,
output assembly, and the TensorRT backend refusing clearly on a machine without TensorRT/GPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


def test_penalties_follow_openai_and_vllm_formulas() -> None:
    from trt_pipeline.serve.sampling import SamplingParams, apply_penalties

    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0])
    params = SamplingParams(frequency_penalty=0.2, presence_penalty=0.5, repetition_penalty=2.0)
    out = apply_penalties(logits, params, prompt_ids=[4], output_ids=[0, 0, 1])
    # repetition (prompt + output): 0 -> 2/2, 1 -> -1*2, 4 -> 1/2; then frequency/presence over output only
    expected = torch.tensor([1.0 - 0.4 - 0.5, -2.0 - 0.2 - 0.5, 0.5, 3.0, 0.5])
    assert torch.allclose(out, expected)
    assert torch.equal(apply_penalties(logits, SamplingParams(), [4], [0, 1]), logits)


def test_top_k_top_p_and_seeded_sampling() -> None:
    from trt_pipeline.serve.sampling import Sampler, SamplingParams, filter_top_k_top_p

    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_top_k_top_p(logits, -1, 0.7)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_top_k_top_p(logits, -1, 0.1)).tolist() == [False, True, True, True]
    params = SamplingParams(temperature=1.0, seed=7)
    draws = [[Sampler(params, [])(logits, []) for _ in range(1)] for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    sampler = Sampler(SamplingParams(temperature=1.0, seed=1), [])
    counts = np.bincount([sampler(logits, []) for _ in range(2000)], minlength=4) / 2000
    assert np.allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.04)
    assert Sampler(SamplingParams(temperature=0.0, top_p=0.1), [])(torch.tensor([0.0, 5.0, 1.0]), []) == 1
    # a near-zero temperature (found by schemathesis) is greedy instead of NaN probabilities
    assert Sampler(SamplingParams(temperature=1e-300), [])(torch.tensor([0.0, 5.0, 1.0]), []) == 1
    # repetition_penalty=5e-324 (also found by schemathesis) overflows seen positive logits to +inf
    extreme = SamplingParams(temperature=0.7, repetition_penalty=5e-324, seed=0)
    assert Sampler(extreme, [1])(torch.tensor([0.0, 5.0, -1.0]), []) == 1
    assert Sampler(replace(extreme, temperature=0.0), [1])(torch.tensor([0.0, 5.0, -1.0]), []) == 1


def test_reasoning_split_like_vllm_glm_parser() -> None:
    from trt_pipeline.serve.reasoning import ReasoningStream, split_reasoning

    assert split_reasoning("<think>look</think><answer>do(Tap)</answer>") == ("look", "<answer>do(Tap)</answer>")
    assert split_reasoning("<think>only thinking</think>") == ("only thinking", None)
    assert split_reasoning("no tags") == (None, "no tags")
    assert split_reasoning("<think>unfinished") == (None, "<think>unfinished")
    text = "<think>look at the screen</think><answer>do(Tap)</answer>"
    for size in (1, 2, 3, 7):
        stream, reasoning, content = ReasoningStream(), "", ""
        for i in range(0, len(text), size):
            r, c = stream.feed(text[i:i + size])
            reasoning, content = reasoning + r, content + c
        r, c = stream.feed("", final=True)
        assert (reasoning + r, content + c) == ("look at the screen", "<answer>do(Tap)</answer>")


@pytest.mark.parametrize("kind", ["concat", "inplace"])
def test_prefix_cache_longest_prefix_and_lru(kind: str) -> None:
    from trt_pipeline.models.glm4v.io_spec import KvLayout
    from trt_pipeline.serve.prefix_cache import PrefixCache, common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([1], [1, 2]) == 1
    layout = KvLayout(kind, 6, 4)
    heads = np.arange(2 * 3 * 5 * 4, dtype=np.float32).reshape(1, 6, 5, 4)  # [1, kv_heads, positions, head_dim]
    kv = [np.ascontiguousarray(layout.from_heads(heads))]
    cache = PrefixCache(max_entries=2)
    cache.store([1, 2, 3, 4, 5], kv, layout)
    cache.store([1, 9, 9, 9, 9], kv, layout)
    entry, length = cache.lookup([1, 2, 3, 7])
    assert length == 3 and entry is not None and entry.sliced(3)[0].shape == layout.shape(1, 3)
    assert np.array_equal(layout.to_heads(entry.sliced(3)[0]), heads[:, :, :3])  # the first 3 positions
    cache.store([7, 7, 7, 7, 7], kv, layout)  # evicts the least recently used ([1, 9, ...])
    assert cache.lookup([1, 9, 9])[1] == 1 and cache.lookup([1, 2, 3])[1] == 3
    assert PrefixCache(max_entries=0).lookup([1])[1] == 0


def test_metrics_prometheus_text() -> None:
    from trt_pipeline.serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    metrics.record_prefill(100, 60)
    metrics.record_token(True, 0.02)
    metrics.record_token(False, 0.004)
    metrics.record_request("stop")
    text = metrics.render()
    assert 'autoglm_requests_total{outcome="stop"} 1' in text
    assert "autoglm_prefix_cache_saved_tokens_total 60" in text
    assert 'autoglm_time_to_first_token_seconds_bucket{le="0.025"} 1' in text
    assert 'autoglm_time_to_first_token_seconds_bucket{le="0.01"} 0' in text
    assert 'autoglm_inter_token_latency_seconds_bucket{le="+Inf"} 1' in text
    assert "autoglm_generation_tokens_total 2" in text


class _CharTokenizer:
    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def test_output_assembler_stop_strings_never_leak() -> None:
    from trt_pipeline.serve.output import TextAssembler

    ids = [ord(c) for c in "hello</answer>tail"]
    assembler = TextAssembler(_CharTokenizer(), stop=["</answer>"])
    sent = ""
    for n in range(1, len(ids) + 1):
        sent += assembler.update(ids[:n])
        if assembler.stopped:
            break
    assert sent == "hello" and assembler.stopped
    plain = TextAssembler(_CharTokenizer())
    assert "".join(plain.update(ids[:n]) for n in range(1, len(ids) + 1)) == "hello</answer>tail"


def test_trt_backend_refuses_without_tensorrt(tiny_export: Path) -> None:
    from trt_pipeline.errors import TensorRTUnavailableError
    from trt_pipeline.serve.engine import RUNNER_FACTORIES, ServeEngine
    from trt_pipeline.serve.model import ServeConfig, preflight

    assert set(RUNNER_FACTORIES) == {"ort", "trt", "torch"}
    with pytest.raises(TensorRTUnavailableError):
        preflight(ServeConfig(out=tiny_export, backend="trt", precision="fp16"))
    with pytest.raises(TensorRTUnavailableError):
        ServeEngine.load(tiny_export, "trt", "fp16")


def test_cli_serve_trt_exits_with_the_tensorrt_code(tiny_export: Path) -> None:
    from typer.testing import CliRunner

    from trt_pipeline.cli import app
    from trt_pipeline.errors import TensorRTUnavailableError

    result = CliRunner().invoke(app, ["serve", str(tiny_export), "--backend", "trt"])
    assert result.exit_code == TensorRTUnavailableError.exit_code
    result = CliRunner().invoke(app, ["serve", str(tiny_export), "--backend", "tpu"])
    assert result.exit_code == 2 and "unknown backend" in result.output


def _events(*texts: str) -> Any:
    import asyncio

    from trt_pipeline.serve.scheduler import DoneEvent, TextEvent

    queue: asyncio.Queue = asyncio.Queue()
    for text in texts:
        queue.put_nowait(TextEvent(text))
    queue.put_nowait(DoneEvent("stop", prompt_tokens=10, completion_tokens=len(texts), cached_tokens=4))
    return queue


def test_return_reasoning_non_streaming_and_streaming() -> None:
    import asyncio
    import json

    from trt_pipeline.serve.completion import collect, stream_chunks

    pieces = ("<thi", "nk>tap the ", "icon</th", "ink><answer>do(Tap)", "</answer>")
    reply = asyncio.run(collect(_events(*pieces), "m", return_reasoning=True))
    message = reply.choices[0].message
    assert (message.reasoning_content, message.content) == ("tap the icon", "<answer>do(Tap)</answer>")
    assert reply.usage.prompt_tokens_details == {"cached_tokens": 4} and reply.usage.total_tokens == 15
    plain = asyncio.run(collect(_events(*pieces), "m", return_reasoning=False))
    assert plain.choices[0].message.content == "".join(pieces) and plain.choices[0].message.reasoning_content is None

    class Request:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    async def lines() -> list[str]:
        request = Request()
        out = [line async for line in stream_chunks(request, _events(*pieces), "m", True, True, lambda: None)]
        assert request.cancelled  # the slot is always released
        return out

    sse = asyncio.run(lines())
    assert sse[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(line[6:]) for line in sse[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "tap the icon"
    assert "".join(d.get("content", "") for d in deltas) == "<answer>do(Tap)</answer>"
    assert [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(pieces)


def test_template_kwargs_reach_the_chat_template(tiny_export: Path) -> None:
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.serve.chat import MediaPolicy, build_prompt
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    processing = Glm4vProcessing(tiny_export / "hf")
    processing.tokenizer.chat_template = (
        "{% for m in messages %}{{ m.content }}{% endfor %}{% if enable_thinking is defined and not enable_thinking %}"
        "<nothink>{% endif %}{% if flag %}FLAG{% endif %}")
    messages = [{"role": "user", "content": "hi"}]

    def text(**extra: Any) -> str:
        request = ChatCompletionRequest(model="m", messages=messages, **extra)
        return processing.tokenizer.decode(build_prompt(processing, request, MediaPolicy()).token_ids)

    assert text() == "hi"
    assert text(enable_thinking=False) == "hi<nothink>"
    assert text(chat_template_kwargs={"flag": True, "enable_thinking": True}, enable_thinking=False) == "hi<nothink>FLAG"


def test_a_failing_request_gets_an_error_event_and_others_continue() -> None:
    from types import SimpleNamespace

    from serve_helpers import small_contract

    from trt_pipeline.serve.metrics import ServeMetrics
    from trt_pipeline.serve.scheduler import ErrorEvent, GenerationRequest, Scheduler

    class BrokenEngine:
        contract = small_contract(max_batch=2)

        def embed(self, ids: Any) -> Any:
            raise RuntimeError("engine exploded")

    events: list[Any] = []
    metrics = ServeMetrics()
    scheduler = Scheduler(BrokenEngine(), [0], metrics)  # type: ignore[arg-type]
    prompt = SimpleNamespace(token_ids=[1, 2, 3], key=[1, 2, 3], image_runs=[])
    request = GenerationRequest(prompt, sampler=None, max_tokens=4, assembler=None, emit=events.append)  # type: ignore[arg-type]
    scheduler.submit(request)
    scheduler._admit()
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    # the client learns what failed, not the engine's own text (it may name server files: that goes to the log)
    assert events[0].message == "prefill failed: RuntimeError (details in the server log)"
    assert scheduler.running == [] and not scheduler.waiting
    assert 'autoglm_requests_total{outcome="error"} 1' in metrics.render()


@pytest.fixture(scope="module")
def fixture_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The byte-level BPE tokenizer of the checkpoint fixtures (GLM special tokens), as transformers loads it."""
    from transformers import AutoTokenizer

    from trt_pipeline.fixtures.tokenizer_factory import write_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(out, "tiny")
    return AutoTokenizer.from_pretrained(str(out))


def test_incremental_detokenization_equals_the_full_decode(fixture_tokenizer: Any) -> None:
    """Token by token, the deltas add up to the full decode at every step where it is complete text,
    including Chinese characters whose UTF-8 bytes are split over several byte-level tokens, special
    tokens in the middle (skipped) and a reply cut inside a character (the full decode's U+FFFD at the end)."""
    from trt_pipeline.serve.output import IncrementalDetokenizer, TextAssembler

    tokenizer = fixture_tokenizer
    texts = ["<think>打开设置</think><answer>do(action=\"Tap\", element=[500, 120])</answer>",
             "点击 “微信” 图标。 Then swipe up  twice — 然后返回主屏幕 🙂", "  leading spaces\n\nand\ttabs "]
    special = tokenizer.convert_tokens_to_ids("<|user|>")
    split_chars = 0
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        ids = ids[:5] + [special] + ids[5:]
        split_chars += sum(len(tokenizer.decode([i]).strip("\ufffd")) == 0 for i in ids)
        for cut in (len(ids), len(ids) - 1):  # the whole reply, and one cut inside its last character
            detok, sent = IncrementalDetokenizer(tokenizer), ""
            for n in range(1, cut + 1):
                sent += detok.update(ids[:n], final=n == cut)
                full = tokenizer.decode(ids[:n], skip_special_tokens=True)
                if not full.endswith("\ufffd"):
                    assert sent == full, (n, sent, full)
            assert sent == tokenizer.decode(ids[:cut], skip_special_tokens=True)
        assembler = TextAssembler(tokenizer, stop=["</think>"])
        streamed = ""
        for n in range(1, len(ids) + 1):
            streamed += assembler.update(ids[:n], final=n == len(ids))
            if assembler.stopped:  # the scheduler finishes the request here
                break
        full = tokenizer.decode(ids, skip_special_tokens=True)
        assert streamed == (full[:full.index("</think>")] if "</think>" in full else full)
    assert split_chars >= 10, "the texts must split multi-byte characters over tokens"


def test_incremental_detokenization_decodes_a_short_window(fixture_tokenizer: Any) -> None:
    """Per token, the decoded ids stay a few tokens long however long the reply grows (the old full
    re-decode was O(reply) per token)."""
    from trt_pipeline.serve.output import IncrementalDetokenizer

    class Counting:
        def __init__(self) -> None:
            self.decoded: list[int] = []

        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            self.decoded.append(len(ids))
            return fixture_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = fixture_tokenizer.encode("open the settings app and turn on wifi " * 40, add_special_tokens=False)
    counting = Counting()
    detok = IncrementalDetokenizer(counting)
    for n in range(1, len(ids) + 1):
        detok.update(ids[:n])
    assert len(ids) > 200 and max(counting.decoded) <= 4


def test_client_errors_never_name_server_paths() -> None:
    from trt_pipeline.errors import OnnxModelError, ShapeError
    from trt_pipeline.serve.errors import APIError, public_message, redact_paths

    assert redact_paths("ONNX Runtime cannot load /srv/m/onnx/fp32/decoder.onnx: bad (file: ~/x/export.json)") == \
        "ONNX Runtime cannot load <path>: bad (file: <path>)"
    for kept in ("see GET /v1/models.", "data:image/png;base64,AAA/BBB", "ratio 1/2, a/b", "http://example.com/a/b.png"):
        assert redact_paths(kept) == kept
    error = OnnxModelError("cannot load /srv/m/decoder.onnx", path="/srv/m/decoder.onnx", hint="re-export /srv/m")
    assert public_message(error) == "cannot load <path> re-export <path>"
    assert public_message(KeyError("/srv/m/secret")) == "KeyError (details in the server log)"
    refusal = ShapeError("the batch is 9, but the export serves at most 8.", path="/srv/m/export.json")
    assert public_message(refusal) == "the batch is 9, but the export serves at most 8."
    assert APIError(500, "failed in /srv/m/onnx").body()["error"]["message"] == "failed in <path>"


def test_incremental_penalties_equal_the_reference_formula() -> None:
    """The sampler's running counts give bit-identical penalised logits to :func:`apply_penalties`
    (the formula the penalty tests check against transformers), step by step over a growing reply."""
    from trt_pipeline.serve.sampling import SamplingParams, TokenCounts, apply_penalties

    rng = np.random.default_rng(0)
    for params in (SamplingParams(frequency_penalty=0.2), SamplingParams(presence_penalty=-1.5, frequency_penalty=2.0),
                   SamplingParams(repetition_penalty=1.3, frequency_penalty=0.2), SamplingParams(repetition_penalty=0.7),
                   SamplingParams()):
        prompt = rng.integers(0, 50, 30).tolist()
        counts, output = TokenCounts(params, prompt), []
        for _step in range(40):
            logits = torch.from_numpy(rng.standard_normal(64).astype(np.float32) * 4)
            assert torch.equal(counts.apply(logits, output), apply_penalties(logits, params, prompt, output))
            output.append(int(rng.integers(0, 64)))


def test_stream_sends_queued_tokens_as_one_chunk_and_arriving_ones_singly() -> None:
    """Tokens already waiting when the event loop gets to the stream go out in one chunk (the loop fell
    behind); tokens that arrive one by one go out one by one. The text is the same either way."""
    import asyncio
    import json

    from trt_pipeline.serve.completion import stream_chunks
    from trt_pipeline.serve.scheduler import DoneEvent, ErrorEvent, TextEvent

    class Request:
        def cancel(self) -> None:
            pass

    async def run(batches: list[list[Any]]) -> list[dict]:
        queue: asyncio.Queue = asyncio.Queue()

        async def produce() -> None:
            for batch in batches:
                for event in batch:
                    queue.put_nowait(event)
                await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce())
        lines = [line async for line in stream_chunks(Request(), queue, "m", False, False, lambda: None)]
        await producer
        return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]

    done = DoneEvent("length", 3, 4, 0)
    queued = asyncio.run(run([[TextEvent("a"), TextEvent("b"), TextEvent("c")], [TextEvent("d"), done]]))
    assert [c["choices"][0]["delta"].get("content") for c in queued] == ["", "abc", "d", None]
    single = asyncio.run(run([[TextEvent("a")], [TextEvent("b")], [TextEvent("c")], [done]]))
    assert [c["choices"][0]["delta"].get("content") for c in single] == ["", "a", "b", "c", None]
    failed = asyncio.run(run([[TextEvent("a"), ErrorEvent("generation failed: RuntimeError")]]))
    assert failed[1]["choices"][0]["delta"]["content"] == "a" and failed[2]["error"]["code"] == "internal_error"
