"""The server through the official ``openai`` client and LangChain, against transformers and ``generate``.

Tiny checkpoint, ORT backend (fp32). Greedy replies must equal transformers' ``generate`` and
``autoglm-trt generate --backend ort`` token for token (compared as text, which is what the client
sees); ``frequency_penalty`` must equal a reference penalty applied over transformers' logits.
"""

from __future__ import annotations

import base64
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_helpers import MODEL, agent_messages, png_data_url

MAX_TOKENS = 16


@pytest.fixture(scope="module")
def hf_model(tiny_checkpoint: Path) -> Any:
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def processing(tiny_export: Path) -> Any:
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    return Glm4vProcessing(tiny_export / "hf")


def hf_inputs(processing: Any, messages: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """transformers inputs for the exact prompt the server builds (same template, same placeholders)."""
    from trt_pipeline.serve.chat import MediaPolicy, build_prompt
    from trt_pipeline.serve.protocol import ChatCompletionRequest

    prompt = build_prompt(processing, ChatCompletionRequest(model=MODEL, messages=messages), MediaPolicy())
    ids = torch.tensor([prompt.token_ids])
    mm = torch.zeros_like(ids)
    for start, end in prompt.image_runs:
        mm[0, start:end] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
            "pixel_values": prompt.pixel_values, "image_grid_thw": prompt.image_grid_thw}


def hf_greedy(model: Any, processing: Any, messages: list[dict[str, Any]], max_tokens: int) -> str:
    inputs = hf_inputs(processing, messages)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=processing.eos_token_ids, pad_token_id=processing.pad_token_id)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    return processing.decode(new)


def reference_penalised(model: Any, processing: Any, messages: list[dict[str, Any]], max_tokens: int,
                        frequency: float, presence: float = 0.0) -> list[int]:
    """OpenAI's penalty formula over transformers' full-forward logits, greedy: the reference."""
    inputs = hf_inputs(processing, messages)
    output: list[int] = []
    for _ in range(max_tokens):
        ids = torch.cat([inputs["input_ids"], torch.tensor([output], dtype=torch.long)], dim=1)
        mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros((1, len(output)), dtype=torch.long)], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                           pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).logits[0, -1]
        for token in set(output):
            count = output.count(token)
            logits[token] -= frequency * count + presence * (count > 0)
        token = int(logits.argmax())
        output.append(token)
        if token in processing.eos_token_ids:
            break
    return output


def chat(server: Any, messages: list[dict[str, Any]], stream: bool = False, **kwargs: Any) -> tuple[str, Any]:
    client = server.client()
    params = {"model": MODEL, "messages": messages, "temperature": 0.0, "max_tokens": MAX_TOKENS, **kwargs}
    if not stream:
        response = client.chat.completions.create(**params)
        return response.choices[0].message.content or "", response
    text, finish = "", None
    for chunk in client.chat.completions.create(stream=True, **params):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_greedy_single_turn_equals_generate_ort_and_transformers(server: Any, tiny_export: Path, tmp_path: Path,
                                                                  hf_model: Any, processing: Any) -> None:
    from trt_pipeline.generate import GenerateRequest, generate

    url = png_data_url()
    image = tmp_path / "screen.png"
    image.write_bytes(base64.b64decode(url.split(",", 1)[1]))
    prompt = "Open the settings app."
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": prompt}]}]
    text, response = chat(server, messages)
    by_generate = generate(GenerateRequest(tiny_export, [prompt], [[image]], "ort", "fp32", MAX_TOKENS))
    assert text == by_generate.texts[0]
    assert text == hf_greedy(hf_model, processing, messages, MAX_TOKENS)
    assert response.usage.completion_tokens == len(by_generate.token_ids[0])
    assert response.usage.prompt_tokens == len(hf_inputs(processing, messages)["input_ids"][0])
    assert response.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_agent_conversation_greedy_equals_transformers(server: Any, hf_model: Any, processing: Any, stream: bool) -> None:
    messages = agent_messages(2)
    text, _ = chat(server, messages, stream=stream, top_p=0.85)
    assert text and text == hf_greedy(hf_model, processing, messages, MAX_TOKENS)


def test_frequency_penalty_equals_reference(server: Any, hf_model: Any, processing: Any) -> None:
    messages = agent_messages(2)
    reference = reference_penalised(hf_model, processing, messages, MAX_TOKENS, frequency=0.2)
    greedy = hf_greedy(hf_model, processing, messages, MAX_TOKENS)
    assert processing.decode(reference) != greedy, "the penalty must change this reply, or the test proves nothing"
    text, response = chat(server, messages, frequency_penalty=0.2, top_p=0.85)
    assert text == processing.decode(reference)
    assert response.usage.completion_tokens == len(reference)
    streamed, _ = chat(server, messages, stream=True, frequency_penalty=0.2)
    assert streamed == text


def test_langchain_streaming_gets_the_same_text(server: Any) -> None:
    from langchain_openai import ChatOpenAI
    from serve_helpers import API_KEY

    messages = agent_messages(2)
    expected, _ = chat(server, messages)
    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, model=MODEL, streaming=True, temperature=0,
                     max_tokens=MAX_TOKENS, extra_body={"enable_thinking": True, "return_reasoning": True})
    pieces = [chunk.content for chunk in llm.stream(messages)]
    assert "".join(str(p) for p in pieces) == expected


def test_concurrent_streaming_clients_equal_sequential_runs(server: Any) -> None:
    conversations = [agent_messages(1 + i % 2) for i in range(8)]
    for i, messages in enumerate(conversations):
        messages[-1]["content"][1]["text"] += f" Client {i}."
    sequential = [chat(server, m, stream=True)[0] for m in conversations]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_runs = list(pool.map(lambda m: chat(server, m, stream=True)[0], conversations))
    assert concurrent_runs == sequential
    assert len(set(sequential)) > 1


def test_prefix_reuse_equals_from_scratch(server: Any, server_no_reuse: Any) -> None:
    step1 = agent_messages(1)
    text1, _ = chat(server, step1)
    step2 = step1 + [{"role": "assistant", "content": text1},
                     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(color=(9, 9, 9))}},
                                                  {"type": "text", "text": "Step 3."}]}]
    reused, response = chat(server, step2)
    scratch, scratch_response = chat(server_no_reuse, step2)
    assert reused == scratch
    assert response.usage.prompt_tokens_details.cached_tokens > 0
    assert scratch_response.usage.prompt_tokens_details.cached_tokens == 0
    assert response.usage.prompt_tokens == scratch_response.usage.prompt_tokens


def test_five_step_agent_replay_reuses_the_prefix_and_equals_from_scratch(server: Any, server_no_reuse: Any) -> None:
    """Open-AutoGLM's pattern: every step resends the conversation with the previous screenshot dropped
    (its text kept) and a new one added; each reply equals the no-reuse server's, steps 2-5 reuse KV."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a phone agent."}]
    previous_cached = 0
    for step in range(5):
        if step:
            messages[-2]["content"] = [part for part in messages[-2]["content"] if part["type"] == "text"]
        messages.append({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_url(color=(50 * step, 120, 10))}},
            {"type": "text", "text": f"Next {step}."}]})
        reused, response = chat(server, messages, max_tokens=4)  # 5 steps fit the tiny export's 130 tokens
        scratch, scratch_response = chat(server_no_reuse, messages, max_tokens=4)
        assert reused == scratch, step
        assert scratch_response.usage.prompt_tokens_details.cached_tokens == 0
        cached = response.usage.prompt_tokens_details.cached_tokens
        if step:  # the system prompt and the earlier turns come from the cache, more at every step
            assert previous_cached < cached < response.usage.prompt_tokens, (step, cached)
        previous_cached = cached
        messages.append({"role": "assistant", "content": reused})
