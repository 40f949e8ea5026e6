"""Browser showing a news article: URL bar, site header, headline, photo, body text, toolbar."""

from __future__ import annotations

from ..canvas import Ctx, TEXT, TEXT2, TEXT3, WHITE, hexc
from ..chrome import chevron, nav_bar, status_bar


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
