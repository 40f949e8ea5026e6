"""Chinese-text helpers: CJK detection, line-break rule, and the Latin fallback for Chinese strings.

The fallback exists for machines without a CJK font: screens then show readable English stand-ins
(from ``ui.yaml``) instead of tofu boxes. It never affects prompts, which are text, not pixels.
"""

from __future__ import annotations

import re

from .vocab import LATIN_FRAGMENTS, LATIN_TEXT

_CJK = r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]"

NO_LINE_START = set("，。、；：？！）》」』”’,.;:?!)")
"""Closing punctuation that must not start a line (CJK line-breaking rule)."""


def has_cjk(s: str) -> bool:
    return re.search(_CJK, s) is not None


def latin(txt: str) -> str:
    """English stand-in for a Chinese string (fallback mode only); unknown CJK characters are dropped."""
    if txt in LATIN_TEXT:
        return LATIN_TEXT[txt]
    for a, b in LATIN_FRAGMENTS:
        txt = txt.replace(a, b)
    return re.sub(_CJK, "", txt)
