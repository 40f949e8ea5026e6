"""The drawing context every renderer uses: a box on the image, measured in dp.

Why dp: one renderer serves 320- to 1024-pixel-wide screens. Renderers place things in
density-independent units inside a box; :class:`Ctx` converts to pixels (with 2x supersampling,
see ``generate.SS``) and offers the primitives (rectangles, text with ellipsis and CJK line
breaking, photo thumbnails, gradients, shadows).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFilter

from .fonts import Fonts
from .text import NO_LINE_START, has_cjk, latin

RGB = tuple[int, int, int]


def hexc(h: str) -> RGB:
    h = h.lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3))  # type: ignore[return-value]


WHITE, BLACK = (255, 255, 255), (0, 0, 0)
TEXT, TEXT2, TEXT3 = hexc("#1F1F1F"), hexc("#5F6368"), hexc("#9AA0A6")
DIVIDER = hexc("#E6E6E6")


@dataclass
class Ctx:
    img: Image.Image
    fonts: Fonts
    lang: str  # language the screen text is drawn in ("zh" only when a CJK font exists)
    rng: random.Random
    photos: dict[str, Image.Image]
    box: tuple[int, int, int, int]  # pixel box on img
    s: float  # pixels per dp
    clock: str = "9:41"  # status-bar time
    battery: int = 86  # status-bar battery percentage
    d: ImageDraw.ImageDraw = field(init=False)

    def __post_init__(self):
        self.d = ImageDraw.Draw(self.img)

    # geometry -------------------------------------------------------------------------------
    @property
    def W(self) -> float:
        return (self.box[2] - self.box[0]) / self.s

    @property
    def H(self) -> float:
        return (self.box[3] - self.box[1]) / self.s

    def X(self, v: float) -> int:
        return int(round(self.box[0] + v * self.s))

    def Y(self, v: float) -> int:
        return int(round(self.box[1] + v * self.s))

    def P(self, v: float) -> int:
        return max(1, int(round(v * self.s)))

    def sub(self, x: float, y: float, w: float, h: float) -> "Ctx":
        return Ctx(self.img, self.fonts, self.lang, self.rng, self.photos,
                   (self.X(x), self.Y(y), self.X(x + w), self.Y(y + h)), self.s, self.clock, self.battery)

    def t(self, zh: str, en: str) -> str:
        return zh if self.lang == "zh" else en

    # primitives -----------------------------------------------------------------------------
    def rect(self, x, y, w, h, fill=None, r=0.0, outline=None, width=1.0):
        xy = (self.X(x), self.Y(y), self.X(x + w) - 1, self.Y(y + h) - 1)
        if r > 0:
            self.d.rounded_rectangle(xy, radius=self.P(r), fill=fill, outline=outline,
                                     width=self.P(width) if outline else 0)
        else:
            self.d.rectangle(xy, fill=fill, outline=outline, width=self.P(width) if outline else 0)

    def circle(self, cx, cy, r, fill=None, outline=None, width=1.0):
        self.d.ellipse((self.X(cx - r), self.Y(cy - r), self.X(cx + r), self.Y(cy + r)),
                       fill=fill, outline=outline, width=self.P(width) if outline else 0)

    def ellipse(self, x, y, w, h, fill=None, outline=None, width=1.0):
        self.d.ellipse((self.X(x), self.Y(y), self.X(x + w), self.Y(y + h)), fill=fill,
                       outline=outline, width=self.P(width) if outline else 0)

    def line(self, pts, fill, width=1.0):
        self.d.line([(self.X(x), self.Y(y)) for x, y in pts], fill=fill, width=self.P(width),
                    joint="curve")

    def poly(self, pts, fill=None, outline=None):
        self.d.polygon([(self.X(x), self.Y(y)) for x, y in pts], fill=fill, outline=outline)

    def arc(self, cx, cy, r, start, end, fill, width=1.0):
        self.d.arc((self.X(cx - r), self.Y(cy - r), self.X(cx + r), self.Y(cy + r)), start, end,
                   fill=fill, width=self.P(width))

    def font(self, size: float, bold: bool = False):
        return self.fonts.get(size * self.s, bold)

    def tw(self, txt: str, size: float, bold: bool = False) -> float:
        return self.d.textlength(txt, font=self.font(size, bold)) / self.s

    def text(self, x, y, txt, size=14, fill=TEXT, bold=False, anchor="la", max_w=None):
        """Draw text at dp (x, y); ``max_w`` truncates with an ellipsis like Android does."""
        if not self.fonts.cjk and has_cjk(txt):
            txt = latin(txt)
        if max_w is not None and self.tw(txt, size, bold) > max_w:
            ell = "…" if self.fonts.truetype else "..."
            while txt and self.tw(txt + ell, size, bold) > max_w:
                txt = txt[:-1]
            txt = txt.rstrip() + ell
        self.d.text((self.X(x), self.Y(y)), txt, font=self.font(size, bold), fill=fill,
                    anchor=anchor)
        return self.tw(txt, size, bold)

    def wrap(self, txt: str, size: float, max_w: float, bold: bool = False) -> list[str]:
        """Greedy line wrap: by words for spaced text, by characters for CJK."""
        if not self.fonts.cjk and has_cjk(txt):
            txt = latin(txt)
        lines: list[str] = []
        for para in txt.split("\n"):
            tokens = re.findall(r"\S+\s*", para) if " " in para and not has_cjk(para) else list(para)
            cur = ""
            for tok in tokens:
                # no closing punctuation at the start of a line (CJK line-breaking rule)
                if cur and tok not in NO_LINE_START and self.tw(cur + tok.rstrip(), size, bold) > max_w:
                    lines.append(cur.rstrip())
                    cur = tok.lstrip() if tok.strip() else ""
                else:
                    cur += tok
            lines.append(cur.rstrip())
        return lines

    def paste_photo(self, name: str, x, y, w, h, r=0.0, focus=(0.5, 0.5), zoom=1.0):
        """Crop-to-fill a photo into a dp box (optionally rounded), like an image thumbnail."""
        src = self.photos[name]
        pw, ph = self.P(w), self.P(h)
        sw, sh = src.size
        scale = max(pw / sw, ph / sh) * zoom
        cw, ch = pw / scale, ph / scale
        cx = min(max(focus[0] * sw, cw / 2), sw - cw / 2)
        cy = min(max(focus[1] * sh, ch / 2), sh - ch / 2)
        crop = src.crop((int(cx - cw / 2), int(cy - ch / 2), int(cx + cw / 2), int(cy + ch / 2)))
        crop = crop.resize((pw, ph), Image.LANCZOS)
        mask = None
        if r > 0:
            mask = Image.new("L", (pw, ph), 0)
            ImageDraw.Draw(mask).rounded_rectangle((0, 0, pw - 1, ph - 1), radius=self.P(r), fill=255)
        self.img.paste(crop, (self.X(x), self.Y(y)), mask)

    def gradient(self, x, y, w, h, top: RGB, bottom: RGB, r=0.0):
        pw, ph = self.P(w), self.P(h)
        g = Image.linear_gradient("L").resize((pw, ph))
        tile = Image.composite(Image.new("RGB", (pw, ph), bottom), Image.new("RGB", (pw, ph), top), g)
        mask = None
        if r > 0:
            mask = Image.new("L", (pw, ph), 0)
            ImageDraw.Draw(mask).rounded_rectangle((0, 0, pw - 1, ph - 1), radius=self.P(r), fill=255)
        self.img.paste(tile, (self.X(x), self.Y(y)), mask)

    def shadow_card(self, x, y, w, h, r=12.0, fill=WHITE, blur=6.0, alpha=60):
        """A card with a soft drop shadow (blurred dark rounded rect under it)."""
        pad = blur * 3
        pw, ph = self.P(w + 2 * pad), self.P(h + 2 * pad)
        m = Image.new("L", (pw, ph), 0)
        ImageDraw.Draw(m).rounded_rectangle((self.P(pad), self.P(pad + 2), self.P(pad + w), self.P(pad + h + 2)),
                                            radius=self.P(r), fill=alpha)
        m = m.filter(ImageFilter.GaussianBlur(self.P(blur)))
        self.img.paste(Image.new("RGB", (pw, ph), BLACK), (self.X(x - pad), self.Y(y - pad)), m)
        self.rect(x, y, w, h, fill=fill, r=r)
