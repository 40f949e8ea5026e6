"""Music player: album art (photo or drawn), title, progress, controls and lyrics."""

from __future__ import annotations

from ..canvas import BLACK, Ctx, WHITE, hexc, mix
from ..chrome import chevron, heart, nav_bar, status_bar


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
