"""Token ids -> text deltas for one request: incremental detokenization and stop strings.

Decoding the whole reply on every token costs O(reply) per token, O(reply^2) per request, in the
scheduler thread that also drives the decode steps. :class:`IncrementalDetokenizer` decodes only a
short window instead, the scheme of Hugging Face TGI's ``decode_token`` / vLLM's
``detokenize_incrementally`` and ``TextStreamer``'s offsets: the new text is
``decode(ids[prefix:]) - decode(ids[prefix:read])``, where ``read`` is how far the text was already
returned and ``prefix`` a few tokens earlier (so a tokenizer's leading-space and merge rules see
the same context as in the full decode). Byte-level BPE pieces that end inside a UTF-8 character
decode to U+FFFD; such text is held back until the character completes (at the end of the reply
it is returned as is, as the full decode would). ``skip_special_tokens=True``, like ``generate``.

Text that could be the start of a stop string is held back too, so a stop string never reaches
the client (OpenAI semantics: the returned text excludes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """New text per appended token id, equal in sum to ``tokenizer.decode(all ids)`` (module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.prefix = 0  # first id of the decode window
        self.read = 0  # ids whose text was returned

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def update(self, token_ids: Sequence[int], final: bool = False) -> str:
        """Text of ``token_ids[read:]`` (the ids of every earlier call plus the new ones)."""
        before = self._decode(token_ids[self.prefix:self.read])
        window = self._decode(token_ids[self.prefix:])
        if window.endswith(REPLACEMENT) and not final:
            return ""  # an unfinished UTF-8 character: wait for its next byte(s)
        if not window.startswith(before):  # a tokenizer that rewrote earlier text: emit what it adds
            before = window[:len(before)]
        self.prefix, self.read = self.read, len(token_ids)
        return window[len(before):]


class TextAssembler:
    """Deltas for the client: detokenized text minus anything that is, or may become, a stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.sent = 0  # characters already returned
        self.text = ""
        self.stopped = False

    def update(self, token_ids: Sequence[int], final: bool = False) -> str:
        """New text since the last call; sets ``stopped`` when a stop string appeared."""
        self.text += self.detokenizer.update(token_ids, final)
        cut = self._first_stop(self.text)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
        text = self.text
        ready = len(text) if (final or self.stopped) else max(self.sent, len(text) - self.hold)
        delta = text[self.sent:ready]
        self.sent = ready
        return delta

    def _first_stop(self, text: str) -> int | None:
        if not self.stop:
            return None
        start = max(0, self.sent - self.hold - 1)
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None
