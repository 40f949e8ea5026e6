"""The fixed UI vocabulary of ``ui.yaml``: settings rows, home-screen apps, Latin fallbacks.

Loaded once at import: every renderer shares it, and it is data, not drawing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

UI_FILE = Path(__file__).resolve().parent / "ui.yaml"


@dataclass(frozen=True)
class App:
    """A home-screen app icon: names, icon colour, pictogram and the letter drawn for ``letter``."""

    zh: str
    en: str
    color: str
    glyph: str = "letter"
    mark_zh: str = ""
    mark_en: str = ""


def _load() -> dict:
    with open(UI_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


_UI = _load()
SETTINGS_ROWS: list[tuple[str, ...] | None] = [None if r is None else tuple(r) for r in _UI["settings_rows"]]
"""(key, zh, en, icon colour, glyph, "toggle" | "chev"); None is a section gap."""
APPS_ZH: list[App] = [App(*a) for a in _UI["apps_zh"]]
APPS_EN: list[App] = [App(*a) for a in _UI["apps_en"]]
LATIN_TEXT: dict[str, str] = dict(_UI["latin_text"])
LATIN_FRAGMENTS: list[tuple[str, str]] = [(a, b) for a, b in _UI["latin_fragments"]]
