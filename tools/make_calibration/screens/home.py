"""Home screen: blurred wallpaper, clock/weather widget, app-icon grid, search pill and dock."""

from __future__ import annotations

from PIL import ImageFilter

from ..canvas import Ctx, WHITE, hexc, mix
from ..chrome import app_icon, nav_bar, search_glass, status_bar
from ..glyphs import glyph
from ..vocab import APPS_EN, APPS_ZH


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
