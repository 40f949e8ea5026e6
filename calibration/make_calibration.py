#!/usr/bin/env python3
"""Regenerate the INT8 calibration set and the held-out evaluation set from scratch.

Why this exists: INT8 Q/DQ scales are only as good as the activations they were calibrated on.
AutoGLM-Phone-9B sees phone screenshots plus agent instructions in Chinese and English, so the
calibration data has to look like that: portrait phone screens full of UI text (a natural-photo
set alone would give the vision tower the wrong activation ranges), a few natural photos (users
share and edit photos), and instructions in both languages (the embedding / decoder ranges differ
by script). A separate held-out split, never used for calibration, measures how much accuracy
INT8 costs without fooling ourselves with data the scales were fitted to.

Everything is deterministic: screens are drawn with PIL from fixed seeds, photos come from
scikit-image's bundled sample images, prompts are written out below. Output::

    calibration/calib/images/*      calibration/calib/prompts.jsonl
    calibration/heldout/images/*    calibration/heldout/prompts.jsonl

Usage::

    python calibration/make_calibration.py                # rewrite calibration/{calib,heldout}
    python calibration/make_calibration.py --out /tmp/c   # write elsewhere (e.g. to diff)
    python calibration/make_calibration.py --latin-only   # force the no-CJK-font fallback
    python calibration/make_calibration.py --builtin-font # force PIL's built-in font (no font files)

Dependencies: Pillow (project dependency) and scikit-image (regeneration only:
``pip install scikit-image``). Screens use a CJK font when one is installed (Debian:
``apt-get install fonts-noto-cjk``); without one they fall back to DejaVu Sans or PIL's
built-in font and Latin-only screen text. Byte-identical output needs the same font files and
Pillow/zlib/libjpeg versions; the committed files are the reference.
"""

from __future__ import annotations

import argparse
import calendar
import glob
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFilter, ImageFont

SEED = 20250312
SS = 2  # supersampling factor: draw at 2x, downscale with LANCZOS -> anti-aliased shapes
PHOTO_MAX_SIDE = 448
JPEG_QUALITY = 90
SPLITS = ("calib", "heldout")
HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Drawing context: renderers work in dp inside a box; Ctx converts to pixels
# --------------------------------------------------------------------------------------------

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
        if not self.fonts.cjk and _has_cjk(txt):
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
        if not self.fonts.cjk and _has_cjk(txt):
            txt = latin(txt)
        lines: list[str] = []
        for para in txt.split("\n"):
            tokens = re.findall(r"\S+\s*", para) if " " in para and not _has_cjk(para) else list(para)
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


# Latin stand-ins for the Chinese strings that screens draw directly (names, chat messages), used
# only when no CJK font is installed, so the fallback screens show readable text, not tofu boxes.
LATIN_TEXT = {
    "张三": "Zhang San", "李四": "Li Si", "王五": "Wang Wu", "妈妈": "Mom", "我": "Me", "王小明": "Wang Xiaoming",
    "项目群": "Project group", "文件传输助手": "File Transfer", "公司通知": "Company news", "健身房": "Gym",
    "云": "C", "微": "W", "周一": "Mon", "周六": "Sat", "周日": "Sun", "昨天": "Yesterday",
    "周日 20:15": "Sun 20:15", "昨天 18:42": "Yesterday 18:42",
    "[文件] 季度报告.pdf": "[File] Q1 report.pdf", "[语音] 12秒": "[Voice] 12\"", "好的，收到": "OK, got it",
    "晚上一起吃饭吗？": "Dinner tonight?", "本周六团课时间调整": "Saturday class time changed",
    "关于清明节放假安排的通知": "Holiday schedule for Qingming Festival",
    "王五：测试环境已经部署好了": "Wang Wu: the test environment is deployed",
    "明天的会议改到下午三点了，你知道吗？": "Tomorrow's meeting moved to 3 PM, did you know?",
    "知道了，我会准时到的": "Got it, I'll be on time", "好的，记得带上上次的方案": "OK, bring last week's proposal",
    "你到哪了？大家都在等你": "Where are you? Everyone is waiting", "路上有点堵车": "Stuck in traffic",
    "那我们先开始，你到了直接进会议室": "We'll start, just come to the meeting room",
    "这周末回家吃饭吗？": "Coming home for dinner this weekend?", "回的，周六中午到": "Yes, I'll be there Saturday noon",
    "好，给你做红烧肉": "Great, I'll cook braised pork", "降温了，出门多穿点衣服": "It's getting cold, dress warmly",
    "知道啦": "OK!", "测试环境已经部署好了，大家可以验证一下": "The test environment is deployed, please verify",
    "登录页面有个样式问题，按钮被挡住了": "The login page has a layout bug, the button is hidden",
    "我看一下，应该是昨天的改动引起的": "Let me check, probably yesterday's change",
    "好的，修复后在群里说一声": "OK, tell the group when it's fixed",
}
LATIN_FRAGMENTS = [("万+", "0k+"), ("全天", "All day"), ("小时前", " h ago"), ("分钟前", " min ago")]


def latin(txt: str) -> str:
    """English stand-in for a Chinese string (fallback mode only); unknown CJK characters are dropped."""
    if txt in LATIN_TEXT:
        return LATIN_TEXT[txt]
    for a, b in LATIN_FRAGMENTS:
        txt = txt.replace(a, b)
    return re.sub(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]", "", txt)


NO_LINE_START = set("，。、；：？！）》」』”’,.;:?!)")


def _has_cjk(s: str) -> bool:
    return re.search(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]", s) is not None


# --------------------------------------------------------------------------------------------
# Chrome: status bar, navigation bar, toggles, icons
# --------------------------------------------------------------------------------------------

def status_bar(c: Ctx, fg: RGB = TEXT, bg: RGB | None = None, time: str | None = None,
               h: float = 28) -> float:
    time = time or c.clock
    battery = c.battery
    if bg is not None:
        c.rect(0, 0, c.W, h, fill=bg)
    cy = h / 2
    c.text(16, cy, time, 13, fg, bold=True, anchor="lm")
    x = c.W - 14
    # battery
    c.rect(x - 3, cy - 2.5, 2, 5, fill=fg, r=1)
    c.rect(x - 25, cy - 5.5, 22, 11, outline=fg, r=3, width=1.2)
    c.rect(x - 23, cy - 3.5, 18 * battery / 100, 7, fill=fg, r=1.5)
    x -= 30
    pct = f"{battery}%"
    x -= c.tw(pct, 11)
    c.text(x, cy, pct, 11, fg, anchor="lm")
    x -= 8
    # wifi fan
    for r in (9, 6, 3):
        c.arc(x - 8, cy + 5, r, 225, 315, fg, width=1.8)
    c.circle(x - 8, cy + 4.5, 1.2, fill=fg)
    x -= 22
    # cellular bars
    for i in range(4):
        bh = 3 + i * 2.6
        c.rect(x - 16 + i * 4.2, cy + 5 - bh, 3, bh, fill=fg, r=0.8)
    return h


def nav_bar(c: Ctx, style: str = "gesture", fg: RGB = TEXT, bg: RGB | None = None) -> float:
    h = 20.0 if style == "gesture" else 44.0
    y = c.H - h
    if bg is not None:
        c.rect(0, y, c.W, h, fill=bg)
    if style == "gesture":
        c.rect(c.W / 2 - 54, y + h / 2 - 2, 108, 4.5, fill=fg, r=2.25)
    else:
        cy = y + h / 2
        cx = c.W / 2
        gap = min(96, c.W / 4)
        c.poly([(cx - gap + 6, cy - 7), (cx - gap + 6, cy + 7), (cx - gap - 6, cy)], outline=fg)
        c.circle(cx, cy, 7, outline=fg, width=1.6)
        c.rect(cx + gap - 6, cy - 6, 12, 12, outline=fg, r=2, width=1.6)
    return h


def toggle(c: Ctx, x, y, on: bool, accent: RGB = (0x1A, 0x73, 0xE8)):
    w, h = 40.0, 22.0
    c.rect(x, y, w, h, fill=accent if on else hexc("#D0D0D5"), r=h / 2)
    kx = x + w - h / 2 if on else x + h / 2
    c.circle(kx, y + h / 2, h / 2 - 2.5, fill=WHITE)


def chevron(c: Ctx, x, cy, fg=TEXT3, size=5.0, direction="right", width=1.6):
    if direction == "right":
        c.line([(x - size / 2, cy - size), (x + size / 2, cy), (x - size / 2, cy + size)], fg, width)
    elif direction == "left":
        c.line([(x + size / 2, cy - size), (x - size / 2, cy), (x + size / 2, cy + size)], fg, width)
    elif direction == "down":
        c.line([(x - size, cy - size / 2), (x, cy + size / 2), (x + size, cy - size / 2)], fg, width)


def heart(c: Ctx, cx, cy, r, col: RGB, filled: bool):
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + x * r / 16, cy - y * r / 16))
    if filled:
        c.poly(pts, fill=col)
    else:
        c.line(pts + pts[:1], col, 1.8)


def search_glass(c: Ctx, cx, cy, r=5.5, fg=TEXT2):
    c.circle(cx - 1, cy - 1, r, outline=fg, width=1.6)
    c.line([(cx + r * 0.55, cy + r * 0.55), (cx + r * 1.2, cy + r * 1.2)], fg, 1.8)


def glyph(c: Ctx, kind: str, cx: float, cy: float, sz: float, fg: RGB = WHITE, bg: RGB = BLACK,
          label: str = ""):
    """Simple white pictograms for app icons and tiles (no emoji font needed)."""
    u = sz / 2
    if kind == "chat":
        c.ellipse(cx - u * 0.85, cy - u * 0.7, u * 1.15, u * 0.95, fill=fg)
        c.ellipse(cx - u * 0.15, cy - u * 0.25, u * 1.0, u * 0.85, fill=fg, outline=bg, width=max(1, sz / 20))
    elif kind == "bubble":
        c.ellipse(cx - u * 0.8, cy - u * 0.6, u * 1.6, u * 1.2, fill=fg)
        c.poly([(cx - u * 0.5, cy + u * 0.3), (cx - u * 0.75, cy + u * 0.8), (cx - u * 0.05, cy + u * 0.5)], fill=fg)
    elif kind == "gear":
        for i in range(8):
            a = i * math.pi / 4
            c.circle(cx + math.cos(a) * u * 0.62, cy + math.sin(a) * u * 0.62, u * 0.2, fill=fg)
        c.circle(cx, cy, u * 0.6, fill=fg)
        c.circle(cx, cy, u * 0.25, fill=bg)
    elif kind == "camera":
        c.rect(cx - u * 0.85, cy - u * 0.45, u * 1.7, u * 1.15, fill=fg, r=u * 0.2)
        c.rect(cx - u * 0.3, cy - u * 0.65, u * 0.6, u * 0.3, fill=fg, r=u * 0.08)
        c.circle(cx, cy + u * 0.12, u * 0.36, fill=bg)
        c.circle(cx, cy + u * 0.12, u * 0.22, fill=fg)
    elif kind == "clock":
        c.circle(cx, cy, u * 0.8, fill=fg)
        c.line([(cx, cy), (cx, cy - u * 0.55)], bg, max(1, sz / 14))
        c.line([(cx, cy), (cx + u * 0.4, cy + u * 0.15)], bg, max(1, sz / 14))
    elif kind == "pin":
        c.circle(cx, cy - u * 0.2, u * 0.55, fill=fg)
        c.poly([(cx - u * 0.47, cy + u * 0.05), (cx + u * 0.47, cy + u * 0.05), (cx, cy + u * 0.85)], fill=fg)
        c.circle(cx, cy - u * 0.2, u * 0.22, fill=bg)
    elif kind == "note":
        c.ellipse(cx - u * 0.6, cy + u * 0.2, u * 0.6, u * 0.45, fill=fg)
        c.ellipse(cx + u * 0.15, cy + u * 0.05, u * 0.6, u * 0.45, fill=fg)
        c.line([(cx - u * 0.05, cy + u * 0.4), (cx - u * 0.05, cy - u * 0.7), (cx + u * 0.7, cy - u * 0.85),
                (cx + u * 0.7, cy + u * 0.25)], fg, max(1, sz / 12))
    elif kind == "calendar":
        c.rect(cx - u * 0.8, cy - u * 0.75, u * 1.6, u * 1.55, fill=WHITE, r=u * 0.18)
        c.rect(cx - u * 0.8, cy - u * 0.75, u * 1.6, u * 0.45, fill=hexc("#EA4335"), r=u * 0.18)
        c.text(cx, cy + u * 0.28, label or "12", u * 0.8, TEXT, bold=True, anchor="mm")
    elif kind == "photo":
        c.rect(cx - u * 0.8, cy - u * 0.65, u * 1.6, u * 1.3, fill=fg, r=u * 0.15)
        c.poly([(cx - u * 0.7, cy + u * 0.55), (cx - u * 0.2, cy - u * 0.15), (cx + u * 0.2, cy + u * 0.3),
                (cx + u * 0.4, cy + u * 0.1), (cx + u * 0.7, cy + u * 0.55)], fill=bg)
        c.circle(cx + u * 0.35, cy - u * 0.3, u * 0.15, fill=bg)
    elif kind == "phone":
        c.arc(cx + u * 0.35, cy - u * 0.35, u * 1.0, 100, 170, fg, width=max(2, sz / 7))
        c.circle(cx - u * 0.62, cy - u * 0.55, u * 0.16, fill=fg)
        c.circle(cx + u * 0.25, cy + u * 0.6, u * 0.16, fill=fg)
    elif kind == "mail":
        c.rect(cx - u * 0.8, cy - u * 0.55, u * 1.6, u * 1.1, fill=fg, r=u * 0.1)
        c.line([(cx - u * 0.75, cy - u * 0.45), (cx, cy + u * 0.1), (cx + u * 0.75, cy - u * 0.45)], bg,
               max(1, sz / 16))
    elif kind == "sun":
        c.circle(cx, cy, u * 0.42, fill=hexc("#FFD54F"))
        for i in range(8):
            a = i * math.pi / 4
            c.line([(cx + math.cos(a) * u * 0.58, cy + math.sin(a) * u * 0.58),
                    (cx + math.cos(a) * u * 0.8, cy + math.sin(a) * u * 0.8)], hexc("#FFD54F"), max(1, sz / 16))
    elif kind == "globe":
        c.circle(cx, cy, u * 0.75, outline=fg, width=max(1, sz / 16))
        c.ellipse(cx - u * 0.32, cy - u * 0.75, u * 0.64, u * 1.5, outline=fg, width=max(1, sz / 16))
        c.line([(cx - u * 0.75, cy), (cx + u * 0.75, cy)], fg, max(1, sz / 16))
    elif kind == "cart":
        c.line([(cx - u * 0.85, cy - u * 0.6), (cx - u * 0.55, cy - u * 0.6), (cx - u * 0.3, cy + u * 0.35),
                (cx + u * 0.6, cy + u * 0.35), (cx + u * 0.8, cy - u * 0.35), (cx - u * 0.45, cy - u * 0.35)],
               fg, max(1, sz / 12))
        c.circle(cx - u * 0.2, cy + u * 0.65, u * 0.13, fill=fg)
        c.circle(cx + u * 0.5, cy + u * 0.65, u * 0.13, fill=fg)
    elif kind == "wifi":
        for r in (0.85, 0.55, 0.25):
            c.arc(cx, cy + u * 0.5, u * r * 1.2, 225, 315, fg, width=max(1, sz / 10))
        c.circle(cx, cy + u * 0.45, u * 0.1, fill=fg)
    elif kind == "bluetooth":
        w = max(1, sz / 12)
        c.line([(cx - u * 0.4, cy - u * 0.35), (cx + u * 0.4, cy + u * 0.35), (cx, cy + u * 0.75),
                (cx, cy - u * 0.75), (cx + u * 0.4, cy - u * 0.35), (cx - u * 0.4, cy + u * 0.35)], fg, w)
    elif kind == "plane":
        c.poly([(cx, cy - u * 0.8), (cx + u * 0.12, cy - u * 0.6), (cx + u * 0.12, cy - u * 0.1),
                (cx + u * 0.8, cy + u * 0.3), (cx + u * 0.12, cy + u * 0.15), (cx + u * 0.12, cy + u * 0.55),
                (cx + u * 0.35, cy + u * 0.75), (cx - u * 0.35, cy + u * 0.75), (cx - u * 0.12, cy + u * 0.55),
                (cx - u * 0.12, cy + u * 0.15), (cx - u * 0.8, cy + u * 0.3), (cx - u * 0.12, cy - u * 0.1),
                (cx - u * 0.12, cy - u * 0.6)], fill=fg)
    elif kind == "torch":
        c.poly([(cx - u * 0.45, cy - u * 0.7), (cx + u * 0.45, cy - u * 0.7), (cx + u * 0.2, cy - u * 0.15),
                (cx - u * 0.2, cy - u * 0.15)], fill=fg)
        c.rect(cx - u * 0.2, cy - u * 0.15, u * 0.4, u * 0.9, fill=fg, r=u * 0.05)
    elif kind == "moon":
        c.circle(cx, cy, u * 0.65, fill=fg)
        c.circle(cx + u * 0.35, cy - u * 0.25, u * 0.55, fill=bg)
    elif kind == "bell":
        c.ellipse(cx - u * 0.55, cy - u * 0.7, u * 1.1, u * 1.3, fill=fg)
        c.rect(cx - u * 0.7, cy + u * 0.2, u * 1.4, u * 0.25, fill=fg, r=u * 0.1)
        c.circle(cx, cy + u * 0.6, u * 0.15, fill=fg)
    elif kind == "battery":
        c.rect(cx - u * 0.35, cy - u * 0.65, u * 0.7, u * 1.4, outline=fg, r=u * 0.1, width=max(1, sz / 16))
        c.rect(cx - u * 0.25, cy - u * 0.1, u * 0.5, u * 0.7, fill=fg)
    elif kind == "display":
        c.circle(cx, cy, u * 0.4, fill=fg)
        for i in range(8):
            a = i * math.pi / 4
            c.circle(cx + math.cos(a) * u * 0.7, cy + math.sin(a) * u * 0.7, u * 0.08, fill=fg)
    elif kind == "play":
        c.poly([(cx - u * 0.3, cy - u * 0.5), (cx - u * 0.3, cy + u * 0.5), (cx + u * 0.5, cy)], fill=fg)
    else:  # a letter / character
        ch = label or "?"
        c.text(cx, cy, ch, sz * (0.5 if _has_cjk(ch) else 0.55), fg, bold=True, anchor="mm")


@dataclass(frozen=True)
class App:
    zh: str
    en: str
    color: str
    glyph: str = "letter"
    mark_zh: str = ""
    mark_en: str = ""


APPS_ZH = [
    App("微信", "WeChat", "#07C160", "chat"), App("支付宝", "Alipay", "#1677FF", mark_zh="支"),
    App("淘宝", "Taobao", "#FF5000", mark_zh="淘"), App("京东", "JD", "#E1251B", mark_zh="JD"),
    App("美团", "Meituan", "#FFC300", mark_zh="美"), App("抖音", "Douyin", "#161823", mark_zh="抖"),
    App("小红书", "RED", "#FF2442", mark_zh="书"), App("高德地图", "Amap", "#0091FF", "pin"),
    App("哔哩哔哩", "bilibili", "#FB7299", mark_zh="B"), App("钉钉", "DingTalk", "#3296FA", mark_zh="钉"),
    App("日历", "Calendar", "#FFFFFF", "calendar"), App("时钟", "Clock", "#202124", "clock"),
    App("相册", "Gallery", "#FF9500", "photo"), App("天气", "Weather", "#4FC3F7", "sun"),
    App("计算器", "Calculator", "#FF9500", mark_zh="="), App("QQ音乐", "QQ Music", "#31C27C", "note"),
    App("浏览器", "Browser", "#4285F4", "globe"), App("邮件", "Mail", "#1E88E5", "mail"),
    App("设置", "Settings", "#8E8E93", "gear"), App("相机", "Camera", "#3A3A3C", "camera"),
    App("电话", "Phone", "#34C759", "phone"), App("短信", "Messages", "#34C759", "bubble"),
]
APPS_EN = [
    App("", "Gmail", "#EA4335", "mail"), App("", "Maps", "#34A853", "pin"),
    App("", "Photos", "#FBBC05", "photo"), App("", "YouTube", "#FF0000", "play"),
    App("", "Spotify", "#1DB954", "note"), App("", "Calendar", "#FFFFFF", "calendar"),
    App("", "Clock", "#202124", "clock"), App("", "Weather", "#4FC3F7", "sun"),
    App("", "Amazon", "#232F3E", mark_en="a"), App("", "Instagram", "#C13584", "camera"),
    App("", "WhatsApp", "#25D366", "bubble"), App("", "Uber", "#000000", mark_en="U"),
    App("", "Calculator", "#FF9500", mark_en="="), App("", "Files", "#1A73E8", mark_en="F"),
    App("", "Play Store", "#01875F", "play"), App("", "Slack", "#4A154B", mark_en="#"),
    App("", "Chrome", "#4285F4", "globe"), App("", "Settings", "#8E8E93", "gear"),
    App("", "Phone", "#34C759", "phone"), App("", "Messages", "#1A73E8", "bubble"),
    App("", "Camera", "#3A3A3C", "camera"), App("", "Notes", "#F9AB00", mark_en="N"),
]


def app_icon(c: Ctx, app: App, x, y, size=52.0, label: bool = True, label_fg: RGB = WHITE,
             shadow: bool = True):
    bg = hexc(app.color)
    fg = TEXT if sum(bg) > 600 or app.color == "#FFC300" else WHITE
    c.rect(x, y, size, size, fill=bg, r=size * 0.24)
    if sum(bg) > 700:
        c.rect(x, y, size, size, outline=DIVIDER, r=size * 0.24, width=0.8)
    mark = app.mark_zh if c.lang == "zh" and app.zh else app.mark_en or app.mark_zh
    if app.glyph == "letter" and not mark:
        mark = (app.zh if c.lang == "zh" and app.zh else app.en)[:1]
    glyph(c, app.glyph, x + size / 2, y + size / 2, size * 0.62, fg=fg, bg=bg, label=mark)
    if label:
        name = app.zh if c.lang == "zh" and app.zh else app.en
        if shadow:
            c.text(x + size / 2 + 0.6, y + size + 9.6, name, 11, (40, 40, 40), anchor="mt", max_w=size + 22)
        c.text(x + size / 2, y + size + 9, name, 11, label_fg, anchor="mt", max_w=size + 22)


def name_color(name: str) -> str:
    """A stable avatar colour per name (sha256, not hash(): independent of PYTHONHASHSEED)."""
    palette = ["#E76F51", "#2A9D8F", "#8E6C8A", "#F4A261", "#457B9D", "#6D9F71", "#C44569", "#546DE5"]
    return palette[hashlib.sha256(name.encode()).digest()[0] % len(palette)]


def avatar(c: Ctx, x, y, size, name: str, color: str, round_: bool = False):
    col = hexc(color)
    if not c.fonts.cjk:
        name = latin(name)
    if round_:
        c.circle(x + size / 2, y + size / 2, size / 2, fill=col)
    else:
        c.rect(x, y, size, size, fill=col, r=size * 0.12)
    ch = name[:1] if _has_cjk(name) else name[:1].upper()
    c.text(x + size / 2, y + size / 2, ch, size * 0.42, WHITE, bold=True, anchor="mm")


def app_bar(c: Ctx, y, title: str, bg: RGB = WHITE, fg: RGB = TEXT, back: bool = True,
            centered: bool = False, h: float = 52, actions: tuple[str, ...] = ()) -> float:
    c.rect(0, y, c.W, h, fill=bg)
    cy = y + h / 2
    x = 16.0
    if back:
        chevron(c, 22, cy, fg, size=7, direction="left", width=2)
        x = 44
    if centered:
        c.text(c.W / 2, cy, title, 17, fg, bold=True, anchor="mm", max_w=c.W - 120)
    else:
        c.text(x, cy, title, 20, fg, bold=True, anchor="lm", max_w=c.W - x - 60)
    ax = c.W - 24
    for a in actions:
        if a == "search":
            search_glass(c, ax, cy, 6.5, fg)
        elif a == "more":
            for i in (-6, 0, 6):
                c.circle(ax, cy + i, 1.7, fill=fg)
        elif a == "dots":
            for i in (-6, 0, 6):
                c.circle(ax + i, cy, 1.7, fill=fg)
        elif a == "plus":
            c.circle(ax, cy, 10, outline=fg, width=1.6)
            c.line([(ax - 5, cy), (ax + 5, cy)], fg, 1.6)
            c.line([(ax, cy - 5), (ax, cy + 5)], fg, 1.6)
        ax -= 34
    return h


# --------------------------------------------------------------------------------------------
# Screens
# --------------------------------------------------------------------------------------------

SETTINGS_ROWS = [
    # key, zh, en, icon color, glyph, kind
    ("wifi", "WLAN", "Wi-Fi", "#1A73E8", "wifi", "toggle"),
    ("bt", "蓝牙", "Bluetooth", "#1A73E8", "bluetooth", "toggle"),
    ("mobile", "移动网络", "Mobile network", "#34A853", "letter", "chev"),
    ("airplane", "飞行模式", "Airplane mode", "#FF9500", "plane", "toggle"),
    ("hotspot", "个人热点", "Hotspot & tethering", "#34A853", "letter", "chev"),
    None,
    ("display", "显示和亮度", "Display & brightness", "#4285F4", "display", "chev"),
    ("sound", "声音和振动", "Sound & vibration", "#EA4335", "note", "chev"),
    ("notif", "通知和状态栏", "Notifications", "#FB8C00", "bell", "chev"),
    ("dnd", "勿扰模式", "Do Not Disturb", "#7B1FA2", "moon", "toggle"),
    None,
    ("battery", "电池", "Battery", "#43A047", "battery", "chev"),
    ("storage", "存储", "Storage", "#00897B", "letter", "chev"),
    ("location", "位置信息", "Location", "#F4511E", "pin", "toggle"),
    ("apps", "应用", "Apps", "#5E35B1", "letter", "chev"),
    ("security", "安全和隐私", "Security & privacy", "#3949AB", "letter", "chev"),
    None,
    ("about", "关于手机", "About phone", "#757575", "letter", "chev"),
    ("system", "系统和更新", "System & updates", "#757575", "gear", "chev"),
]


def settings_list(c: Ctx, v: dict, y: float, bottom: float, selected: str | None = None,
                  compact: bool = False):
    accent = hexc(v.get("accent", "#1A73E8"))
    sub = {
        "wifi": c.t(v["wifi_ssid"] if v["wifi"] else "已关闭", v["wifi_ssid"] if v["wifi"] else "Off"),
        "bt": c.t("已连接 " + v["bt_dev"] if v["bt"] else "已关闭",
                  ("Connected: " + v["bt_dev"]) if v["bt"] else "Off"),
        "mobile": c.t(v.get("carrier_zh", "中国移动 5G"), v.get("carrier_en", "T-Mobile 5G")),
        "battery": f"{v.get('battery', 86)}%",
        "storage": c.t(f"已使用 {v.get('used', 45.2)} GB / 128 GB", f"{v.get('used', 45.2)} GB of 128 GB used"),
        "display": c.t("自动亮度", "Adaptive brightness"),
        "about": v.get("model", "Phone 12 Pro"),
    }
    state = {"wifi": v["wifi"], "bt": v["bt"], "airplane": v.get("airplane", False),
             "dnd": v.get("dnd", False), "location": v.get("location", True)}
    row_h = 56.0 if not compact else 52.0
    for row in SETTINGS_ROWS:
        if row is None:
            y += 10
            c.rect(0, y - 10, c.W, 10, fill=hexc("#F1F3F4"))
            continue
        key, zh, en, col, gl, kind = row
        if y + row_h > bottom:
            break
        if key == selected:
            c.rect(8, y + 2, c.W - 16, row_h - 4, fill=mix(accent, WHITE, 0.85), r=14)
        icol = hexc(col)
        c.rect(16, y + row_h / 2 - 15, 30, 30, fill=icol, r=8)
        glyph(c, gl, 31, y + row_h / 2, 19, WHITE, icol, label=c.t(zh, en)[:1])
        title = c.t(zh, en)
        tx = 60
        if key in sub:
            c.text(tx, y + row_h / 2 - 9, title, 15, TEXT, anchor="lm", max_w=c.W - tx - 70)
            c.text(tx, y + row_h / 2 + 10, sub[key], 12, TEXT2, anchor="lm", max_w=c.W - tx - 70)
        else:
            c.text(tx, y + row_h / 2, title, 15, TEXT, anchor="lm", max_w=c.W - tx - 70)
        if kind == "toggle":
            toggle(c, c.W - 58, y + row_h / 2 - 11, state[key], accent)
        else:
            chevron(c, c.W - 22, y + row_h / 2)
        c.line([(tx, y + row_h - 0.5), (c.W, y + row_h - 0.5)], DIVIDER, 0.6)
        y += row_h
    return y


def screen_settings(c: Ctx, v: dict):
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    c.text(16, y + 34, c.t("设置", "Settings"), 28, TEXT, bold=True, anchor="lm")
    y += 62
    c.rect(16, y, c.W - 32, 40, fill=hexc("#F1F3F4"), r=20)
    search_glass(c, 36, y + 20, 5.5)
    c.text(52, y + 20, c.t("搜索设置项", "Search settings"), 14, TEXT3, anchor="lm")
    y += 52
    # account card
    c.rect(16, y, c.W - 32, 64, fill=hexc("#F8F9FA"), r=14)
    avatar(c, 28, y + 12, 40, v.get("user", "Alex"), "#8AB4F8", round_=True)
    c.text(80, y + 24, v.get("user", "Alex"), 16, TEXT, bold=True, anchor="lm")
    c.text(80, y + 44, c.t("帐号、云空间、支付与账单", "Account, cloud storage, payments"), 12, TEXT2, anchor="lm",
           max_w=c.W - 130)
    chevron(c, c.W - 34, y + 32)
    y += 74
    settings_list(c, v, y, bottom)
    nav_bar(c, nav, bg=WHITE)


def screen_bluetooth_detail(c: Ctx, v: dict, y: float, bottom: float):
    accent = hexc(v.get("accent", "#1A73E8"))
    c.text(24, y + 30, c.t("蓝牙", "Bluetooth"), 24, TEXT, bold=True, anchor="lm")
    y += 64
    c.rect(16, y, c.W - 32, 60, fill=mix(accent, WHITE, 0.85), r=30)
    c.text(36, y + 30, c.t("使用蓝牙", "Use Bluetooth"), 16, TEXT, bold=True, anchor="lm")
    toggle(c, c.W - 80, y + 19, v["bt"], accent)
    y += 80
    c.text(24, y, c.t("设备名称", "Device name"), 15, TEXT, anchor="lm")
    c.text(24, y + 20, v.get("model", "Pad 11"), 12, TEXT2, anchor="lm")
    y += 48
    c.text(24, y, c.t("已配对的设备", "Paired devices"), 13, accent, bold=True, anchor="lm")
    y += 16
    for name, st in v["paired"]:
        if y + 56 > bottom:
            return
        c.circle(44, y + 28, 16, fill=hexc("#E8F0FE"))
        glyph(c, "bluetooth", 44, y + 28, 18, accent, WHITE)
        c.text(76, y + 19, name, 15, TEXT, anchor="lm")
        c.text(76, y + 38, st, 12, TEXT2, anchor="lm")
        c.circle(c.W - 40, y + 28, 9, outline=TEXT2, width=1.5)
        c.circle(c.W - 40, y + 28, 3, fill=TEXT2)
        y += 56
    y += 12
    c.text(24, y, c.t("可用设备", "Available devices"), 13, accent, bold=True, anchor="lm")
    c.arc(c.W - 40, y, 7, 30, 300, accent, 2)
    y += 16
    for name in v["available"]:
        if y + 52 > bottom:
            return
        c.circle(44, y + 26, 16, fill=hexc("#F1F3F4"))
        glyph(c, "bluetooth", 44, y + 26, 18, TEXT2, WHITE)
        c.text(76, y + 26, name, 15, TEXT, anchor="lm")
        y += 52
    if y + 64 > bottom:
        return
    c.rect(24, y + 16, 170, 40, outline=accent, r=20, width=1.2)
    c.text(24 + 85, y + 36, c.t("+ 配对新设备", "+ Pair new device"), 14, accent, anchor="mm")


def screen_settings_tablet(c: Ctx, v: dict):
    """Landscape tablet: settings list on the left, Bluetooth page on the right."""
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    sb = status_bar(c, bg=hexc("#F8F9FA"))
    nav = nav_bar(c, "gesture", bg=hexc("#F8F9FA"))
    left_w = min(340.0, c.W * 0.38)
    c.rect(0, sb, left_w, c.H - sb - nav, fill=hexc("#F8F9FA"))
    lc = c.sub(0, sb, left_w, c.H - sb - nav)
    lc.text(16, 28, c.t("设置", "Settings"), 24, TEXT, bold=True, anchor="lm")
    lc.rect(16, 52, left_w - 32, 36, fill=hexc("#ECEFF1"), r=18)
    search_glass(lc, 34, 70, 5)
    lc.text(50, 70, c.t("搜索", "Search"), 13, TEXT3, anchor="lm")
    settings_list(lc, v, 96, lc.H, selected="bt", compact=True)
    c.line([(left_w, sb), (left_w, c.H - nav)], DIVIDER, 1)
    rc = c.sub(left_w + 1, sb, c.W - left_w - 1, c.H - sb - nav)
    screen_bluetooth_detail(rc, v, 0, rc.H)


def chat_messages(c: Ctx, v: dict, y: float, bottom: float, style: str):
    me = v.get("me_color", "#6C8EBF")
    max_bw = min(c.W * 0.62, 420)
    for m in v["messages"]:
        if m[0] == "time":
            c.text(c.W / 2, y + 12, m[1], 11, TEXT3, anchor="mm")
            y += 30
            continue
        side, txt = m[0], m[1]
        sender = m[2] if len(m) > 2 else None  # group chats: who said it
        if sender and style == "wechat":
            c.text(60, y + 6, sender, 11, TEXT3, anchor="lm")
            y += 16
        lines = c.wrap(txt, 15, max_bw - 24)
        bw = max(c.tw(line, 15) for line in lines) + 24
        bh = 22 * len(lines) + 16
        if y + bh + 14 > bottom:
            break
        if style == "wechat":
            if side == "in":
                if sender:
                    avatar(c, 12, y - 16, 40, sender, name_color(sender))
                else:
                    avatar(c, 12, y, 40, v["contact"], v.get("contact_color", "#F4A261"))
                bx = 60
                fill = WHITE
                c.poly([(bx, y + 14), (bx - 6, y + 20), (bx, y + 26)], fill=fill)
            else:
                avatar(c, c.W - 52, y, 40, v.get("me", "Me"), me)
                bx = c.W - 60 - bw
                fill = hexc("#95EC69")
                c.poly([(bx + bw, y + 14), (bx + bw + 6, y + 20), (bx + bw, y + 26)], fill=fill)
            c.rect(bx, y, bw, bh, fill=fill, r=5)
            fg = TEXT
        else:
            if side == "in":
                bx, fill, fg = 16, hexc("#E9E9EB"), TEXT
            else:
                bx, fill, fg = c.W - 16 - bw, hexc("#1A73E8"), WHITE
            c.rect(bx, y, bw, bh, fill=fill, r=18)
        for i, line in enumerate(lines):
            c.text(bx + 12, y + 8 + 22 * i + 11, line, 15, fg, anchor="lm")
        y += bh + 14
    return y


def chat_input(c: Ctx, style: str, bottom: float):
    if style == "wechat":
        h = 56
        y = bottom - h
        c.rect(0, y, c.W, h, fill=hexc("#F7F7F7"))
        c.line([(0, y), (c.W, y)], DIVIDER, 0.8)
        c.circle(24, y + 28, 13, outline=TEXT, width=1.5)
        c.arc(20, y + 28, 6, 300, 60, TEXT, 1.5)
        c.rect(46, y + 9, c.W - 46 - 84, 38, fill=WHITE, r=5)
        c.circle(c.W - 60, y + 28, 13, outline=TEXT, width=1.5)
        c.circle(c.W - 64, y + 25, 1.6, fill=TEXT)
        c.circle(c.W - 56, y + 25, 1.6, fill=TEXT)
        c.arc(c.W - 60, y + 28, 7, 30, 150, TEXT, 1.5)
        c.circle(c.W - 24, y + 28, 13, outline=TEXT, width=1.5)
        c.line([(c.W - 31, y + 28), (c.W - 17, y + 28)], TEXT, 1.5)
        c.line([(c.W - 24, y + 21), (c.W - 24, y + 35)], TEXT, 1.5)
    else:
        h = 60
        y = bottom - h
        c.rect(0, y, c.W, h, fill=WHITE)
        c.circle(28, y + 30, 14, fill=hexc("#E8F0FE"))
        c.line([(22, y + 30), (34, y + 30)], hexc("#1A73E8"), 2)
        c.line([(28, y + 24), (28, y + 36)], hexc("#1A73E8"), 2)
        c.rect(52, y + 10, c.W - 52 - 60, 40, fill=hexc("#F1F3F4"), r=20)
        c.text(68, y + 30, c.t("短信", "Text message"), 14, TEXT3, anchor="lm")
        c.circle(c.W - 30, y + 30, 18, fill=hexc("#1A73E8"))
        c.poly([(c.W - 37, y + 23), (c.W - 21, y + 30), (c.W - 37, y + 37), (c.W - 34, y + 30)], fill=WHITE)
    return h


def screen_chat(c: Ctx, v: dict):
    style = v.get("style", "wechat")
    bg = hexc("#EDEDED") if style == "wechat" else WHITE
    c.rect(0, 0, c.W, c.H, fill=bg)
    y = status_bar(c, bg=bg)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    if style == "wechat":
        app_bar(c, y, v["contact"], bg=bg, centered=True, actions=("dots",), h=48)
        y += 48
        c.line([(0, y), (c.W, y)], hexc("#DADADA"), 0.6)
    else:
        h = 60
        c.rect(0, y, c.W, h, fill=WHITE)
        chevron(c, 22, y + h / 2, TEXT, 7, "left", 2)
        avatar(c, 44, y + 12, 36, v["contact"], v.get("contact_color", "#F4A261"), round_=True)
        c.text(90, y + 22, v["contact"], 16, TEXT, bold=True, anchor="lm")
        c.text(90, y + 41, v.get("number", "+1 415-555-0132"), 11, TEXT2, anchor="lm")
        glyph(c, "phone", c.W - 72, y + h / 2, 20, TEXT2, WHITE)
        for i in (-6, 0, 6):
            c.circle(c.W - 24, y + h / 2 + i, 1.7, fill=TEXT2)
        y += h
    ih = chat_input(c, style, bottom)
    chat_messages(c, v, y + 14, bottom - ih, style)
    nav_bar(c, nav, bg=hexc("#F7F7F7") if style == "wechat" else WHITE)


def chat_list(c: Ctx, v: dict, y: float, bottom: float, selected: str | None = None):
    for name, last, tm, unread, col in v["chats"]:
        if y + 68 > bottom:
            break
        if name == selected:
            c.rect(0, y, c.W, 68, fill=hexc("#E1E1E1"))
        avatar(c, 14, y + 12, 44, name, col)
        c.text(70, y + 24, name, 15, TEXT, anchor="lm", max_w=c.W - 140)
        c.text(c.W - 14, y + 24, tm, 11, TEXT3, anchor="rm")
        c.text(70, y + 46, last, 13, TEXT3, anchor="lm", max_w=c.W - 100)
        if unread:
            c.circle(56, y + 14, 8, fill=hexc("#FA5151"))
            c.text(56, y + 14, str(unread), 10, WHITE, anchor="mm")
        c.line([(70, y + 67.5), (c.W, y + 67.5)], DIVIDER, 0.6)
        y += 68


def screen_chat_tablet(c: Ctx, v: dict):
    """Landscape tablet chat: conversation list left, open conversation right."""
    c.rect(0, 0, c.W, c.H, fill=hexc("#EDEDED"))
    sb = status_bar(c, bg=hexc("#EDEDED"))
    nav = nav_bar(c, "gesture", bg=hexc("#EDEDED"))
    left_w = min(320.0, c.W * 0.36)
    c.rect(0, sb, left_w, c.H - sb - nav, fill=hexc("#F7F7F7"))
    lc = c.sub(0, sb, left_w, c.H - sb - nav)
    lc.rect(12, 10, left_w - 24, 34, fill=hexc("#E2E2E2"), r=6)
    search_glass(lc, 30, 27, 5)
    lc.text(44, 27, c.t("搜索", "Search"), 13, TEXT3, anchor="lm")
    chat_list(lc, v, 54, lc.H, selected=v["contact"])
    c.line([(left_w, sb), (left_w, c.H - nav)], hexc("#D6D6D6"), 1)
    rc = c.sub(left_w + 1, sb, c.W - left_w - 1, c.H - sb - nav)
    app_bar(rc, 0, v["contact"], bg=hexc("#EDEDED"), back=False, centered=True, actions=("dots",), h=48)
    rc.line([(0, 48), (rc.W, 48)], hexc("#DADADA"), 0.6)
    ih = chat_input(rc, "wechat", rc.H)
    chat_messages(rc, v, 62, rc.H - ih, "wechat")


def screen_home(c: Ctx, v: dict):
    top, bot = hexc(v["wall"][0]), hexc(v["wall"][1])
    c.gradient(0, 0, c.W, c.H, top, bot)
    rng = c.rng
    for _ in range(5):  # soft blobs, like a blurred wallpaper
        cx, cy, r = rng.uniform(0, c.W), rng.uniform(0, c.H), rng.uniform(60, 160)
        col = mix(top, bot, rng.random())
        col = mix(col, WHITE, rng.uniform(0.05, 0.25))
        c.circle(cx, cy, r, fill=col)
    blur = c.img.crop(c.box).filter(ImageFilter.GaussianBlur(c.P(30)))
    c.img.paste(blur, c.box[:2])
    y = status_bar(c, fg=WHITE)
    # clock widget
    c.text(24, y + 52, c.clock, 58, WHITE, anchor="lm")
    c.text(26, y + 98, c.t(v["date_zh"], v["date_en"]), 15, WHITE, anchor="lm")
    glyph(c, "sun", c.W - 70, y + 48, 34)
    c.text(c.W - 48, y + 50, "18°", 22, WHITE, anchor="lm")
    c.text(c.W - 24, y + 80, c.t("晴 · 北京", "Sunny · Seattle"), 12, WHITE, anchor="rm")
    y += 130
    apps = list(APPS_ZH if c.lang == "zh" else APPS_EN)
    rng.shuffle(apps)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    dock_h = 84
    cols = max(4, int(c.W // 84))
    cell = (c.W - 24) / cols
    size = min(54.0, cell - 24)
    dock_apps, grid_apps = apps[:4], apps[4:]
    rows = int((bottom - dock_h - 60 - y) // (size + 36))
    i = 0
    for r in range(rows):
        for col in range(cols):
            if i >= len(grid_apps):
                break
            x = 12 + col * cell + (cell - size) / 2
            app_icon(c, grid_apps[i], x, y + r * (size + 36), size)
            i += 1
    # page dots
    dy = bottom - dock_h - 30
    for k in range(3):
        c.circle(c.W / 2 - 12 + k * 12, dy, 3, fill=WHITE if k == 0 else mix(WHITE, top, 0.5))
    # search pill
    c.rect(24, dy - 46, c.W - 48, 36, fill=mix(WHITE, top, 0.25), r=18)
    search_glass(c, 44, dy - 28, 5, WHITE)
    c.text(60, dy - 28, c.t("搜索应用和网页", "Search apps and web"), 13, WHITE, anchor="lm")
    # dock
    dk_y = bottom - dock_h + 4
    c.rect(10, dk_y, c.W - 20, dock_h - 12, fill=mix(WHITE, bot, 0.55), r=28)
    dcell = (c.W - 20) / 4
    for k, app in enumerate(dock_apps):
        app_icon(c, app, 10 + k * dcell + (dcell - size) / 2, dk_y + (dock_h - 12 - size) / 2, size, label=False)
    nav_bar(c, nav, fg=WHITE)


def draw_product(c: Ctx, kind: str, x, y, w, h, i: int, rng: random.Random):
    if kind.startswith("photo:"):
        c.paste_photo(kind[6:], x, y, w, h, r=8, focus=(rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)),
                      zoom=rng.uniform(1.0, 2.2))
        return
    palette = ["#F5F5F5", "#EEF2F7", "#FFF4E5", "#EAF6EF", "#F3ECFA", "#FDECEC"]
    c.rect(x, y, w, h, fill=hexc(palette[i % len(palette)]), r=8)
    body = hexc(rng.choice(["#FFFFFF", "#222222", "#3D5A80", "#E0E0E0", "#F2C6DE", "#5C946E"]))
    edge = mix(body, BLACK, 0.25)
    cx, cy = x + w / 2, y + h / 2
    if kind == "earbuds":
        c.rect(cx - w * 0.28, cy - h * 0.02, w * 0.56, h * 0.3, fill=body, r=h * 0.12, outline=edge, width=1)
        c.line([(cx - w * 0.28, cy + h * 0.07), (cx + w * 0.28, cy + h * 0.07)], edge, 1)
        for sx in (-1, 1):
            bx = cx + sx * w * 0.14
            c.ellipse(bx - w * 0.08, cy - h * 0.3, w * 0.16, h * 0.16, fill=body, outline=edge, width=1)
            c.rect(bx - w * 0.025, cy - h * 0.2, w * 0.05, h * 0.16, fill=body, r=w * 0.02, outline=edge, width=1)
    elif kind == "keyboard":
        kw, kh = w * 0.82, h * 0.42
        kx, ky = cx - kw / 2, cy - kh / 2
        c.rect(kx, ky, kw, kh, fill=edge, r=6)
        keycol = mix(body, WHITE, 0.15)
        for r in range(5):
            for k in range(12):
                c.rect(kx + 4 + k * (kw - 8) / 12, ky + 4 + r * (kh - 8) / 5, (kw - 8) / 12 - 2,
                       (kh - 8) / 5 - 2, fill=keycol, r=1.5)
        if i % 2 == 0:
            c.rect(kx + 4 + 3 * (kw - 8) / 12, ky + 4 + 4 * (kh - 8) / 5, (kw - 8) / 12 * 6 - 2,
                   (kh - 8) / 5 - 2, fill=hexc("#FF7043"), r=1.5)


def screen_shopping(c: Ctx, v: dict):
    accent = hexc(v.get("accent", "#FF5000"))
    bgc = hexc("#F4F4F4")
    c.rect(0, 0, c.W, c.H, fill=bgc)
    y = status_bar(c, bg=WHITE)
    c.rect(0, y, c.W, 104, fill=WHITE)
    chevron(c, 20, y + 26, TEXT, 7, "left", 2)
    c.rect(40, y + 8, c.W - 40 - 60, 36, outline=accent, r=18, width=1.5, fill=WHITE)
    search_glass(c, 58, y + 26, 5)
    c.text(72, y + 26, c.t(v["query_zh"], v["query_en"]), 14, TEXT, anchor="lm", max_w=c.W - 190)
    c.rect(c.W - 20 - 56 - 24, y + 11, 56, 30, fill=accent, r=15)
    c.text(c.W - 48 - 24, y + 26, c.t("搜索", "Search"), 13, WHITE, anchor="mm")
    c.text(c.W - 20, y + 26, "⋯" if c.fonts.truetype else "...", 16, TEXT, anchor="mm")
    tabs = [c.t(a, b) for a, b in (("综合", "Relevance"), ("销量", "Best sellers"), ("价格", "Price"),
                                    ("筛选", "Filter"))]
    tx = 16.0
    for k, tab in enumerate(tabs):
        sel = k == v.get("sort", 0)
        w = c.text(tx, y + 76, tab, 14, accent if sel else TEXT2, bold=sel, anchor="lm")
        if k == 2:
            c.poly([(tx + w + 4, y + 73), (tx + w + 10, y + 73), (tx + w + 7, y + 69)], fill=TEXT3)
            c.poly([(tx + w + 4, y + 79), (tx + w + 10, y + 79), (tx + w + 7, y + 83)], fill=TEXT3)
        tx += (c.W - 32) / len(tabs)
    y += 104
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44) - 56
    cols = 2 if c.W < 520 else 3
    gap = 8.0
    cw = (c.W - gap * (cols + 1)) / cols
    rng = c.rng
    colh = [y + gap] * cols
    for i, item in enumerate(v["items"]):
        col = colh.index(min(colh))
        x = gap + col * (cw + gap)
        yy = colh[col]
        imgh = cw * (1.0 if i % 3 else 1.15)
        title = c.t(item[0], item[1])
        lines = c.wrap(title, 13, cw - 16)[:2]
        ch = imgh + 30 + 19 * len(lines) + 24
        if yy > bottom:
            continue
        c.rect(x, yy, cw, ch, fill=WHITE, r=8)
        draw_product(c, v["product"], x, yy, cw, imgh, i, rng)
        ty = yy + imgh + 8
        for line in lines:
            c.text(x + 8, ty + 9, line, 13, TEXT, anchor="lm")
            ty += 19
        if item[4]:
            tag = c.t(item[4], item[5])
            tw = c.tw(tag, 10)
            c.rect(x + 8, ty + 2, tw + 8, 16, outline=accent, r=3, width=0.8)
            c.text(x + 12, ty + 10, tag, 10, accent, anchor="lm")
        ty += 22
        cur = "¥" if c.lang == "zh" else "$"
        c.text(x + 8, ty + 12, cur, 12, accent, bold=True, anchor="ls")
        pw = c.text(x + 8 + c.tw(cur, 12), ty + 12, str(item[2]), 18, accent, bold=True, anchor="ls")
        c.text(x + 14 + c.tw(cur, 12) + pw, ty + 12, c.t(f"{item[3]}人付款", f"{item[3]} sold"), 11, TEXT3,
               anchor="ls", max_w=cw - pw - 30)
        colh[col] = yy + ch + gap
    # bottom tab bar
    by = bottom
    c.rect(0, by, c.W, 56, fill=WHITE)
    c.line([(0, by), (c.W, by)], DIVIDER, 0.6)
    labs = [c.t(a, b) for a, b in (("首页", "Home"), ("逛逛", "Discover"), ("消息", "Messages"),
                                    ("购物车", "Cart"), ("我的", "Me"))]
    gl = ["globe", "play", "bubble", "cart", "letter"]
    for k, lab in enumerate(labs):
        cx = c.W / 10 + k * c.W / 5
        col = accent if k == 0 else TEXT2
        glyph(c, gl[k], cx, by + 20, 20, col, WHITE, label=c.t("我", "M"))
        c.text(cx, by + 43, lab, 10, col, anchor="mm")
    nav_bar(c, nav, bg=WHITE)


def screen_map(c: Ctx, v: dict):
    rng = c.rng
    c.rect(0, 0, c.W, c.H, fill=hexc("#F2EFE9"))
    # blocks / parks / water
    for _ in range(14):
        x, y = rng.uniform(-40, c.W), rng.uniform(0, c.H)
        c.rect(x, y, rng.uniform(40, 120), rng.uniform(30, 90), fill=hexc("#E8E4DC"), r=4)
    for _ in range(3):
        x, y = rng.uniform(-30, c.W - 60), rng.uniform(80, c.H - 200)
        pts = [(x + rng.uniform(0, 30), y), (x + rng.uniform(80, 140), y + rng.uniform(-10, 20)),
               (x + rng.uniform(90, 150), y + rng.uniform(60, 110)),
               (x + rng.uniform(-10, 20), y + rng.uniform(70, 120))]
        c.poly(pts, fill=hexc("#CDEBC5"))
    wy = rng.uniform(c.H * 0.3, c.H * 0.6)
    c.line([(-10, wy), (c.W * 0.3, wy + 40), (c.W * 0.6, wy + 10), (c.W + 10, wy + 70)], hexc("#AAD3DF"), 26)
    roads = []
    for k in range(7):
        if k % 2:
            x0 = rng.uniform(0, c.W)
            pts = [(x0, -10), (x0 + rng.uniform(-60, 60), c.H / 2), (x0 + rng.uniform(-60, 60), c.H + 10)]
        else:
            y0 = rng.uniform(0, c.H)
            pts = [(-10, y0), (c.W / 2, y0 + rng.uniform(-50, 50)), (c.W + 10, y0 + rng.uniform(-50, 50))]
        roads.append(pts)
        major = k in (1, 2)
        c.line(pts, hexc("#D6D2C8"), 13 if major else 9)
        c.line(pts, hexc("#FFD966") if major else WHITE, 10 if major else 6.5)
    names = v["roads"]
    for k, pts in enumerate(roads[: len(names)]):
        (x0, y0), (x1, y1) = pts[0], pts[1]
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        if 40 < mx < c.W - 40 and 150 < my < c.H - 240:
            c.text(mx, my - 12, c.t(*names[k]), 10, hexc("#80776B"), anchor="mm")
    # POIs
    for nz, ne, col in v["pois"]:
        px, py = rng.uniform(40, c.W - 80), rng.uniform(150, c.H - 280)
        colr = hexc(col)
        c.circle(px, py - 14, 10, fill=colr, outline=WHITE, width=1.5)
        c.poly([(px - 6, py - 8), (px + 6, py - 8), (px, py)], fill=colr)
        c.circle(px, py - 14, 3.5, fill=WHITE)
        c.text(px + 14, py - 14, c.t(nz, ne), 11, mix(colr, BLACK, 0.3), bold=True, anchor="lm")
    # current location
    lx, ly = c.W * 0.45, c.H * 0.52
    c.circle(lx, ly, 26, fill=hexc("#CFE0FC"))
    c.circle(lx, ly, 9, fill=WHITE)
    c.circle(lx, ly, 6.5, fill=hexc("#1A73E8"))
    y = status_bar(c)
    # search card
    c.shadow_card(12, y + 6, c.W - 24, 48, r=24)
    chevron(c, 34, y + 30, TEXT, 6, "left", 2)
    c.text(54, y + 30, c.t(v["query_zh"], v["query_en"]) or c.t("搜索地点", "Search here"), 15,
           TEXT if v["query_en"] else TEXT3, anchor="lm", max_w=c.W - 130)
    avatar(c, c.W - 54, y + 16, 28, v.get("user", "A"), "#7E57C2", round_=True)
    # chips
    cx = 12.0
    for zh, en in v["chips"]:
        t = c.t(zh, en)
        w = c.tw(t, 12) + 24
        if cx + w > c.W:
            break
        c.shadow_card(cx, y + 64, w, 30, r=15, blur=3, alpha=40)
        c.text(cx + w / 2, y + 79, t, 12, TEXT, anchor="mm")
        cx += w + 8
    # bottom sheet
    nav = v.get("nav", "gesture")
    navh = 20 if nav == "gesture" else 44
    sh = 196
    sy = c.H - navh - sh
    c.shadow_card(0, sy, c.W, sh + navh + 20, r=20, blur=8)
    c.rect(c.W / 2 - 18, sy + 8, 36, 4, fill=hexc("#DADCE0"), r=2)
    place = v["place"]
    c.text(20, sy + 34, c.t(place[0], place[1]), 19, TEXT, bold=True, anchor="lm", max_w=c.W - 40)
    sx = 20.0
    c.text(sx, sy + 60, str(place[2]), 13, TEXT2, anchor="lm")
    sx += c.tw(str(place[2]), 13) + 6
    for k in range(5):
        fill = hexc("#FBBC04") if k < round(place[2]) else hexc("#DADCE0")
        px, py, r = sx + 6 + k * 14, sy + 60, 6
        pts = []
        for j in range(10):
            a = -math.pi / 2 + j * math.pi / 5
            rr = r if j % 2 == 0 else r * 0.45
            pts.append((px + math.cos(a) * rr, py + math.sin(a) * rr))
        c.poly(pts, fill=fill)
    c.text(sx + 80, sy + 60, c.t(place[3], place[4]), 13, TEXT2, anchor="lm", max_w=c.W - sx - 90)
    c.text(20, sy + 84, c.t(place[5], place[6]), 13, hexc("#188038"), anchor="lm", max_w=c.W - 40)
    bx = 20.0
    for k, (zh, en) in enumerate((("路线", "Directions"), ("开始导航", "Start"), ("收藏", "Save"),
                                  ("分享", "Share"))):
        t = c.t(zh, en)
        w = c.tw(t, 14) + 32
        if bx + w > c.W - 10:
            break
        if k < 2:
            c.rect(bx, sy + 106, w, 36, fill=hexc("#1A73E8") if k == 0 else hexc("#E8F0FE"), r=18)
            c.text(bx + w / 2, sy + 124, t, 14, WHITE if k == 0 else hexc("#1A73E8"), bold=True, anchor="mm")
        else:
            c.rect(bx, sy + 106, w, 36, outline=hexc("#DADCE0"), r=18, width=1)
            c.text(bx + w / 2, sy + 124, t, 14, hexc("#1A73E8"), anchor="mm")
        bx += w + 8
    if sy + 170 < c.H - navh:
        c.text(20, sy + 168, c.t(place[7], place[8]), 12, TEXT2, anchor="lm", max_w=c.W - 40)
    nav_bar(c, nav, bg=WHITE)


def screen_music(c: Ctx, v: dict):
    top = hexc(v["tint"])
    c.gradient(0, 0, c.W, c.H, top, mix(top, BLACK, 0.75))
    y = status_bar(c, fg=WHITE)
    chevron(c, 24, y + 26, WHITE, 7, "down", 2)
    c.text(c.W / 2, y + 18, c.t("正在播放", "PLAYING FROM PLAYLIST"), 11, mix(WHITE, top, 0.3), anchor="mm")
    c.text(c.W / 2, y + 36, c.t(v["list_zh"], v["list_en"]), 13, WHITE, bold=True, anchor="mm")
    for i in (-6, 0, 6):
        c.circle(c.W - 24 + i, y + 26, 1.8, fill=WHITE)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    art = min(c.W - 56, (bottom - y) * 0.5)
    ax, ay = (c.W - art) / 2, y + 64
    if v.get("photo"):
        c.paste_photo(v["photo"], ax, ay, art, art, r=10, focus=v.get("focus", (0.5, 0.5)))
    else:
        rng = c.rng
        c.gradient(ax, ay, art, art, mix(top, WHITE, 0.4), mix(top, BLACK, 0.3), r=10)
        for _ in range(6):
            c.circle(ax + rng.uniform(0.2, 0.8) * art, ay + rng.uniform(0.2, 0.8) * art, rng.uniform(0.05, 0.22) * art,
                     fill=mix(hexc(rng.choice(["#FFD166", "#EF476F", "#06D6A0", "#118AB2", "#FFFFFF"])), top, 0.3))
    y = ay + art + 28
    c.text(28, y, c.t(v["song_zh"], v["song_en"]), 22, WHITE, bold=True, anchor="lm", max_w=c.W - 90)
    c.text(28, y + 28, c.t(v["artist_zh"], v["artist_en"]), 15, mix(WHITE, top, 0.35), anchor="lm")
    heart(c, c.W - 40, y + 10, 11, hexc("#1DB954") if v.get("liked") else WHITE, filled=bool(v.get("liked")))
    y += 62
    frac = v["pos"] / v["dur"]
    c.rect(28, y, c.W - 56, 4, fill=mix(WHITE, top, 0.6), r=2)
    c.rect(28, y, (c.W - 56) * frac, 4, fill=WHITE, r=2)
    c.circle(28 + (c.W - 56) * frac, y + 2, 6, fill=WHITE)
    fmt = lambda s: f"{s // 60}:{s % 60:02d}"  # noqa: E731
    c.text(28, y + 18, fmt(v["pos"]), 11, mix(WHITE, top, 0.3), anchor="lm")
    c.text(c.W - 28, y + 18, fmt(v["dur"]), 11, mix(WHITE, top, 0.3), anchor="rm")
    y += 60
    cx = c.W / 2
    c.circle(cx, y, 30, fill=WHITE)
    if v.get("playing", True):
        c.rect(cx - 8, y - 10, 5.5, 20, fill=BLACK, r=1)
        c.rect(cx + 2.5, y - 10, 5.5, 20, fill=BLACK, r=1)
    else:
        c.poly([(cx - 7, y - 11), (cx - 7, y + 11), (cx + 11, y)], fill=BLACK)
    for sgn in (-1, 1):
        bx = cx + sgn * 76
        c.poly([(bx - sgn * 9, y - 10), (bx - sgn * 9, y + 10), (bx + sgn * 6, y)], fill=WHITE)
        c.rect(bx + sgn * 7 - 1.5, y - 10, 3, 20, fill=WHITE)
    # shuffle / repeat
    shc = hexc("#1DB954") if v.get("shuffle") else WHITE
    c.line([(30, y - 7), (38, y - 7), (50, y + 7), (58, y + 7)], shc, 1.8)
    c.line([(30, y + 7), (38, y + 7), (50, y - 7), (58, y - 7)], shc, 1.8)
    rx = c.W - 44
    rpc = hexc("#1DB954") if v.get("repeat") else WHITE
    c.rect(rx - 12, y - 8, 24, 16, outline=rpc, r=6, width=1.8)
    if v.get("repeat") == "one":
        c.text(rx, y, "1", 9, rpc, bold=True, anchor="mm")
    y += 58
    if y + 60 < bottom:
        c.rect(16, y, c.W - 32, bottom - y - 8, fill=mix(top, BLACK, 0.35), r=14)
        c.text(32, y + 24, c.t("歌词", "Lyrics"), 14, WHITE, bold=True, anchor="lm")
        for k, (lz, le) in enumerate(v["lyrics"]):
            ly = y + 56 + k * 28
            if ly > bottom - 24:
                break
            c.text(32, ly, c.t(lz, le), 16, WHITE if k == 0 else mix(WHITE, top, 0.45), bold=k == 0, anchor="lm",
                   max_w=c.W - 64)
    nav_bar(c, nav, fg=WHITE)


def screen_login(c: Ctx, v: dict):
    accent = hexc(v["accent"])
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    c.text(c.W - 20, y + 24, c.t("帮助", "Help"), 14, TEXT2, anchor="rm")
    y += 60
    c.rect(c.W / 2 - 36, y, 72, 72, fill=accent, r=18)
    c.text(c.W / 2, y + 36, v["logo"], 30, WHITE, bold=True, anchor="mm")
    y += 104
    c.text(c.W / 2, y, c.t(v["title_zh"], v["title_en"]), 24, TEXT, bold=True, anchor="mm")
    c.text(c.W / 2, y + 30, c.t(v["sub_zh"], v["sub_en"]), 13, TEXT2, anchor="mm", max_w=c.W - 48)
    y += 68
    fw = c.W - 48
    if v["mode"] == "phone":
        c.rect(24, y, fw, 52, fill=hexc("#F5F6F7"), r=12)
        c.text(40, y + 26, "+86", 16, TEXT, anchor="lm")
        chevron(c, 84, y + 26, TEXT2, 4, "down", 1.4)
        c.line([(98, y + 14), (98, y + 38)], DIVIDER, 1)
        c.text(112, y + 26, c.t("请输入手机号", "Phone number"), 16, TEXT3, anchor="lm")
        y += 64
        c.rect(24, y, fw, 52, fill=hexc("#F5F6F7"), r=12)
        c.text(40, y + 26, c.t("请输入验证码", "Verification code"), 16, TEXT3, anchor="lm")
        c.text(24 + fw - 16, y + 26, c.t("获取验证码", "Get code"), 14, accent, anchor="rm")
    else:
        c.text(24, y, c.t("邮箱", "Email"), 13, TEXT2, anchor="lm")
        c.rect(24, y + 12, fw, 50, outline=accent, r=10, width=1.6)
        c.text(40, y + 37, v.get("email", ""), 16, TEXT, anchor="lm")
        c.line([(40 + c.tw(v.get("email", ""), 16) + 2, y + 26), (40 + c.tw(v.get("email", ""), 16) + 2, y + 48)],
               accent, 1.5)
        y += 76
        c.text(24, y, c.t("密码", "Password"), 13, TEXT2, anchor="lm")
        c.rect(24, y + 12, fw, 50, outline=hexc("#C4C7C5"), r=10, width=1)
        for k in range(9):
            c.circle(44 + k * 13, y + 37, 3.5, fill=TEXT)
        c.ellipse(24 + fw - 40, y + 30, 22, 14, outline=TEXT2, width=1.4)
        c.circle(24 + fw - 29, y + 37, 3, fill=TEXT2)
        y += 14
    y += 70
    c.rect(24, y, fw, 50, fill=accent, r=25)
    c.text(c.W / 2, y + 25, c.t("登录", "Sign in"), 17, WHITE, bold=True, anchor="mm")
    y += 66
    c.rect(24, y - 7, 14, 14, outline=TEXT3, r=7, width=1.2)
    agree = c.t("我已阅读并同意《用户协议》和《隐私政策》", "I agree to the Terms of Service and Privacy Policy")
    c.text(44, y, agree, 11, TEXT2, anchor="lm", max_w=c.W - 64)
    y += 34
    c.text(24, y, c.t("忘记密码？", "Forgot password?"), 14, accent, anchor="lm")
    c.text(c.W - 24, y, c.t("注册新账号", "Create account"), 14, accent, anchor="rm")
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    oy = bottom - 90
    if oy > y + 40:
        c.line([(24, oy), (c.W / 2 - 60, oy)], DIVIDER, 1)
        c.line([(c.W / 2 + 60, oy), (c.W - 24, oy)], DIVIDER, 1)
        c.text(c.W / 2, oy, c.t("其他登录方式", "or continue with"), 12, TEXT3, anchor="mm")
        for k, (col, gl, lab) in enumerate(v["others"]):
            cx = c.W / 2 + (k - 1) * 70
            c.circle(cx, oy + 46, 22, outline=DIVIDER, width=1)
            glyph(c, gl, cx, oy + 46, 24, hexc(col), WHITE, label=lab)
    nav_bar(c, nav, bg=WHITE)


def screen_browser(c: Ctx, v: dict):
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c, bg=hexc("#F1F3F4"))
    c.rect(0, y, c.W, 52, fill=hexc("#F1F3F4"))
    c.rect(12, y + 8, c.W - 92, 36, fill=hexc("#E3E5E8"), r=18)
    c.rect(26, y + 25, 10, 8, fill=TEXT2, r=1.5)
    c.arc(31, y + 24, 3.5, 180, 360, TEXT2, 1.5)
    c.text(44, y + 26, v["url"], 14, TEXT, anchor="lm", max_w=c.W - 150)
    c.rect(c.W - 68, y + 16, 20, 20, outline=TEXT, r=4, width=1.6)
    c.text(c.W - 58, y + 26, str(v["tabs"]), 10, TEXT, bold=True, anchor="mm")
    for i in (-6, 0, 6):
        c.circle(c.W - 22, y + 26 + i, 1.8, fill=TEXT)
    y += 52
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44) - 48
    # site header
    sc = hexc(v["site_color"])
    c.rect(0, y, c.W, 48, fill=sc)
    c.text(16, y + 24, c.t(v["site_zh"], v["site_en"]), 18, WHITE, bold=True, anchor="lm")
    for i in (-5, 0, 5):
        c.rect(c.W - 32, y + 24 + i - 1, 16, 2, fill=WHITE)
    y += 64
    for line in c.wrap(c.t(v["head_zh"], v["head_en"]), 22, c.W - 32, bold=True)[:3]:
        c.text(16, y + 14, line, 22, TEXT, bold=True, anchor="lm")
        y += 30
    c.text(16, y + 12, c.t(v["meta_zh"], v["meta_en"]), 12, TEXT2, anchor="lm")
    y += 32
    ih = (c.W - 32) * 0.56
    c.paste_photo(v["photo"], 16, y, c.W - 32, ih, r=8, focus=v.get("focus", (0.5, 0.5)))
    y += ih + 6
    c.text(16, y + 8, c.t(v["cap_zh"], v["cap_en"]), 11, TEXT3, anchor="lm", max_w=c.W - 32)
    y += 24
    for para in c.t(v["body_zh"], v["body_en"]):
        for line in c.wrap(para, 15, c.W - 32):
            if y + 24 > bottom:
                break
            c.text(16, y + 12, line, 15, hexc("#303134"), anchor="lm")
            y += 25
        y += 10
    # bottom toolbar
    c.rect(0, bottom, c.W, 48, fill=hexc("#F1F3F4"))
    n = 5
    for k in range(n):
        cx = c.W / (2 * n) + k * c.W / n
        cy = bottom + 24
        if k == 0:
            chevron(c, cx, cy, TEXT, 7, "left", 2)
        elif k == 1:
            chevron(c, cx, cy, TEXT3, 7, "right", 2)
        elif k == 2:
            c.poly([(cx - 9, cy), (cx, cy - 9), (cx + 9, cy)], outline=TEXT)
            c.rect(cx - 6, cy, 12, 8, outline=TEXT, width=1.5)
        elif k == 3:
            c.rect(cx - 8, cy - 8, 16, 16, outline=TEXT, r=3, width=1.6)
        else:
            for i in (-6, 0, 6):
                c.rect(cx - 8, cy + i - 1, 16, 2, fill=TEXT)
    nav_bar(c, nav, bg=hexc("#F1F3F4"))


def screen_shade(c: Ctx, v: dict):
    top, bot = hexc(v["wall"][0]), hexc(v["wall"][1])
    c.gradient(0, 0, c.W, c.H, mix(top, BLACK, 0.55), mix(bot, BLACK, 0.7))
    y = status_bar(c, fg=WHITE)
    c.text(20, y + 30, c.clock, 34, WHITE, anchor="lm")
    c.text(24 + c.tw(c.clock, 34), y + 36, c.t(v["date_zh"], v["date_en"]), 13, mix(WHITE, top, 0.2), anchor="lm")
    glyph(c, "gear", c.W - 28, y + 30, 22, WHITE, mix(top, BLACK, 0.55))
    y += 62
    tiles = v["tiles"]
    cols = 4
    tw = (c.W - 32) / cols
    for k, (gl, zh, en, on) in enumerate(tiles):
        r, col = divmod(k, cols)
        cx = 16 + col * tw + tw / 2
        cy = y + r * 84 + 28
        fill = hexc("#8AB4F8") if on else mix(WHITE, top, 0.75)
        fill = fill if on else mix(fill, BLACK, 0.45)
        c.rect(cx - 26, cy - 26, 52, 52, fill=fill, r=18)
        glyph(c, gl, cx, cy, 26, TEXT if on else WHITE, fill, label=c.t(zh, en)[:1])
        c.text(cx, cy + 40, c.t(zh, en), 11, WHITE, anchor="mm", max_w=tw - 4)
    y += ((len(tiles) + cols - 1) // cols) * 84 + 8
    # brightness
    c.rect(20, y, c.W - 40, 36, fill=mix(WHITE, BLACK, 0.55), r=18)
    c.rect(20, y, (c.W - 40) * v["brightness"], 36, fill=hexc("#E8EAED"), r=18)
    glyph(c, "display", 40, y + 18, 18, TEXT, WHITE)
    y += 52
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    for app_key, zh_app, en_app, col, tm, title, body in v["notes"]:
        body_t = c.t(body[0], body[1])
        lines = c.wrap(body_t, 13, c.W - 96)[:2]
        h = 58 + 19 * len(lines)
        if y + h > bottom - 50:
            break
        c.rect(12, y, c.W - 24, h, fill=hexc("#F8F9FA"), r=20)
        icol = hexc(col)
        c.circle(36, y + 26, 14, fill=icol)
        glyph(c, app_key, 36, y + 26, 18, WHITE, icol, label=c.t(zh_app, en_app)[:1])
        c.text(58, y + 18, c.t(zh_app, en_app) + " · " + tm, 11, TEXT2, anchor="lm", max_w=c.W - 90)
        c.text(58, y + 37, c.t(title[0], title[1]), 14, TEXT, bold=True, anchor="lm", max_w=c.W - 90)
        for i, line in enumerate(lines):
            c.text(58, y + 57 + 19 * i, line, 13, TEXT2, anchor="lm")
        chevron(c, c.W - 34, y + 18, TEXT2, 4, "down", 1.4)
        y += h + 8
    c.rect(c.W - 110, y + 4, 90, 32, fill=mix(WHITE, BLACK, 0.6), r=16)
    c.text(c.W - 65, y + 20, c.t("全部清除", "Clear all"), 13, WHITE, anchor="mm")
    nav_bar(c, nav, fg=WHITE)


def screen_calendar(c: Ctx, v: dict):
    accent = hexc(v.get("accent", "#1A73E8"))
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    year, month, today = v["year"], v["month"], v["today"]
    title = c.t(f"{year}年{month}月", f"{calendar.month_name[month]} {year}")
    c.text(20, y + 28, title, 22, TEXT, bold=True, anchor="lm")
    chevron(c, 24 + c.tw(title, 22, True) + 10, y + 28, TEXT, 5, "down", 1.8)
    search_glass(c, c.W - 96, y + 28, 6.5, TEXT)
    c.rect(c.W - 74, y + 18, 22, 20, outline=TEXT, r=4, width=1.6)
    c.text(c.W - 63, y + 29, str(today), 9, TEXT, bold=True, anchor="mm")
    for i in (-6, 0, 6):
        c.circle(c.W - 24, y + 28 + i, 1.7, fill=TEXT)
    y += 60
    heads = (["日", "一", "二", "三", "四", "五", "六"] if c.lang == "zh" else
             ["S", "M", "T", "W", "T", "F", "S"])
    cw = (c.W - 16) / 7
    for k, hname in enumerate(heads):
        c.text(8 + cw * k + cw / 2, y, hname, 12, TEXT2, anchor="mm")
    y += 18
    cal = calendar.Calendar(firstweekday=6).monthdayscalendar(year, month)
    rh = 46.0
    ev_days = {d for d, *_ in v["events"]}
    for r, week in enumerate(cal):
        for k, day in enumerate(week):
            if not day:
                continue
            cx, cy = 8 + cw * k + cw / 2, y + r * rh + 18
            if day == today:
                c.circle(cx, cy, 15, fill=accent)
                fg = WHITE
            elif day == v.get("selected"):
                c.circle(cx, cy, 15, fill=mix(accent, WHITE, 0.8))
                fg = accent
            else:
                fg = hexc("#D93025") if k in (0, 6) else TEXT
            c.text(cx, cy, str(day), 14, fg, bold=day == today, anchor="mm")
            if day in ev_days:
                c.circle(cx, cy + 22, 2.5, fill=hexc("#F4511E"))
    y += len(cal) * rh + 12
    c.line([(0, y), (c.W, y)], DIVIDER, 1)
    sel = v.get("selected", today)
    wd = calendar.weekday(year, month, sel)
    wk_zh = "一二三四五六日"[wd]
    c.text(20, y + 26, c.t(f"{month}月{sel}日 星期{wk_zh}",
                           f"{calendar.day_name[wd]}, {calendar.month_abbr[month]} {sel}"),
           15, TEXT, bold=True, anchor="lm")
    y += 48
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    evs = [e for e in v["events"] if e[0] == sel] + [e for e in v["events"] if e[0] != sel]
    for day, tm, zh, en, lz, le, col in evs:
        if y + 66 > bottom - 10:
            break
        c.rect(16, y, c.W - 32, 58, fill=mix(hexc(col), WHITE, 0.88), r=10)
        c.rect(16, y, 5, 58, fill=hexc(col), r=2)
        c.text(32, y + 19, c.t(zh, en), 15, TEXT, bold=True, anchor="lm", max_w=c.W - 130)
        when = tm if day == sel else c.t(f"{month}月{day}日 {tm}", f"{calendar.month_abbr[month]} {day}, {tm}")
        c.text(32, y + 40, when + ("  ·  " + c.t(lz, le) if lz else ""), 12, TEXT2, anchor="lm", max_w=c.W - 70)
        y += 66
    # FAB
    fx, fy = c.W - 48, bottom - 44
    c.shadow_card(fx - 28, fy - 28, 56, 56, r=18, fill=mix(accent, WHITE, 0.85), blur=4)
    c.line([(fx - 10, fy), (fx + 10, fy)], accent, 2.5)
    c.line([(fx, fy - 10), (fx, fy + 10)], accent, 2.5)
    nav_bar(c, nav, bg=WHITE)


def screen_clock(c: Ctx, v: dict):
    dark = v.get("dark", False)
    bg = hexc("#202124") if dark else hexc("#F6F8FC")
    fg = WHITE if dark else TEXT
    card = hexc("#2D2F31") if dark else WHITE
    accent = hexc("#8AB4F8") if dark else hexc("#1A73E8")
    c.rect(0, 0, c.W, c.H, fill=bg)
    y = status_bar(c, fg=fg)
    c.text(20, y + 30, c.t("闹钟", "Alarm"), 26, fg, bold=True, anchor="lm")
    for i in (-6, 0, 6):
        c.circle(c.W - 24, y + 30 + i, 1.7, fill=fg)
    y += 64
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44) - 64
    for tm, zh, en, on in v["alarms"]:
        if y + 96 > bottom - 70:
            break
        c.rect(12, y, c.W - 24, 88, fill=card, r=20)
        col = fg if on else mix(fg, bg, 0.55)
        c.text(28, y + 40, tm, 40, col, anchor="lm")
        c.text(28, y + 72, c.t(zh, en), 12, mix(fg, bg, 0.35), anchor="lm", max_w=c.W - 120)
        toggle(c, c.W - 68, y + 29, on, accent)
        y += 96
    fx, fy = c.W / 2, bottom - 40
    c.rect(fx - 36, fy - 28, 72, 56, fill=accent, r=20)
    c.line([(fx - 11, fy), (fx + 11, fy)], bg, 3)
    c.line([(fx, fy - 11), (fx, fy + 11)], bg, 3)
    # bottom tabs
    by = bottom
    c.rect(0, by, c.W, 64, fill=card)
    labs = [(("闹钟", "Alarm"), "clock"), (("世界时钟", "Clock"), "globe"), (("计时器", "Timer"), "bell"),
            (("秒表", "Stopwatch"), "clock")]
    for k, ((zh, en), gl) in enumerate(labs):
        cx = c.W / 8 + k * c.W / 4
        col = accent if k == 0 else mix(fg, bg, 0.3)
        if k == 0:
            c.rect(cx - 28, by + 8, 56, 28, fill=mix(accent, card, 0.7), r=14)
        glyph(c, gl, cx, by + 22, 18, col, mix(accent, card, 0.7) if k == 0 else card)
        c.text(cx, by + 48, c.t(zh, en), 11, col, anchor="mm")
    nav_bar(c, nav, fg=fg, bg=card)


def screen_gallery(c: Ctx, v: dict):
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    c.text(16, y + 30, c.t("相册", "Photos"), 26, TEXT, bold=True, anchor="lm")
    search_glass(c, c.W - 66, y + 30, 7, TEXT)
    for i in (-6, 0, 6):
        c.circle(c.W - 24, y + 30 + i, 1.7, fill=TEXT)
    y += 62
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44) - 58
    cols = max(3, int(c.W // 110))
    gap = 2.0
    cell = (c.W - gap * (cols - 1)) / cols
    rng = c.rng
    tiles = list(v["tiles"])
    k = 0
    for zh, en, n in v["groups"]:
        if y + 36 + cell * 0.6 > bottom:
            break
        c.text(16, y + 18, c.t(zh, en), 15, TEXT, bold=True, anchor="lm")
        y += 36
        for i in range(n):
            r, col = divmod(i, cols)
            x, yy = col * (cell + gap), y + r * (cell + gap)
            if yy + cell > bottom:
                break
            name = tiles[k % len(tiles)]
            k += 1
            if name == "gradient":
                a, b = hexc(rng.choice(["#FFB74D", "#4FC3F7", "#81C784", "#BA68C8", "#F06292", "#90A4AE"])), \
                    hexc(rng.choice(["#263238", "#1A237E", "#004D40", "#3E2723"]))
                c.gradient(x, yy, cell, cell, a, b)
            else:
                c.paste_photo(name, x, yy, cell, cell, focus=(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)),
                              zoom=rng.choice([1.0, 1.0, 1.4, 2.0]))
            if i == 0 and v.get("select_first"):
                c.circle(x + cell - 14, yy + 14, 9, fill=hexc("#1A73E8"), outline=WHITE, width=1.5)
                c.line([(x + cell - 18, yy + 14), (x + cell - 15, yy + 17), (x + cell - 10, yy + 11)], WHITE, 1.6)
        y += ((n + cols - 1) // cols) * (cell + gap) + 12
    c.rect(0, bottom, c.W, 58, fill=WHITE)
    c.line([(0, bottom), (c.W, bottom)], DIVIDER, 0.6)
    labs = [(("照片", "Photos"), "photo"), (("相簿", "Albums"), "letter"), (("发现", "Search"), "globe")]
    for k, ((zh, en), gl) in enumerate(labs):
        cx = c.W / 6 + k * c.W / 3
        col = hexc("#1A73E8") if k == 0 else TEXT2
        glyph(c, gl, cx, bottom + 20, 20, col, WHITE, label=c.t("簿", "A"))
        c.text(cx, bottom + 44, c.t(zh, en), 11, col, anchor="mm")
    nav_bar(c, nav, bg=WHITE)


RENDERERS: dict[str, Callable[[Ctx, dict], None]] = {
    "settings": screen_settings,
    "settings_tablet": screen_settings_tablet,
    "chat": screen_chat,
    "chat_tablet": screen_chat_tablet,
    "home": screen_home,
    "shopping": screen_shopping,
    "map": screen_map,
    "music": screen_music,
    "login": screen_login,
    "browser": screen_browser,
    "shade": screen_shade,
    "calendar": screen_calendar,
    "clock": screen_clock,
    "gallery": screen_gallery,
}


# --------------------------------------------------------------------------------------------
# Data: which screens, photos and instructions go into which split
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Screen:
    name: str  # file stem, unique across both splits
    split: str
    kind: str  # key of RENDERERS
    lang: str  # language of the screen's UI text
    size: tuple[int, int]  # (width, height) in pixels
    params: dict
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Photo:
    name: str  # skimage.data function name
    split: str
    prompts: tuple[str, ...]


# Photos are split too: a held-out photo never appears in a calibration screen (not even as a
# thumbnail), so held-out accuracy is measured on pixels the INT8 scales never saw.
PHOTO_SPLIT = {"astronaut": "calib", "coffee": "calib", "rocket": "calib", "camera": "calib",
               "chelsea": "heldout", "hubble_deep_field": "heldout"}

SHOP_EARBUDS = [
    ("【官方旗舰】真无线蓝牙耳机 主动降噪 超长续航", "True wireless earbuds, active noise cancelling", 299, "1万+", "包邮", "Free shipping"),
    ("运动蓝牙耳机 挂耳式 防水防汗", "Sport earbuds with ear hooks, sweat-proof", 89, "5000+", "", ""),
    ("半入耳式无线耳机 游戏低延迟 高音质", "Semi in-ear wireless earbuds, low latency", 159, "2万+", "满减", "Deal"),
    ("骨传导耳机 不入耳 跑步专用", "Bone conduction headphones for running", 399, "3000+", "新品", "New"),
    ("降噪蓝牙耳机 适用苹果华为小米", "Noise-cancelling earbuds for any phone", 129, "8000+", "包邮", "Free shipping"),
    ("迷你隐形睡眠耳机 侧睡不压耳", "Mini sleep earbuds, low profile", 69, "1万+", "", ""),
]
SHOP_COFFEE = [
    ("中度烘焙咖啡豆 1kg", "Medium roast whole bean coffee, 2 lb bag", "18.99", "2k+", "", "Prime"),
    ("挂耳咖啡 黑咖啡 30包", "Single-origin drip bags, 30 count", "24.50", "900+", "", "Best seller"),
    ("手冲咖啡壶套装", "Pour-over coffee maker set with filters", "32.00", "1k+", "", "Prime"),
    ("意式浓缩咖啡胶囊 50粒", "Espresso capsules, intense roast, 50 pods", "27.99", "3k+", "", "Deal"),
    ("冷萃咖啡浓缩液", "Cold brew concentrate, unsweetened", "12.49", "650+", "", ""),
    ("拿铁速溶咖啡粉", "Instant latte mix, 20 sachets", "9.99", "4k+", "", "Prime"),
]
SHOP_KEYBOARD = [
    ("机械键盘 87键 热插拔 红轴 RGB背光", "87-key hot-swap mechanical keyboard, red switches", 239, "2万+", "自营", "Official"),
    ("无线三模机械键盘 茶轴 办公游戏", "Tri-mode wireless mechanical keyboard, brown switches", 349, "5000+", "满减", "Deal"),
    ("入门机械键盘 青轴 104键", "Entry 104-key mechanical keyboard, blue switches", 99, "3万+", "", ""),
    ("客制化键盘套件 铝合金外壳", "Custom keyboard kit, aluminium case", 599, "800+", "新品", "New"),
    ("矮轴超薄机械键盘 蓝牙", "Low-profile Bluetooth mechanical keyboard", 429, "1000+", "自营", "Official"),
    ("复古打字机键盘 圆形键帽", "Retro typewriter keyboard, round keycaps", 189, "6000+", "", ""),
]

SCREENS: list[Screen] = [
    # ---------------------------------------------------------------- calib (24 screens)
    Screen("settings_zh", "calib", "settings", "zh", (360, 780),
           dict(wifi=False, wifi_ssid="Home-5G", bt=True, bt_dev="FreeBuds", user="王小明", battery=64,
                nav="buttons", model="Phone 12 Pro"),
           ("打开WLAN并连接名为Home-5G的网络", "关闭蓝牙", "把屏幕亮度调到最高", "Turn on airplane mode")),
    Screen("settings_en", "calib", "settings", "en", (540, 1170),
           dict(wifi=True, wifi_ssid="CoffeeShop_Guest", bt=False, bt_dev="", user="Alex Chen", dnd=True,
                accent="#0B57D0", used=101.7),
           ("Open Settings and turn on Bluetooth", "Turn off Wi-Fi",
            "Check how much storage is left on the phone", "关闭勿扰模式")),
    Screen("chat_wechat_zh", "calib", "chat", "zh", (540, 1170),
           dict(style="wechat", contact="张三", me="我", contact_color="#E76F51", messages=[
               ("time", "昨天 18:42"), ("in", "明天的会议改到下午三点了，你知道吗？"), ("out", "知道了，我会准时到的"),
               ("in", "好的，记得带上上次的方案"), ("time", "09:12"), ("in", "你到哪了？大家都在等你"),
               ("out", "路上有点堵车"), ("in", "那我们先开始，你到了直接进会议室")]),
           ("打开微信给张三发消息说我晚点到", "回复张三：好的，我二十分钟后到", "给张三发送我的实时位置")),
    Screen("chat_sms_en", "calib", "chat", "en", (360, 780),
           dict(style="sms", contact="Alice", number="+1 415-555-0132", contact_color="#2A9D8F", nav="buttons",
                messages=[("time", "Yesterday 7:15 PM"), ("in", "Are we still on for dinner tomorrow?"),
                          ("out", "Yes! 7pm at the Thai place?"), ("in", "Perfect. Should I book a table?"),
                          ("out", "Please do, for 4 people"), ("time", "Today 8:03 AM"),
                          ("in", "Booked for 7pm. See you tonight!")]),
           ("Reply to Alice saying I'll be there in 10 minutes", "Send Alice the photo I took yesterday",
            "Start a video call with Alice")),
    Screen("home_zh", "calib", "home", "zh", (360, 780),
           dict(wall=("#4A6FA5", "#C06C84"), time="09:41", date_zh="3月12日 星期三", date_en="Wednesday, March 12",
                nav="buttons"),
           ("打开支付宝的付款码", "打开相机拍一张照片", "打开小红书搜索杭州旅游攻略")),
    Screen("home_en", "calib", "home", "en", (412, 915),
           dict(wall=("#355C7D", "#F67280"), time="7:05", date_zh="4月8日 星期二", date_en="Tuesday, April 8"),
           ("Open the Clock app", "Open Gmail and check the latest email", "Move the Camera icon to the dock",
            "打开Spotify播放我的每日推荐")),
    Screen("shop_earbuds_zh", "calib", "shopping", "zh", (360, 780),
           dict(query_zh="蓝牙耳机", query_en="bluetooth earbuds", product="earbuds", accent="#FF5000", sort=0,
                items=SHOP_EARBUDS, nav="buttons"),
           ("在淘宝搜索蓝牙耳机并按销量排序", "把第一个商品加入购物车", "筛选价格在100到300元之间的耳机")),
    Screen("shop_coffee_en", "calib", "shopping", "en", (540, 1170),
           dict(query_zh="咖啡豆", query_en="coffee beans", product="photo:coffee", accent="#E47911", sort=1,
                items=SHOP_COFFEE),
           ("Search for a coffee grinder and sort by price from low to high", "Add the second item to my cart",
            "Show only items rated 4 stars and up", "把第一款咖啡豆的链接发给李四")),
    Screen("map_zh", "calib", "map", "zh", (360, 780),
           dict(query_zh="咖啡", query_en="coffee", nav="buttons",
                roads=[("建国路", "Jianguo Rd"), ("东三环中路", "E 3rd Ring Rd"), ("光华路", "Guanghua Rd")],
                pois=[("中国石化加油站", "Sinopec gas", "#E53935"), ("国贸地铁站", "Guomao Station", "#1E88E5"),
                      ("朝阳公园", "Chaoyang Park", "#43A047"), ("全家便利店", "FamilyMart", "#00897B")],
                chips=[("美食", "Food"), ("加油站", "Gas"), ("酒店", "Hotels"), ("停车场", "Parking")],
                place=("星巴克(国贸店)", "Starbucks (CBD)", 4.5, "咖啡厅 · 350米", "Café · 350 m",
                       "营业中 · 22:00打烊", "Open · Closes 10 PM", "建国门外大街1号国贸商城B1",
                       "1 Jianguomenwai Ave, B1")),
           ("用高德地图导航去最近的加油站", "搜索附近的咖啡店", "查一下从这里步行到国贸地铁站要多久")),
    Screen("map_en", "calib", "map", "en", (540, 1170),
           dict(query_zh="", query_en="",
                roads=[("第一大道", "1st Ave"), ("派恩街", "Pine St"), ("阿拉斯加路", "Alaskan Way")],
                pois=[("沃尔格林药店", "Walgreens", "#E53935"), ("流明球场", "Lumen Field", "#1E88E5"),
                      ("滨水公园", "Waterfront Park", "#43A047")],
                chips=[("餐厅", "Restaurants"), ("咖啡", "Coffee"), ("加油", "Gas"), ("超市", "Groceries")],
                place=("派克市场", "Pike Place Market", 4.7, "市场 · 1.9公里", "Market · 1.2 mi",
                       "营业中 · 18:00关门", "Open · Closes 6 PM", "西雅图派克街85号", "85 Pike St, Seattle")),
           ("Find the nearest pharmacy and start walking directions", "Search for Italian restaurants nearby",
            "Save Pike Place Market to my favorites")),
    Screen("music_zh", "calib", "music", "zh", (540, 1170),
           dict(tint="#8E3B46", song_zh="夏夜的风", song_en="Summer Night Wind", artist_zh="林一",
                artist_en="Lin Yi", list_zh="我喜欢的音乐", list_en="Liked songs", pos=83, dur=245,
                lyrics=[("晚风吹过街角的路灯", "The evening wind passes the corner lamp"),
                        ("你说夏天还很长", "You said the summer is still long"),
                        ("我们沿着河岸慢慢走", "We walk slowly along the river"),
                        ("把星星装进口袋", "Putting the stars in our pockets")]),
           ("暂停正在播放的歌曲", "切到下一首歌", "把这首歌加入我喜欢的音乐")),
    Screen("music_en", "calib", "music", "en", (360, 780),
           dict(tint="#1E3A5F", photo="astronaut", focus=(0.45, 0.35), song_zh="轨道", song_en="Orbit",
                artist_zh="夜班乐队", artist_en="The Night Shifts", list_zh="跑步歌单", list_en="Running Mix",
                pos=131, dur=212, nav="buttons",
                lyrics=[("我们在寂静中漂流", "We drift in the quiet"), ("离家很远", "A long way from home"),
                        ("数着灯火", "Counting the lights"), ("直到天亮", "Until the morning comes")]),
           ("Play the next song", "Turn on shuffle", "Skip back to the previous song")),
    Screen("login_phone_zh", "calib", "login", "zh", (360, 780),
           dict(accent="#1677FF", logo="云", title_zh="欢迎登录", title_en="Welcome",
                sub_zh="未注册的手机号验证后将自动创建账号", sub_en="New numbers are registered automatically",
                mode="phone", nav="buttons",
                others=[("#07C160", "chat", ""), ("#12B7F5", "letter", "Q"), ("#E6162D", "letter", "微")]),
           ("输入手机号13800138000并获取验证码", "用微信一键登录")),
    Screen("login_email_en", "calib", "login", "en", (540, 1170),
           dict(accent="#6750A4", logo="N", title_zh="欢迎回来", title_en="Welcome back",
                sub_zh="登录以继续使用 Notely", sub_en="Sign in to continue to Notely", mode="email",
                email="alex@example.com",
                others=[("#EA4335", "letter", "G"), ("#0A66C2", "letter", "in"), ("#1877F2", "letter", "f")]),
           ("Sign in with the email alex@example.com and my saved password", "Create a new account",
            "点击忘记密码，通过邮箱重置密码")),
    Screen("browser_zh", "calib", "browser", "zh", (540, 1170),
           dict(url="news.example.cn/tech/2025/0312", tabs=3, site_color="#C62828", site_zh="星河新闻",
                site_en="Galaxy News", head_zh="新一代可回收火箭完成第十次发射与着陆",
                head_en="Reusable rocket completes its tenth launch and landing",
                meta_zh="星河新闻 · 2025-03-12 08:30 · 阅读 2.3万", meta_en="Galaxy News · Mar 12, 2025 · 23k reads",
                photo="rocket", cap_zh="火箭从发射台升空（资料图）", cap_en="The rocket lifts off (file photo)",
                body_zh=["本报讯 昨日清晨，一枚可回收运载火箭从沿海发射场升空，将一颗气象卫星送入预定轨道。",
                         "约八分钟后，火箭一级在海上回收平台平稳着陆，这是该型号第十次成功回收。",
                         "专家表示，重复使用可以显著降低发射成本，未来一年计划再执行二十次任务。"],
                body_en=["A reusable rocket lifted off from a coastal launch site early yesterday and put a weather "
                         "satellite into its planned orbit.",
                         "About eight minutes later the first stage landed on a recovery platform at sea, the tenth "
                         "successful recovery for this model."]),
           ("把这个网页添加到书签", "把这篇文章分享给微信好友李四", "在浏览器里打开百度搜索今天的天气")),
    Screen("browser_en", "calib", "browser", "en", (360, 780),
           dict(url="dailybrew.example.com/guides/brew", tabs=12, site_color="#5D4037", site_zh="每日咖啡",
                site_en="The Daily Brew", head_zh="在家冲出一杯好咖啡的五个诀窍",
                head_en="Five ways to brew a better cup of coffee at home",
                meta_zh="作者 Sam · 5分钟阅读", meta_en="By Sam Rivera · 5 min read", photo="coffee",
                cap_zh="拉花拿铁", cap_en="A latte with milk foam art", nav="buttons",
                body_zh=["新鲜研磨的咖啡豆是好咖啡的开始。", "水温保持在九十度左右最合适。"],
                body_en=["Start with freshly ground beans: coffee loses much of its aroma within minutes of "
                         "grinding.", "Keep the water just off the boil, around 92 to 96 degrees Celsius, and "
                         "weigh both the coffee and the water.", "Finally, clean your equipment after every use."]),
           ("Open Chrome and go to wikipedia.org", "Scroll down and read the rest of this article",
            "Open a new incognito tab")),
    Screen("shade_zh", "calib", "shade", "zh", (360, 780),
           dict(wall=("#3A6073", "#16222A"), time="14:26", date_zh="3月12日 周三", date_en="Wed, Mar 12",
                brightness=0.6, nav="buttons",
                tiles=[("wifi", "WLAN", "Wi-Fi", True), ("bluetooth", "蓝牙", "Bluetooth", False),
                       ("torch", "手电筒", "Flashlight", False), ("plane", "飞行模式", "Airplane", False),
                       ("moon", "勿扰模式", "Do Not Disturb", False), ("pin", "定位", "Location", True),
                       ("letter", "热点", "Hotspot", False), ("display", "护眼", "Eye comfort", False)],
                notes=[("chat", "微信", "WeChat", "#07C160", "2分钟前", ("张三", "Zhang San"),
                        ("晚上一起吃饭吗？我订了七点的位子", "Dinner tonight? I booked a table at 7")),
                       ("calendar", "日历", "Calendar", "#4285F4", "14:00", ("项目周会", "Weekly project sync"),
                        ("15:00 - 16:00 · 3号会议室", "3:00 - 4:00 PM · Room 3")),
                       ("cart", "淘宝", "Taobao", "#FF5000", "1小时前", ("您的包裹已发货", "Your package has shipped"),
                        ("您购买的蓝牙耳机已由快递揽收，预计明天送达", "Your earbuds were picked up and arrive tomorrow"))]),
           ("打开手电筒", "开启勿扰模式", "清除所有通知")),
    Screen("shade_en", "calib", "shade", "en", (540, 1170),
           dict(wall=("#614385", "#516395"), time="8:12", date_zh="4月8日 周二", date_en="Tue, Apr 8",
                brightness=0.35,
                tiles=[("wifi", "WLAN", "Internet", True), ("bluetooth", "蓝牙", "Bluetooth", True),
                       ("torch", "手电筒", "Flashlight", False), ("letter", "热点", "Hotspot", False),
                       ("moon", "勿扰", "Do Not Disturb", True), ("battery", "省电", "Battery Saver", False),
                       ("plane", "飞行模式", "Airplane mode", False), ("pin", "定位", "Location", True)],
                notes=[("bubble", "信息", "Messages", "#1A73E8", "now", ("妈妈", "Mom"),
                        ("落地给我打电话", "Call me when you land, love you")),
                       ("mail", "邮件", "Gmail", "#EA4335", "12 min", ("航班已确认", "Your flight is confirmed"),
                        ("SEA → SFO, 4月9日 07:40", "SEA → SFO, Wed Apr 9, 7:40 AM, seat 14C")),
                       ("cart", "外卖", "Uber Eats", "#06C167", "25 min", ("订单配送中", "Your order is on the way"),
                        ("预计 8:30 送达", "Arriving around 8:30 AM"))]),
           ("Open the message from Mom in the notification", "Turn on the mobile hotspot", "把亮度调到最低")),
    Screen("calendar_zh", "calib", "calendar", "zh", (540, 1170),
           dict(year=2025, month=3, today=12, selected=13,
                events=[(13, "15:00", "产品评审", "Product review", "3号会议室", "Room 3", "#1A73E8"),
                        (12, "19:30", "健身", "Gym", "", "", "#33B679"),
                        (14, "全天", "妈妈生日", "Mom's birthday", "", "", "#E67C73"),
                        (21, "10:00", "牙医复诊", "Dentist", "口腔医院", "Dental clinic", "#F6BF26"),
                        (28, "09:00", "季度汇报", "Quarterly review", "", "", "#8E24AA")]),
           ("在日历上添加明天下午三点和王经理开会的日程", "查看下周五有什么安排")),
    Screen("calendar_en", "calib", "calendar", "en", (360, 780),
           dict(year=2025, month=4, today=8, selected=8, accent="#0B8043", nav="buttons",
                events=[(8, "9:00 AM", "周会", "Team sync", "线上", "Zoom", "#039BE5"),
                        (8, "12:30 PM", "午餐", "Lunch with Priya", "", "Café Nero", "#F4511E"),
                        (11, "6:00 PM", "足球", "Soccer practice", "", "Park field", "#33B679"),
                        (18, "All day", "耶稣受难日", "Good Friday", "", "", "#8E24AA")]),
           ("Create an event called Dentist on April 14 at 9 AM", "Delete the Team sync event",
            "Switch the calendar to week view")),
    Screen("clock_zh", "calib", "clock", "zh", (360, 780),
           dict(alarms=[("06:50", "工作日 | 起床", "Weekdays | Wake up", True), ("07:30", "仅一次", "Once", False),
                        ("12:30", "周一至周五 | 午休结束", "Mon-Fri | End of lunch break", True),
                        ("22:30", "每天 | 该睡觉了", "Every day | Bedtime", False)], nav="buttons"),
           ("设置一个明天早上7点半的闹钟", "关闭所有工作日的闹钟")),
    Screen("clock_en", "calib", "clock", "en", (540, 1170),
           dict(dark=True, alarms=[("6:30", "周一至周五", "Mon, Tue, Wed, Thu, Fri", True),
                                   ("8:00", "周末", "Sat, Sun · Weekend", False),
                                   ("9:45", "每天 · 吃药", "Every day · Take medicine", True)]),
           ("Set an alarm for 7:30 tomorrow", "Start a 10-minute timer", "Delete the 9:45 alarm")),
    # non-standard size: a foldable's inner screen, nearly square
    Screen("gallery_fold_zh", "calib", "gallery", "zh", (600, 720),
           dict(tiles=["astronaut", "coffee", "rocket", "gradient", "camera", "coffee", "gradient", "rocket"],
                groups=[("今天", "Today", 5), ("3月10日", "March 10", 7), ("2月28日", "February 28", 6)]),
           ("把最新的一张照片发到朋友圈", "删除那张火箭的照片", "新建一个名为“旅行”的相册")),
    # landscape tablet, two panes
    Screen("settings_tablet_en", "calib", "settings_tablet", "en", (960, 600),
           dict(wifi=True, wifi_ssid="Office-5G", bt=True, bt_dev="Pixel Buds", model="Pad 11",
                paired=[("Pixel Buds Pro", "Connected"), ("Car Audio", "Not connected"),
                        ("Logi K380 Keyboard", "Not connected")],
                available=["JBL Flip 5", "Mi Smart Band 8", "Living Room TV"]),
           ("Pair the tablet with the JBL Flip 5 speaker", "Disconnect the Pixel Buds Pro",
            "Go to Display settings and set the screen timeout to 5 minutes")),
    # ---------------------------------------------------------------- heldout (9 screens)
    Screen("h_settings_en", "heldout", "settings", "en", (412, 915),
           dict(wifi=True, wifi_ssid="Starlight-Home", bt=True, bt_dev="Galaxy Buds", location=False, battery=23,
                user="Jordan Lee", nav="buttons", accent="#00796B", used=77.3, model="Nova 5"),
           ("Turn on location services", "Open the battery settings and turn on battery saver")),
    # non-standard narrow size
    Screen("h_chat_wechat_zh", "heldout", "chat", "zh", (320, 700),
           dict(style="wechat", contact="妈妈", me="我", contact_color="#9C6ADE", messages=[
               ("time", "周日 20:15"), ("in", "这周末回家吃饭吗？"), ("out", "回的，周六中午到"),
               ("in", "好，给你做红烧肉"), ("time", "10:02"), ("in", "降温了，出门多穿点衣服"), ("out", "知道啦")]),
           ("给妈妈发微信说我今晚回家吃饭", "给妈妈发起语音通话", "Reply to Mom: see you on Saturday")),
    Screen("h_shop_keyboard_zh", "heldout", "shopping", "zh", (540, 1170),
           dict(query_zh="机械键盘", query_en="mechanical keyboard", product="keyboard", accent="#E1251B", sort=2,
                items=SHOP_KEYBOARD),
           ("在京东搜索机械键盘并按价格从低到高排序", "打开第二个商品的详情页")),
    Screen("h_map_en", "heldout", "map", "en", (360, 780),
           dict(query_zh="加油站", query_en="gas station", nav="buttons",
                roads=[("机场路", "Airport Way"), ("州际5号", "I-5"), ("湖景大道", "Lakeview Blvd")],
                pois=[("壳牌", "Shell", "#E53935"), ("塔吉特", "Target", "#1E88E5"), ("湖畔公园", "Lakeside Park", "#43A047")],
                chips=[("加油站", "Gas"), ("电动车充电", "EV charging"), ("洗车", "Car wash")],
                place=("壳牌加油站", "Shell", 4.1, "加油站 · 0.6公里", "Gas station · 0.4 mi",
                       "24小时营业", "Open 24 hours", "机场路1200号", "1200 Airport Way S")),
           ("Navigate to the airport by car and avoid toll roads", "Call this gas station")),
    Screen("h_music_zh", "heldout", "music", "zh", (360, 780),
           dict(tint="#2E4057", photo="chelsea", focus=(0.55, 0.4), song_zh="猫咪日记", song_en="Cat Diary",
                artist_zh="小橘乐队", artist_en="Orange Band", list_zh="每日推荐", list_en="Daily mix",
                pos=47, dur=198, liked=True,
                lyrics=[("窗台上晒太阳的午后", "An afternoon of sun on the sill"),
                        ("尾巴轻轻摇", "A tail that sways"), ("时间走得很慢", "Time walks slowly")]),
           ("把这首歌设置为单曲循环", "搜索周杰伦的歌并随机播放")),
    Screen("h_calendar_en", "heldout", "calendar", "en", (540, 1170),
           dict(year=2025, month=6, today=17, selected=24, accent="#D50000",
                events=[(24, "7:40 AM", "飞往东京", "Flight to Tokyo NH177", "", "SEA Terminal S", "#7986CB"),
                        (17, "6:00 PM", "瑜伽", "Yoga class", "", "Studio B", "#33B679"),
                        (20, "11:00 AM", "理发", "Haircut", "", "", "#F6BF26"),
                        (30, "All day", "季度末", "End of quarter", "", "", "#E67C73")]),
           ("Add a reminder to pay rent on the 1st of every month", "Which day is my flight to Tokyo?")),
    # landscape tablet, two panes
    Screen("h_chat_tablet_zh", "heldout", "chat_tablet", "zh", (1024, 640),
           dict(contact="项目群", contact_color="#5C6BC0", me="我", chats=[
               ("项目群", "王五：测试环境已经部署好了", "10:21", 3, "#5C6BC0"),
               ("李四", "好的，收到", "09:58", 0, "#F4A261"),
               ("文件传输助手", "[文件] 季度报告.pdf", "昨天", 0, "#26A69A"),
               ("张三", "晚上一起吃饭吗？", "昨天", 1, "#EF5350"),
               ("公司通知", "关于清明节放假安排的通知", "周一", 0, "#42A5F5"),
               ("妈妈", "[语音] 12秒", "周日", 0, "#AB47BC"),
               ("健身房", "本周六团课时间调整", "周六", 0, "#66BB6A")],
               messages=[("time", "10:15"), ("in", "测试环境已经部署好了，大家可以验证一下", "王五"),
                         ("in", "登录页面有个样式问题，按钮被挡住了", "李四"),
                         ("out", "我看一下，应该是昨天的改动引起的"),
                         ("in", "好的，修复后在群里说一声", "王五")]),
           ("在项目群里回复：已修复，请大家再验证一下", "把项目群设置为消息免打扰")),
    Screen("h_gallery_en", "heldout", "gallery", "en", (412, 915),
           dict(tiles=["chelsea", "hubble_deep_field", "gradient", "chelsea", "hubble_deep_field"],
                groups=[("今天", "Today", 4), ("昨天", "Yesterday", 5), ("6月2日", "June 2", 6)], select_first=True),
           ("Share the selected photo with Bob on WhatsApp", "Move the galaxy picture to a new album called Space")),
    Screen("h_browser_en", "heldout", "browser", "en", (480, 1040),
           dict(url="skyweekly.example.org/2025/deep-field", tabs=5, site_color="#0D47A1", site_zh="星空周刊",
                site_en="Sky Weekly", head_zh="望远镜拍下迄今最深的宇宙图像",
                head_en="A telescope's deepest look into the universe yet",
                meta_zh="星空周刊 · 6分钟阅读", meta_en="Sky Weekly · June 17, 2025 · 6 min read",
                photo="hubble_deep_field", focus=(0.4, 0.6), cap_zh="深空视场中的星系",
                cap_en="Thousands of galaxies in one tiny patch of sky",
                body_zh=["几乎每一个光点都是一个星系。"],
                body_en=["Almost every point of light in this picture is a galaxy, each holding billions of "
                         "stars.", "The image took more than ten days of exposure time, collected over "
                         "hundreds of orbits.", "Astronomers use it to study how galaxies grew in the early "
                         "universe."]),
           ("Translate this page into Chinese", "把这篇文章保存为PDF", "Find the word galaxy on this page")),
    Screen("h_shade_zh", "heldout", "shade", "zh", (540, 1170),
           dict(wall=("#134E5E", "#71B280"), time="18:05", date_zh="6月17日 周二", date_en="Tue, Jun 17",
                brightness=0.8,
                tiles=[("wifi", "WLAN", "Wi-Fi", True), ("bluetooth", "蓝牙", "Bluetooth", False),
                       ("pin", "定位", "Location", False), ("torch", "手电筒", "Flashlight", False),
                       ("moon", "勿扰模式", "Do Not Disturb", False), ("plane", "飞行模式", "Airplane", False),
                       ("battery", "省电模式", "Battery saver", True), ("letter", "截屏", "Screenshot", False)],
                notes=[("cart", "淘宝", "Taobao", "#FF5000", "5分钟前", ("包裹正在派送", "Out for delivery"),
                        ("您的机械键盘正在派送中，快递员电话 138****0000", "Your keyboard is out for delivery")),
                       ("chat", "微信", "WeChat", "#07C160", "17:48", ("李四", "Li Si"),
                        ("周末的球赛你去吗？", "Are you coming to the game this weekend?")),
                       ("letter", "钉钉", "DingTalk", "#3296FA", "17:30", ("下班打卡提醒", "Clock-out reminder"),
                        ("别忘了下班打卡", "Don't forget to clock out"))]),
           ("打开蓝牙和定位", "点开淘宝的物流通知")),
]

PHOTOS: list[Photo] = [
    Photo("astronaut", "calib", ("把这张照片设为手机壁纸", "Share this picture on Instagram with the caption space day")),
    Photo("coffee", "calib", ("用美团点一杯和图片里一样的拿铁", "Find a café nearby that sells this drink")),
    Photo("rocket", "calib", ("Search the web for what this rocket is",)),
    Photo("camera", "calib", ("把这张照片裁剪成正方形并保存",)),
    Photo("chelsea", "heldout", ("识别这只猫是什么品种", "Edit this photo and apply a black-and-white filter")),
    Photo("hubble_deep_field", "heldout", ("What is in this picture? Look it up with Google Lens",
                                           "把这张照片保存到“壁纸”相册")),
]

TEXT_ONLY: dict[str, tuple[str, ...]] = {
    "calib": ("帮我查一下明天北京的天气", "Call Mom", "用支付宝给李四转账200元", "Turn the phone to silent mode"),
    "heldout": ("打开设置把字体调大", "Take a screenshot and send it to Bob"),
}


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def load_photos() -> dict[str, Image.Image]:
    try:
        from skimage import data as skdata  # regeneration-only dependency
    except ImportError:
        sys.exit("make_calibration.py: scikit-image is required to regenerate the photos.\n"
                 "  Install it with:  .venv/bin/python -m pip install scikit-image\n"
                 "  (It is only needed to regenerate calibration/; loading the committed data does not need it.)")
    photos = {}
    for name in PHOTO_SPLIT:
        arr = getattr(skdata, name)()
        img = Image.fromarray(arr)
        photos[name] = img.convert("RGB")
    return photos


def render(spec: Screen, fonts: Fonts, photos: dict[str, Image.Image]) -> Image.Image:
    w, h = spec.size
    if w > h:  # tablet landscape: dp by height
        scale = h / 640
    else:
        scale = min(w / 360, h / 720)
    img = Image.new("RGB", (w * SS, h * SS), WHITE)
    rng = random.Random(f"{SEED}/{spec.name}")
    hour, minute = rng.randint(7, 22), rng.randint(0, 59)
    clock = spec.params.get("time") or (f"{hour:02d}:{minute:02d}" if spec.lang == "zh"
                                        else f"{(hour - 1) % 12 + 1}:{minute:02d}")
    ctx = Ctx(img, fonts, spec.lang if fonts.cjk else "en", rng, photos, (0, 0, w * SS, h * SS), scale * SS,
              clock=clock, battery=spec.params.get("battery", rng.randint(18, 100)))
    RENDERERS[spec.kind](ctx, spec.params)
    return img.resize((w, h), Image.LANCZOS)


def lang_of(text: str) -> str:
    return "zh" if _has_cjk(text) else "en"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(out: Path, fonts: Fonts) -> dict[str, list[dict]]:
    photos = load_photos()
    names = [s.name for s in SCREENS] + [p.name for p in PHOTOS]
    assert len(names) == len(set(names)), "file stems must be unique across splits"
    items: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        folder = out / split
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "images").mkdir(parents=True)
        # a split only ever sees its own photos: using another split's photo is a KeyError
        own = {k: v for k, v in photos.items() if PHOTO_SPLIT[k] == split}
        for spec in (s for s in SCREENS if s.split == split):
            rel = f"images/{spec.name}.png"
            render(spec, fonts, own).save(folder / rel, optimize=True)
            items[split] += [dict(instruction=p, image=rel) for p in spec.prompts]
        for ph in (p for p in PHOTOS if p.split == split):
            assert PHOTO_SPLIT[ph.name] == split
            rel = f"images/photo_{ph.name}.jpg"
            img = own[ph.name].copy()
            img.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.LANCZOS)
            img.save(folder / rel, quality=JPEG_QUALITY, optimize=True)
            items[split] += [dict(instruction=p, image=rel) for p in ph.prompts]
        items[split] += [dict(instruction=p, image=None) for p in TEXT_ONLY[split]]
        # Mix languages and apps so any prefix of the file is a usable calibration subset.
        random.Random(f"{SEED}/{split}/order").shuffle(items[split])
        rows = [dict(id=f"{split}-{i:03d}", split=split, lang=lang_of(it["instruction"]),
                     instruction=it["instruction"], image=it["image"]) for i, it in enumerate(items[split], 1)]
        items[split] = rows
        with open(folder / "prompts.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    check(out, items)
    return items


def check(out: Path, items: dict[str, list[dict]]) -> None:
    """Fail loudly if the held-out split leaks into calibration."""
    cal, held = items["calib"], items["heldout"]
    norm = lambda s: re.sub(r"\W+", "", s.lower())  # noqa: E731
    dup = {norm(r["instruction"]) for r in cal} & {norm(r["instruction"]) for r in held}
    assert not dup, f"instructions in both splits: {dup}"
    hashes = {s: {sha256(p) for p in (out / s / "images").iterdir()} for s in SPLITS}
    assert not hashes["calib"] & hashes["heldout"], "identical image file in both splits"
    names = {s: {p.name for p in (out / s / "images").iterdir()} for s in SPLITS}
    assert not names["calib"] & names["heldout"], "same image file name in both splits"
    for s in SPLITS:
        used = {r["image"] for r in items[s] if r["image"]}
        unused = {f"images/{n}" for n in names[s]} - used
        assert not unused, f"unreferenced images in {s}: {unused}"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write calib/ and heldout/ into "
                    "(default: the folder of this script)")
    ap.add_argument("--latin-only", action="store_true", help="ignore CJK fonts (tests the fallback path)")
    ap.add_argument("--builtin-font", action="store_true", help="ignore all font files, use PIL's built-in font")
    args = ap.parse_args(argv)
    fonts = Fonts(latin_only=args.latin_only, builtin=args.builtin_font)
    if not fonts.cjk:
        print("warning: no CJK font found; Chinese screens are drawn with English UI text "
              "(Debian: apt-get install fonts-noto-cjk)", file=sys.stderr)
    items = generate(args.out, fonts)
    print(f"font: {fonts.describe()}")
    for split in SPLITS:
        rows = items[split]
        n_img = len({r['image'] for r in rows if r['image']})
        langs = {lang: sum(r["lang"] == lang for r in rows) for lang in ("zh", "en")}
        print(f"{split:8s} {len(rows):3d} prompts (zh {langs['zh']}, en {langs['en']}, text-only "
              f"{sum(r['image'] is None for r in rows)}), {n_img} images, "
              f"{folder_bytes(args.out / split) / 1e6:.2f} MB")
    total = sum(len(v) for v in items.values())
    print(f"total    {total:3d} prompts, held-out share {len(items['heldout']) / total:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
