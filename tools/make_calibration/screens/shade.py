"""Notification shade: quick-settings tiles, brightness slider and notification cards."""

from __future__ import annotations

from ..canvas import BLACK, Ctx, TEXT, TEXT2, WHITE, hexc, mix
from ..chrome import chevron, nav_bar, status_bar
from ..glyphs import glyph


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
