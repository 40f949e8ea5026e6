"""Token ids -> text deltas for one request: incremental detokenization and stop strings.

Decoding the whole reply each step (``skip_special_tokens=True``, like ``generate``) and sending
the new suffix is exact for any tokenizer: byte-level BPE pieces that end inside a UTF-8 character
decode to U+FFFD and are held back until the character completes. Text that could be the start of
a stop string is held back too, so a stop string never reaches the client (OpenAI semantics: the
returned text excludes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextAssembler:
    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.sent = 0  # characters already returned
        self.text = ""
        self.stopped = False

    def update(self, token_ids: Sequence[int], final: bool = False) -> str:
        """New text since the last call; sets ``stopped`` when a stop string appeared."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return ""
        cut = self._first_stop(text)
        if cut is not None:
            text, self.stopped = text[:cut], True
        self.text = text
        ready = len(text) if (final or self.stopped) else max(self.sent, len(text) - self.hold)
        delta = text[self.sent:ready]
        self.sent = ready
        return delta

    def _first_stop(self, text: str) -> int | None:
        start = max(0, self.sent - self.hold - 1)
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None
