"""Month calendar with today and a selected day marked, and the day's events below."""

from __future__ import annotations

import calendar

from ..canvas import Ctx, DIVIDER, TEXT, TEXT2, WHITE, hexc, mix
from ..chrome import chevron, nav_bar, search_glass, status_bar


def screen_calendar(c: Ctx, v: dict):
    accent = hexc(v.get("accent", "#1A73E8"))
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    year, month, today = v["year"], v["month"], v["today"]
    title = c.t(f"{year}年{month}月", f"{calendar.month_name[month]} {year}")
    c.text(20, y + 28, title, 22, TEXT, bold=True, anchor="lm")
    chevron(c, 24 + c.tw(title, 22, True) + 10, y + 28, TEXT, 5, "down", 1.8)
    search_glass(c, c.W - 96, y + 28, 6.5, TEXT)
    c.rect(c.W - 74, y + 18, 22, 20, outline=TEXT, r=4, width=1.6)
    c.text(c.W - 63, y + 29, str(today), 9, TEXT, bold=True, anchor="mm")
    for i in (-6, 0, 6):
        c.circle(c.W - 24, y + 28 + i, 1.7, fill=TEXT)
    y += 60
    heads = (["日", "一", "二", "三", "四", "五", "六"] if c.lang == "zh" else
             ["S", "M", "T", "W", "T", "F", "S"])
    cw = (c.W - 16) / 7
    for k, hname in enumerate(heads):
        c.text(8 + cw * k + cw / 2, y, hname, 12, TEXT2, anchor="mm")
    y += 18
    cal = calendar.Calendar(firstweekday=6).monthdayscalendar(year, month)
    rh = 46.0
    ev_days = {d for d, *_ in v["events"]}
    for r, week in enumerate(cal):
        for k, day in enumerate(week):
            if not day:
                continue
            cx, cy = 8 + cw * k + cw / 2, y + r * rh + 18
            if day == today:
                c.circle(cx, cy, 15, fill=accent)
                fg = WHITE
            elif day == v.get("selected"):
                c.circle(cx, cy, 15, fill=mix(accent, WHITE, 0.8))
                fg = accent
            else:
                fg = hexc("#D93025") if k in (0, 6) else TEXT
            c.text(cx, cy, str(day), 14, fg, bold=day == today, anchor="mm")
            if day in ev_days:
                c.circle(cx, cy + 22, 2.5, fill=hexc("#F4511E"))
    y += len(cal) * rh + 12
    c.line([(0, y), (c.W, y)], DIVIDER, 1)
    sel = v.get("selected", today)
    wd = calendar.weekday(year, month, sel)
    wk_zh = "一二三四五六日"[wd]
    c.text(20, y + 26, c.t(f"{month}月{sel}日 星期{wk_zh}",
                           f"{calendar.day_name[wd]}, {calendar.month_abbr[month]} {sel}"),
           15, TEXT, bold=True, anchor="lm")
    y += 48
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    evs = [e for e in v["events"] if e[0] == sel] + [e for e in v["events"] if e[0] != sel]
    for day, tm, zh, en, lz, le, col in evs:
        if y + 66 > bottom - 10:
            break
        c.rect(16, y, c.W - 32, 58, fill=mix(hexc(col), WHITE, 0.88), r=10)
        c.rect(16, y, 5, 58, fill=hexc(col), r=2)
        c.text(32, y + 19, c.t(zh, en), 15, TEXT, bold=True, anchor="lm", max_w=c.W - 130)
        when = tm if day == sel else c.t(f"{month}月{day}日 {tm}", f"{calendar.month_abbr[month]} {day}, {tm}")
        c.text(32, y + 40, when + ("  ·  " + c.t(lz, le) if lz else ""), 12, TEXT2, anchor="lm", max_w=c.W - 70)
        y += 66
    # FAB
    fx, fy = c.W - 48, bottom - 44
    c.shadow_card(fx - 28, fy - 28, 56, 56, r=18, fill=mix(accent, WHITE, 0.85), blur=4)
    c.line([(fx - 10, fy), (fx + 10, fy)], accent, 2.5)
    c.line([(fx, fy - 10), (fx, fy + 10)], accent, 2.5)
    nav_bar(c, nav, bg=WHITE)
