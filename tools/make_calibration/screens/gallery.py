"""Photo gallery: date-grouped thumbnail grid of photos and gradients, bottom tabs."""

from __future__ import annotations

from ..canvas import Ctx, DIVIDER, TEXT, TEXT2, WHITE, hexc
from ..chrome import nav_bar, search_glass, status_bar
from ..glyphs import glyph


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
