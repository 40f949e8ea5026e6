"""Screen furniture shared by every renderer: status and navigation bars, app bars, toggles,
chevrons, avatars and app icons.
"""

from __future__ import annotations

import hashlib
import math

from .canvas import DIVIDER, RGB, TEXT, TEXT2, TEXT3, WHITE, Ctx, hexc
from .glyphs import glyph
from .text import has_cjk, latin
from .vocab import App

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
    ch = name[:1] if has_cjk(name) else name[:1].upper()
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
