"""Split ``<think>...</think>`` out of the reply into ``reasoning_content`` (``return_reasoning``).

Mirrors vLLM's GLM reasoning parser (``vllm/reasoning/glm4_moe_reasoning_parser.py``,
``Glm4MoeModelReasoningParser``), which GLM-4.1V deployments use:

* non-streaming: if the text holds both ``<think>`` and ``</think>``, the part between them is the
  reasoning and what follows ``</think>`` is the content (``None`` when empty); otherwise the whole
  text is content;
* streaming: deltas after ``<think>`` and before ``</think>`` are reasoning deltas, everything else
  is content; the tags themselves are not sent.

Without ``return_reasoning`` the text is returned untouched, which is what the Open-AutoGLM agent
parses (``<think>...</think><answer>...</answer>``).
"""

from __future__ import annotations

THINK_START = "<think>"
THINK_END = "</think>"


def split_reasoning(text: str) -> tuple[str | None, str | None]:
    """(reasoning, content) of a finished reply."""
    if THINK_START not in text or THINK_END not in text:
        return None, text
    before, _, after = text.partition(THINK_START)
    body = after if _ else before
    reasoning, _, content = body.partition(THINK_END)
    return reasoning, content or None


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag`` (held back)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningStream:
    """Incremental splitter: ``feed(delta)`` -> (reasoning_delta, content_delta)."""

    def __init__(self) -> None:
        self.state = "start"  # start -> reasoning -> content
        self.pending = ""

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        self.pending += delta
        reasoning, content = "", ""
        while True:
            tag = THINK_START if self.state == "start" else THINK_END if self.state == "reasoning" else None
            if tag is None:
                content += self.pending
                self.pending = ""
                break
            index = self.pending.find(tag)
            if index >= 0:
                head, self.pending = self.pending[:index], self.pending[index + len(tag):]
                if self.state == "start":
                    content += head
                    self.state = "reasoning"
                else:
                    reasoning += head
                    self.state = "content"
                continue
            keep = 0 if final else _partial_tag_suffix(self.pending, tag)
            ready, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
            if self.state == "start":
                content += ready
            else:
                reasoning += ready
            break
        return reasoning, content
