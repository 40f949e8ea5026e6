"""Multi-turn replay on one KV cache (``generate --conversation``) against transformers on every full prompt."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from trt_pipeline.errors import ConfigError
from trt_pipeline.generate import GenerateRequest, generate_conversation
from trt_pipeline.models.glm4v.messages import load_conversation, parse_messages
from trt_pipeline.models.glm4v.replay import reusable_prefix

NEW_TOKENS = 8


def png_bytes(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def conversation_file(tmp_path_factory):
    """System prompt, then three user turns with a screenshot each (data:, file:// and relative path)."""
    folder = tmp_path_factory.mktemp("conversation")
    (folder / "second.png").write_bytes(png_bytes(112, 140, 2))
    (folder / "third.png").write_bytes(png_bytes(140, 112, 3))
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(112, 112, 1)).decode()

    def user(url: str, text: str) -> dict:
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}

    messages = [
        {"role": "system", "content": "You are a phone agent. Answer with do(action=...)."},
        user(data_url, "Open Settings"),
        {"role": "assistant", "content": "<think>tap settings</think><answer>do(action=\"Tap\", element=[500, 100])</answer>"},
        user((folder / "second.png").as_uri(), "Now turn on Wi-Fi"),
        {"role": "assistant", "content": "<answer>do(action=\"Tap\", element=[200, 300])</answer>"},
        user("third.png", "Go back to the home screen"),
    ]
    path = folder / "conversation.json"
    path.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    return path


def test_messages_become_template_parts_and_images(conversation_file):
    conversation = load_conversation(conversation_file)
    assert conversation.user_turns() == [1, 3, 5]
    assert len(conversation.images) == 3 and len(set(conversation.image_keys)) == 3
    assert conversation.messages[1]["content"][0] == {"type": "image"}
    assert conversation.prefix(4).image_counts == [0, 1, 0, 1] and len(conversation.prefix(4).images) == 2


@pytest.mark.parametrize("messages, match", [
    ([], "no list of messages"),
    ([{"role": "robot", "content": "hi"}], "role one of"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "unsupported content part"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "missing.png"}}]}], "not found"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,@@"}]}], "base64"),
])
def test_bad_messages_are_refused(tmp_path, messages, match):
    with pytest.raises(ConfigError, match=match):
        parse_messages(messages, source=tmp_path / "c.json")


def test_the_reused_prefix_never_splits_an_image():
    cached = [1, 2, (9, "a"), (9, "a"), (9, "a"), 3]
    assert reusable_prefix(cached, [1, 2, (9, "a"), (9, "a"), (9, "a"), 3, 4], [(2, 5)]) == 6
    assert reusable_prefix(cached, [1, 2, (9, "a"), (9, "a"), (9, "b"), 3, 4], [(2, 5)]) == 2  # another image
    assert reusable_prefix(cached, cached, [(2, 5)]) == 5  # one token is always prefilled for its logits


@pytest.mark.parametrize("backend, chunk", [("ort", None), ("ort", 7), ("torch-export", 5)])
def test_replay_equals_transformers_on_every_full_prompt(compare_export, conversation_file, backend, chunk):
    reference = generate_conversation(GenerateRequest(compare_export, [], [], "torch", max_new_tokens=NEW_TOKENS),
                                      conversation_file)
    replay = generate_conversation(
        GenerateRequest(compare_export, [], [], backend, max_new_tokens=NEW_TOKENS, chunk_size=chunk), conversation_file)
    assert [t.token_ids for t in replay.turns] == [t.token_ids for t in reference.turns]
    assert [t.prompt_tokens for t in replay.turns] == [t.prompt_tokens for t in reference.turns]
    first, *later = replay.turns
    assert first.reused_tokens == 0
    for previous, turn in zip(replay.turns, later):
        # at least the previous prompt is kept (the recorded reply may differ from the generated one)
        assert previous.prompt_tokens <= turn.reused_tokens < turn.prompt_tokens
    assert replay.prefill_tokens_saved == sum(t.reused_tokens for t in later) > 0
