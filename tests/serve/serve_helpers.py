"""Helpers shared by the server tests (images as data URLs, an agent-style conversation)."""

from __future__ import annotations

from typing import Any

API_KEY = "test-key"
MODEL = "autoglm-phone-9b"


def png_data_url(size: tuple[int, int] = (56, 84), color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> str:
    from PIL import Image, ImageDraw

    from trt_pipeline.serve.media import encode_data_url

    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((4, 4, size[0] // 2, size[1] // 3), fill=(20, 220, 90))
    return encode_data_url(image, fmt)


def small_contract(max_batch: int) -> Any:
    """An export contract with small limits, for schedulers driven without a model."""
    from pathlib import Path

    from trt_pipeline.models.glm4v.contract import ExportContract

    return ExportContract(Path("export.json"), max_batch=max_batch, max_chunk=8, max_past=8, min_image_tokens=1,
                          max_image_tokens=4)


SYSTEM = "You are a phone agent: <think>...</think><answer>...</answer>."


def agent_messages(steps: int = 2) -> list[dict[str, Any]]:
    """An Open-AutoGLM-style conversation: system, then per step a screenshot + task, replies in between."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for step in range(steps):
        if step:
            messages.append({"role": "assistant", "content": f"<answer>do(action=Tap) {step}</answer>"})
        messages.append({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_data_url(color=(40 * step % 255, 30, 200))}},
            {"type": "text", "text": f"Open settings. Step {step + 1}."},
        ]})
    return messages
