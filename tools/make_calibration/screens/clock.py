"""Alarm clock: alarm cards with toggles, add button, bottom tabs (light or dark theme)."""

from __future__ import annotations

from ..canvas import Ctx, TEXT, WHITE, hexc, mix
from ..chrome import nav_bar, status_bar, toggle
from ..glyphs import glyph


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
