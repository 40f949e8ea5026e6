"""Pictograms for app icons, settings rows and tiles, drawn with shapes (no emoji font needed).

One small function per pictogram, looked up by name in :data:`GLYPHS`; an unknown name draws the
``label`` text instead (a letter icon).
"""

from __future__ import annotations

import math
from typing import Callable

from .canvas import BLACK, RGB, TEXT, WHITE, Ctx, hexc
from .text import has_cjk



def _chat(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.ellipse(cx - u * 0.85, cy - u * 0.7, u * 1.15, u * 0.95, fill=fg)
    c.ellipse(cx - u * 0.15, cy - u * 0.25, u * 1.0, u * 0.85, fill=fg, outline=bg, width=max(1, sz / 20))


def _bubble(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.ellipse(cx - u * 0.8, cy - u * 0.6, u * 1.6, u * 1.2, fill=fg)
    c.poly([(cx - u * 0.5, cy + u * 0.3), (cx - u * 0.75, cy + u * 0.8), (cx - u * 0.05, cy + u * 0.5)], fill=fg)


def _gear(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    for i in range(8):
        a = i * math.pi / 4
        c.circle(cx + math.cos(a) * u * 0.62, cy + math.sin(a) * u * 0.62, u * 0.2, fill=fg)
    c.circle(cx, cy, u * 0.6, fill=fg)
    c.circle(cx, cy, u * 0.25, fill=bg)


def _camera(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.rect(cx - u * 0.85, cy - u * 0.45, u * 1.7, u * 1.15, fill=fg, r=u * 0.2)
    c.rect(cx - u * 0.3, cy - u * 0.65, u * 0.6, u * 0.3, fill=fg, r=u * 0.08)
    c.circle(cx, cy + u * 0.12, u * 0.36, fill=bg)
    c.circle(cx, cy + u * 0.12, u * 0.22, fill=fg)


def _clock(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy, u * 0.8, fill=fg)
    c.line([(cx, cy), (cx, cy - u * 0.55)], bg, max(1, sz / 14))
    c.line([(cx, cy), (cx + u * 0.4, cy + u * 0.15)], bg, max(1, sz / 14))


def _pin(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy - u * 0.2, u * 0.55, fill=fg)
    c.poly([(cx - u * 0.47, cy + u * 0.05), (cx + u * 0.47, cy + u * 0.05), (cx, cy + u * 0.85)], fill=fg)
    c.circle(cx, cy - u * 0.2, u * 0.22, fill=bg)


def _note(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.ellipse(cx - u * 0.6, cy + u * 0.2, u * 0.6, u * 0.45, fill=fg)
    c.ellipse(cx + u * 0.15, cy + u * 0.05, u * 0.6, u * 0.45, fill=fg)
    c.line([(cx - u * 0.05, cy + u * 0.4), (cx - u * 0.05, cy - u * 0.7), (cx + u * 0.7, cy - u * 0.85),
            (cx + u * 0.7, cy + u * 0.25)], fg, max(1, sz / 12))


def _calendar(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.rect(cx - u * 0.8, cy - u * 0.75, u * 1.6, u * 1.55, fill=WHITE, r=u * 0.18)
    c.rect(cx - u * 0.8, cy - u * 0.75, u * 1.6, u * 0.45, fill=hexc("#EA4335"), r=u * 0.18)
    c.text(cx, cy + u * 0.28, label or "12", u * 0.8, TEXT, bold=True, anchor="mm")


def _photo(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.rect(cx - u * 0.8, cy - u * 0.65, u * 1.6, u * 1.3, fill=fg, r=u * 0.15)
    c.poly([(cx - u * 0.7, cy + u * 0.55), (cx - u * 0.2, cy - u * 0.15), (cx + u * 0.2, cy + u * 0.3),
            (cx + u * 0.4, cy + u * 0.1), (cx + u * 0.7, cy + u * 0.55)], fill=bg)
    c.circle(cx + u * 0.35, cy - u * 0.3, u * 0.15, fill=bg)


def _phone(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.arc(cx + u * 0.35, cy - u * 0.35, u * 1.0, 100, 170, fg, width=max(2, sz / 7))
    c.circle(cx - u * 0.62, cy - u * 0.55, u * 0.16, fill=fg)
    c.circle(cx + u * 0.25, cy + u * 0.6, u * 0.16, fill=fg)


def _mail(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.rect(cx - u * 0.8, cy - u * 0.55, u * 1.6, u * 1.1, fill=fg, r=u * 0.1)
    c.line([(cx - u * 0.75, cy - u * 0.45), (cx, cy + u * 0.1), (cx + u * 0.75, cy - u * 0.45)], bg,
           max(1, sz / 16))


def _sun(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy, u * 0.42, fill=hexc("#FFD54F"))
    for i in range(8):
        a = i * math.pi / 4
        c.line([(cx + math.cos(a) * u * 0.58, cy + math.sin(a) * u * 0.58),
                (cx + math.cos(a) * u * 0.8, cy + math.sin(a) * u * 0.8)], hexc("#FFD54F"), max(1, sz / 16))


def _globe(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy, u * 0.75, outline=fg, width=max(1, sz / 16))
    c.ellipse(cx - u * 0.32, cy - u * 0.75, u * 0.64, u * 1.5, outline=fg, width=max(1, sz / 16))
    c.line([(cx - u * 0.75, cy), (cx + u * 0.75, cy)], fg, max(1, sz / 16))


def _cart(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.line([(cx - u * 0.85, cy - u * 0.6), (cx - u * 0.55, cy - u * 0.6), (cx - u * 0.3, cy + u * 0.35),
            (cx + u * 0.6, cy + u * 0.35), (cx + u * 0.8, cy - u * 0.35), (cx - u * 0.45, cy - u * 0.35)],
           fg, max(1, sz / 12))
    c.circle(cx - u * 0.2, cy + u * 0.65, u * 0.13, fill=fg)
    c.circle(cx + u * 0.5, cy + u * 0.65, u * 0.13, fill=fg)


def _wifi(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    for r in (0.85, 0.55, 0.25):
        c.arc(cx, cy + u * 0.5, u * r * 1.2, 225, 315, fg, width=max(1, sz / 10))
    c.circle(cx, cy + u * 0.45, u * 0.1, fill=fg)


def _bluetooth(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    w = max(1, sz / 12)
    c.line([(cx - u * 0.4, cy - u * 0.35), (cx + u * 0.4, cy + u * 0.35), (cx, cy + u * 0.75),
            (cx, cy - u * 0.75), (cx + u * 0.4, cy - u * 0.35), (cx - u * 0.4, cy + u * 0.35)], fg, w)


def _plane(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.poly([(cx, cy - u * 0.8), (cx + u * 0.12, cy - u * 0.6), (cx + u * 0.12, cy - u * 0.1),
            (cx + u * 0.8, cy + u * 0.3), (cx + u * 0.12, cy + u * 0.15), (cx + u * 0.12, cy + u * 0.55),
            (cx + u * 0.35, cy + u * 0.75), (cx - u * 0.35, cy + u * 0.75), (cx - u * 0.12, cy + u * 0.55),
            (cx - u * 0.12, cy + u * 0.15), (cx - u * 0.8, cy + u * 0.3), (cx - u * 0.12, cy - u * 0.1),
            (cx - u * 0.12, cy - u * 0.6)], fill=fg)


def _torch(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.poly([(cx - u * 0.45, cy - u * 0.7), (cx + u * 0.45, cy - u * 0.7), (cx + u * 0.2, cy - u * 0.15),
            (cx - u * 0.2, cy - u * 0.15)], fill=fg)
    c.rect(cx - u * 0.2, cy - u * 0.15, u * 0.4, u * 0.9, fill=fg, r=u * 0.05)


def _moon(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy, u * 0.65, fill=fg)
    c.circle(cx + u * 0.35, cy - u * 0.25, u * 0.55, fill=bg)


def _bell(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.ellipse(cx - u * 0.55, cy - u * 0.7, u * 1.1, u * 1.3, fill=fg)
    c.rect(cx - u * 0.7, cy + u * 0.2, u * 1.4, u * 0.25, fill=fg, r=u * 0.1)
    c.circle(cx, cy + u * 0.6, u * 0.15, fill=fg)


def _battery(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.rect(cx - u * 0.35, cy - u * 0.65, u * 0.7, u * 1.4, outline=fg, r=u * 0.1, width=max(1, sz / 16))
    c.rect(cx - u * 0.25, cy - u * 0.1, u * 0.5, u * 0.7, fill=fg)


def _display(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.circle(cx, cy, u * 0.4, fill=fg)
    for i in range(8):
        a = i * math.pi / 4
        c.circle(cx + math.cos(a) * u * 0.7, cy + math.sin(a) * u * 0.7, u * 0.08, fill=fg)


def _play(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    u = sz / 2
    c.poly([(cx - u * 0.3, cy - u * 0.5), (cx - u * 0.3, cy + u * 0.5), (cx + u * 0.5, cy)], fill=fg)


def _letter(c: Ctx, cx: float, cy: float, sz: float, fg: RGB, bg: RGB, label: str) -> None:
    ch = label or "?"
    c.text(cx, cy, ch, sz * (0.5 if has_cjk(ch) else 0.55), fg, bold=True, anchor="mm")


GLYPHS: dict[str, Callable[[Ctx, float, float, float, RGB, RGB, str], None]] = {
    "chat": _chat,
    "bubble": _bubble,
    "gear": _gear,
    "camera": _camera,
    "clock": _clock,
    "pin": _pin,
    "note": _note,
    "calendar": _calendar,
    "photo": _photo,
    "phone": _phone,
    "mail": _mail,
    "sun": _sun,
    "globe": _globe,
    "cart": _cart,
    "wifi": _wifi,
    "bluetooth": _bluetooth,
    "plane": _plane,
    "torch": _torch,
    "moon": _moon,
    "bell": _bell,
    "battery": _battery,
    "display": _display,
    "play": _play,
}


def glyph(c: Ctx, kind: str, cx: float, cy: float, sz: float, fg: RGB = WHITE, bg: RGB = BLACK,
          label: str = "") -> None:
    """Draw pictogram ``kind`` centred at dp (cx, cy), ``sz`` dp tall; unknown kinds draw ``label``."""
    GLYPHS.get(kind, _letter)(c, cx, cy, sz, fg, bg, label)
