"""Settings: the main list with toggles, the Bluetooth page, and the two-pane tablet layout."""

from __future__ import annotations

from ..canvas import Ctx, DIVIDER, TEXT, TEXT2, TEXT3, WHITE, hexc, mix
from ..chrome import avatar, chevron, nav_bar, search_glass, status_bar, toggle
from ..glyphs import glyph
from ..vocab import SETTINGS_ROWS


def settings_list(c: Ctx, v: dict, y: float, bottom: float, selected: str | None = None,
                  compact: bool = False):
    accent = hexc(v.get("accent", "#1A73E8"))
    sub = {
        "wifi": c.t(v["wifi_ssid"] if v["wifi"] else "已关闭", v["wifi_ssid"] if v["wifi"] else "Off"),
        "bt": c.t("已连接 " + v["bt_dev"] if v["bt"] else "已关闭",
                  ("Connected: " + v["bt_dev"]) if v["bt"] else "Off"),
        "mobile": c.t(v.get("carrier_zh", "中国移动 5G"), v.get("carrier_en", "T-Mobile 5G")),
        "battery": f"{v.get('battery', 86)}%",
        "storage": c.t(f"已使用 {v.get('used', 45.2)} GB / 128 GB", f"{v.get('used', 45.2)} GB of 128 GB used"),
        "display": c.t("自动亮度", "Adaptive brightness"),
        "about": v.get("model", "Phone 12 Pro"),
    }
    state = {"wifi": v["wifi"], "bt": v["bt"], "airplane": v.get("airplane", False),
             "dnd": v.get("dnd", False), "location": v.get("location", True)}
    row_h = 56.0 if not compact else 52.0
    for row in SETTINGS_ROWS:
        if row is None:
            y += 10
            c.rect(0, y - 10, c.W, 10, fill=hexc("#F1F3F4"))
            continue
        key, zh, en, col, gl, kind = row
        if y + row_h > bottom:
            break
        if key == selected:
            c.rect(8, y + 2, c.W - 16, row_h - 4, fill=mix(accent, WHITE, 0.85), r=14)
        icol = hexc(col)
        c.rect(16, y + row_h / 2 - 15, 30, 30, fill=icol, r=8)
        glyph(c, gl, 31, y + row_h / 2, 19, WHITE, icol, label=c.t(zh, en)[:1])
        title = c.t(zh, en)
        tx = 60
        if key in sub:
            c.text(tx, y + row_h / 2 - 9, title, 15, TEXT, anchor="lm", max_w=c.W - tx - 70)
            c.text(tx, y + row_h / 2 + 10, sub[key], 12, TEXT2, anchor="lm", max_w=c.W - tx - 70)
        else:
            c.text(tx, y + row_h / 2, title, 15, TEXT, anchor="lm", max_w=c.W - tx - 70)
        if kind == "toggle":
            toggle(c, c.W - 58, y + row_h / 2 - 11, state[key], accent)
        else:
            chevron(c, c.W - 22, y + row_h / 2)
        c.line([(tx, y + row_h - 0.5), (c.W, y + row_h - 0.5)], DIVIDER, 0.6)
        y += row_h
    return y


def screen_settings(c: Ctx, v: dict):
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    c.text(16, y + 34, c.t("设置", "Settings"), 28, TEXT, bold=True, anchor="lm")
    y += 62
    c.rect(16, y, c.W - 32, 40, fill=hexc("#F1F3F4"), r=20)
    search_glass(c, 36, y + 20, 5.5)
    c.text(52, y + 20, c.t("搜索设置项", "Search settings"), 14, TEXT3, anchor="lm")
    y += 52
    # account card
    c.rect(16, y, c.W - 32, 64, fill=hexc("#F8F9FA"), r=14)
    avatar(c, 28, y + 12, 40, v.get("user", "Alex"), "#8AB4F8", round_=True)
    c.text(80, y + 24, v.get("user", "Alex"), 16, TEXT, bold=True, anchor="lm")
    c.text(80, y + 44, c.t("帐号、云空间、支付与账单", "Account, cloud storage, payments"), 12, TEXT2, anchor="lm",
           max_w=c.W - 130)
    chevron(c, c.W - 34, y + 32)
    y += 74
    settings_list(c, v, y, bottom)
    nav_bar(c, nav, bg=WHITE)


def screen_bluetooth_detail(c: Ctx, v: dict, y: float, bottom: float):
    accent = hexc(v.get("accent", "#1A73E8"))
    c.text(24, y + 30, c.t("蓝牙", "Bluetooth"), 24, TEXT, bold=True, anchor="lm")
    y += 64
    c.rect(16, y, c.W - 32, 60, fill=mix(accent, WHITE, 0.85), r=30)
    c.text(36, y + 30, c.t("使用蓝牙", "Use Bluetooth"), 16, TEXT, bold=True, anchor="lm")
    toggle(c, c.W - 80, y + 19, v["bt"], accent)
    y += 80
    c.text(24, y, c.t("设备名称", "Device name"), 15, TEXT, anchor="lm")
    c.text(24, y + 20, v.get("model", "Pad 11"), 12, TEXT2, anchor="lm")
    y += 48
    c.text(24, y, c.t("已配对的设备", "Paired devices"), 13, accent, bold=True, anchor="lm")
    y += 16
    for name, st in v["paired"]:
        if y + 56 > bottom:
            return
        c.circle(44, y + 28, 16, fill=hexc("#E8F0FE"))
        glyph(c, "bluetooth", 44, y + 28, 18, accent, WHITE)
        c.text(76, y + 19, name, 15, TEXT, anchor="lm")
        c.text(76, y + 38, st, 12, TEXT2, anchor="lm")
        c.circle(c.W - 40, y + 28, 9, outline=TEXT2, width=1.5)
        c.circle(c.W - 40, y + 28, 3, fill=TEXT2)
        y += 56
    y += 12
    c.text(24, y, c.t("可用设备", "Available devices"), 13, accent, bold=True, anchor="lm")
    c.arc(c.W - 40, y, 7, 30, 300, accent, 2)
    y += 16
    for name in v["available"]:
        if y + 52 > bottom:
            return
        c.circle(44, y + 26, 16, fill=hexc("#F1F3F4"))
        glyph(c, "bluetooth", 44, y + 26, 18, TEXT2, WHITE)
        c.text(76, y + 26, name, 15, TEXT, anchor="lm")
        y += 52
    if y + 64 > bottom:
        return
    c.rect(24, y + 16, 170, 40, outline=accent, r=20, width=1.2)
    c.text(24 + 85, y + 36, c.t("+ 配对新设备", "+ Pair new device"), 14, accent, anchor="mm")


def screen_settings_tablet(c: Ctx, v: dict):
    """Landscape tablet: settings list on the left, Bluetooth page on the right."""
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    sb = status_bar(c, bg=hexc("#F8F9FA"))
    nav = nav_bar(c, "gesture", bg=hexc("#F8F9FA"))
    left_w = min(340.0, c.W * 0.38)
    c.rect(0, sb, left_w, c.H - sb - nav, fill=hexc("#F8F9FA"))
    lc = c.sub(0, sb, left_w, c.H - sb - nav)
    lc.text(16, 28, c.t("设置", "Settings"), 24, TEXT, bold=True, anchor="lm")
    lc.rect(16, 52, left_w - 32, 36, fill=hexc("#ECEFF1"), r=18)
    search_glass(lc, 34, 70, 5)
    lc.text(50, 70, c.t("搜索", "Search"), 13, TEXT3, anchor="lm")
    settings_list(lc, v, 96, lc.H, selected="bt", compact=True)
    c.line([(left_w, sb), (left_w, c.H - nav)], DIVIDER, 1)
    rc = c.sub(left_w + 1, sb, c.W - left_w - 1, c.H - sb - nav)
    screen_bluetooth_detail(rc, v, 0, rc.H)
