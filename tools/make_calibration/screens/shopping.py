"""Shopping search results: search bar, sort tabs, two/three-column product grid, tab bar."""

from __future__ import annotations

import random

from ..canvas import BLACK, Ctx, DIVIDER, TEXT, TEXT2, TEXT3, WHITE, hexc, mix
from ..chrome import chevron, nav_bar, search_glass, status_bar
from ..glyphs import glyph


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
