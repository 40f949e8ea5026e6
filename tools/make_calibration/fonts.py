"""Font choice for the synthetic screens: the first installed CJK font, else DejaVu, else PIL's own.

Why a search list and not one bundled font: the font is not redistributed with the project (only
pictures of rendered text are). Byte-identical screens need the same font files as the committed
set (Noto Sans CJK SC from Debian's ``fonts-noto-cjk``); the fallbacks keep the tool usable
elsewhere, drawing Chinese screens with English UI text rather than tofu boxes.
"""

from __future__ import annotations

import glob
import os

from PIL import ImageFont

CJK_CANDIDATES: list[tuple[str, str | None]] = [
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
     "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    ("/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Regular.ttc",
     "/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Bold.ttc"),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", None),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", None),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", None),
]
LATIN_CANDIDATES: list[tuple[str, str | None]] = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
     "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
]


def _ttc_index(path: str) -> int:
    """Index of the Simplified-Chinese face inside a .ttc collection (0 if none is labelled)."""
    if not path.endswith(".ttc"):
        return 0
    for i in range(16):
        try:
            name = ImageFont.truetype(path, 12, index=i).getname()[0]
        except OSError:
            break
        if name.endswith(" SC") or "SC" in name.split():
            return i
    return 0


class Fonts:
    """Picks the best installed font once and caches sized instances.

    ``cjk`` tells the renderers whether Chinese screen text can be drawn; if not, zh screens are
    drawn with their English strings rather than as tofu boxes.
    """

    def __init__(self, latin_only: bool = False, builtin: bool = False):
        self.regular: str | None = None
        self.bold: str | None = None
        self.cjk = False
        cands = [] if builtin else ([] if latin_only else self._cjk_candidates()) + LATIN_CANDIDATES
        for reg, bold in cands:
            if os.path.exists(reg):
                self.regular = reg
                self.bold = bold if bold and os.path.exists(bold) else reg
                self.cjk = reg not in [c[0] for c in LATIN_CANDIDATES]
                break
        self.index_r = _ttc_index(self.regular) if self.regular else 0
        self.index_b = _ttc_index(self.bold) if self.bold else 0
        self._cache: dict[tuple[int, bool], ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}
        self.truetype = self.regular is not None or self._default_is_truetype()

    @staticmethod
    def _cjk_candidates() -> list[tuple[str, str | None]]:
        found = list(CJK_CANDIDATES)
        for pattern in ("/usr/share/fonts/**/*CJK*Regular*", "/usr/share/fonts/**/*wqy*",
                        "/usr/share/fonts/**/*SourceHanSans*"):
            for p in sorted(glob.glob(pattern, recursive=True)):
                if p.endswith((".ttc", ".ttf", ".otf")):
                    found.append((p, None))
        return found

    @staticmethod
    def _default_is_truetype() -> bool:
        try:
            return isinstance(ImageFont.load_default(size=12), ImageFont.FreeTypeFont)
        except TypeError:  # Pillow < 10.1
            return False

    def describe(self) -> str:
        if self.regular:
            name = ImageFont.truetype(self.regular, 12, index=self.index_r).getname()
            return f"{name[0]} ({self.regular}){' [CJK]' if self.cjk else ' [Latin only]'}"
        return "PIL built-in default font [Latin only]"

    def get(self, size: int, bold: bool = False):
        size = max(6, int(size))
        key = (size, bold)
        if key not in self._cache:
            if self.regular:
                path, idx = (self.bold, self.index_b) if bold else (self.regular, self.index_r)
                self._cache[key] = ImageFont.truetype(path, size, index=idx)
            else:
                try:
                    self._cache[key] = ImageFont.load_default(size=size)
                except TypeError:
                    self._cache[key] = ImageFont.load_default()
        return self._cache[key]

