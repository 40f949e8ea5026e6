"""Map: streets, parks, water and POIs, search card, category chips and a place card."""

from __future__ import annotations

import math

from ..canvas import BLACK, Ctx, TEXT, TEXT2, TEXT3, WHITE, hexc, mix
from ..chrome import avatar, chevron, nav_bar, status_bar


def map_ground(c: Ctx, v: dict) -> None:
    """Blocks, parks, a river, roads with names and POI pins, all placed by the screen's rng."""
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
    map_roads(c, v)
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


def map_roads(c: Ctx, v: dict) -> None:
    rng = c.rng
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


def map_search(c: Ctx, v: dict, y: float) -> None:
    """The floating search card and the category chips under it."""
    c.shadow_card(12, y + 6, c.W - 24, 48, r=24)
    chevron(c, 34, y + 30, TEXT, 6, "left", 2)
    c.text(54, y + 30, c.t(v["query_zh"], v["query_en"]) or c.t("搜索地点", "Search here"), 15,
           TEXT if v["query_en"] else TEXT3, anchor="lm", max_w=c.W - 130)
    avatar(c, c.W - 54, y + 16, 28, v.get("user", "A"), "#7E57C2", round_=True)
    cx = 12.0
    for zh, en in v["chips"]:
        t = c.t(zh, en)
        w = c.tw(t, 12) + 24
        if cx + w > c.W:
            break
        c.shadow_card(cx, y + 64, w, 30, r=15, blur=3, alpha=40)
        c.text(cx + w / 2, y + 79, t, 12, TEXT, anchor="mm")
        cx += w + 8


def rating_stars(c: Ctx, x: float, y: float, rating: float) -> None:
    for k in range(5):
        fill = hexc("#FBBC04") if k < round(rating) else hexc("#DADCE0")
        px, py, r = x + 6 + k * 14, y, 6
        pts = []
        for j in range(10):
            a = -math.pi / 2 + j * math.pi / 5
            rr = r if j % 2 == 0 else r * 0.45
            pts.append((px + math.cos(a) * rr, py + math.sin(a) * rr))
        c.poly(pts, fill=fill)


def place_card(c: Ctx, v: dict, navh: float) -> None:
    """Bottom sheet: place name, rating, category, hours, action buttons, address."""
    sh = 196
    sy = c.H - navh - sh
    c.shadow_card(0, sy, c.W, sh + navh + 20, r=20, blur=8)
    c.rect(c.W / 2 - 18, sy + 8, 36, 4, fill=hexc("#DADCE0"), r=2)
    place = v["place"]
    c.text(20, sy + 34, c.t(place[0], place[1]), 19, TEXT, bold=True, anchor="lm", max_w=c.W - 40)
    sx = 20.0
    c.text(sx, sy + 60, str(place[2]), 13, TEXT2, anchor="lm")
    sx += c.tw(str(place[2]), 13) + 6
    rating_stars(c, sx, sy + 60, place[2])
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


def screen_map(c: Ctx, v: dict) -> None:
    map_ground(c, v)
    y = status_bar(c)
    map_search(c, v, y)
    nav = v.get("nav", "gesture")
    navh = 20 if nav == "gesture" else 44
    place_card(c, v, navh)
    nav_bar(c, nav, bg=WHITE)
