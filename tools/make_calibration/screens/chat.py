"""Chats: WeChat-style and SMS-style conversations, the conversation list, the two-pane tablet chat."""

from __future__ import annotations

from ..canvas import Ctx, DIVIDER, TEXT, TEXT2, TEXT3, WHITE, hexc
from ..chrome import app_bar, avatar, chevron, name_color, nav_bar, search_glass, status_bar
from ..glyphs import glyph


def chat_messages(c: Ctx, v: dict, y: float, bottom: float, style: str):
    me = v.get("me_color", "#6C8EBF")
    max_bw = min(c.W * 0.62, 420)
    for m in v["messages"]:
        if m[0] == "time":
            c.text(c.W / 2, y + 12, m[1], 11, TEXT3, anchor="mm")
            y += 30
            continue
        side, txt = m[0], m[1]
        sender = m[2] if len(m) > 2 else None  # group chats: who said it
        if sender and style == "wechat":
            c.text(60, y + 6, sender, 11, TEXT3, anchor="lm")
            y += 16
        lines = c.wrap(txt, 15, max_bw - 24)
        bw = max(c.tw(line, 15) for line in lines) + 24
        bh = 22 * len(lines) + 16
        if y + bh + 14 > bottom:
            break
        if style == "wechat":
            if side == "in":
                if sender:
                    avatar(c, 12, y - 16, 40, sender, name_color(sender))
                else:
                    avatar(c, 12, y, 40, v["contact"], v.get("contact_color", "#F4A261"))
                bx = 60
                fill = WHITE
                c.poly([(bx, y + 14), (bx - 6, y + 20), (bx, y + 26)], fill=fill)
            else:
                avatar(c, c.W - 52, y, 40, v.get("me", "Me"), me)
                bx = c.W - 60 - bw
                fill = hexc("#95EC69")
                c.poly([(bx + bw, y + 14), (bx + bw + 6, y + 20), (bx + bw, y + 26)], fill=fill)
            c.rect(bx, y, bw, bh, fill=fill, r=5)
            fg = TEXT
        else:
            if side == "in":
                bx, fill, fg = 16, hexc("#E9E9EB"), TEXT
            else:
                bx, fill, fg = c.W - 16 - bw, hexc("#1A73E8"), WHITE
            c.rect(bx, y, bw, bh, fill=fill, r=18)
        for i, line in enumerate(lines):
            c.text(bx + 12, y + 8 + 22 * i + 11, line, 15, fg, anchor="lm")
        y += bh + 14
    return y


def chat_input(c: Ctx, style: str, bottom: float):
    if style == "wechat":
        h = 56
        y = bottom - h
        c.rect(0, y, c.W, h, fill=hexc("#F7F7F7"))
        c.line([(0, y), (c.W, y)], DIVIDER, 0.8)
        c.circle(24, y + 28, 13, outline=TEXT, width=1.5)
        c.arc(20, y + 28, 6, 300, 60, TEXT, 1.5)
        c.rect(46, y + 9, c.W - 46 - 84, 38, fill=WHITE, r=5)
        c.circle(c.W - 60, y + 28, 13, outline=TEXT, width=1.5)
        c.circle(c.W - 64, y + 25, 1.6, fill=TEXT)
        c.circle(c.W - 56, y + 25, 1.6, fill=TEXT)
        c.arc(c.W - 60, y + 28, 7, 30, 150, TEXT, 1.5)
        c.circle(c.W - 24, y + 28, 13, outline=TEXT, width=1.5)
        c.line([(c.W - 31, y + 28), (c.W - 17, y + 28)], TEXT, 1.5)
        c.line([(c.W - 24, y + 21), (c.W - 24, y + 35)], TEXT, 1.5)
    else:
        h = 60
        y = bottom - h
        c.rect(0, y, c.W, h, fill=WHITE)
        c.circle(28, y + 30, 14, fill=hexc("#E8F0FE"))
        c.line([(22, y + 30), (34, y + 30)], hexc("#1A73E8"), 2)
        c.line([(28, y + 24), (28, y + 36)], hexc("#1A73E8"), 2)
        c.rect(52, y + 10, c.W - 52 - 60, 40, fill=hexc("#F1F3F4"), r=20)
        c.text(68, y + 30, c.t("短信", "Text message"), 14, TEXT3, anchor="lm")
        c.circle(c.W - 30, y + 30, 18, fill=hexc("#1A73E8"))
        c.poly([(c.W - 37, y + 23), (c.W - 21, y + 30), (c.W - 37, y + 37), (c.W - 34, y + 30)], fill=WHITE)
    return h


def screen_chat(c: Ctx, v: dict):
    style = v.get("style", "wechat")
    bg = hexc("#EDEDED") if style == "wechat" else WHITE
    c.rect(0, 0, c.W, c.H, fill=bg)
    y = status_bar(c, bg=bg)
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    if style == "wechat":
        app_bar(c, y, v["contact"], bg=bg, centered=True, actions=("dots",), h=48)
        y += 48
        c.line([(0, y), (c.W, y)], hexc("#DADADA"), 0.6)
    else:
        h = 60
        c.rect(0, y, c.W, h, fill=WHITE)
        chevron(c, 22, y + h / 2, TEXT, 7, "left", 2)
        avatar(c, 44, y + 12, 36, v["contact"], v.get("contact_color", "#F4A261"), round_=True)
        c.text(90, y + 22, v["contact"], 16, TEXT, bold=True, anchor="lm")
        c.text(90, y + 41, v.get("number", "+1 415-555-0132"), 11, TEXT2, anchor="lm")
        glyph(c, "phone", c.W - 72, y + h / 2, 20, TEXT2, WHITE)
        for i in (-6, 0, 6):
            c.circle(c.W - 24, y + h / 2 + i, 1.7, fill=TEXT2)
        y += h
    ih = chat_input(c, style, bottom)
    chat_messages(c, v, y + 14, bottom - ih, style)
    nav_bar(c, nav, bg=hexc("#F7F7F7") if style == "wechat" else WHITE)


def chat_list(c: Ctx, v: dict, y: float, bottom: float, selected: str | None = None):
    for name, last, tm, unread, col in v["chats"]:
        if y + 68 > bottom:
            break
        if name == selected:
            c.rect(0, y, c.W, 68, fill=hexc("#E1E1E1"))
        avatar(c, 14, y + 12, 44, name, col)
        c.text(70, y + 24, name, 15, TEXT, anchor="lm", max_w=c.W - 140)
        c.text(c.W - 14, y + 24, tm, 11, TEXT3, anchor="rm")
        c.text(70, y + 46, last, 13, TEXT3, anchor="lm", max_w=c.W - 100)
        if unread:
            c.circle(56, y + 14, 8, fill=hexc("#FA5151"))
            c.text(56, y + 14, str(unread), 10, WHITE, anchor="mm")
        c.line([(70, y + 67.5), (c.W, y + 67.5)], DIVIDER, 0.6)
        y += 68


def screen_chat_tablet(c: Ctx, v: dict):
    """Landscape tablet chat: conversation list left, open conversation right."""
    c.rect(0, 0, c.W, c.H, fill=hexc("#EDEDED"))
    sb = status_bar(c, bg=hexc("#EDEDED"))
    nav = nav_bar(c, "gesture", bg=hexc("#EDEDED"))
    left_w = min(320.0, c.W * 0.36)
    c.rect(0, sb, left_w, c.H - sb - nav, fill=hexc("#F7F7F7"))
    lc = c.sub(0, sb, left_w, c.H - sb - nav)
    lc.rect(12, 10, left_w - 24, 34, fill=hexc("#E2E2E2"), r=6)
    search_glass(lc, 30, 27, 5)
    lc.text(44, 27, c.t("搜索", "Search"), 13, TEXT3, anchor="lm")
    chat_list(lc, v, 54, lc.H, selected=v["contact"])
    c.line([(left_w, sb), (left_w, c.H - nav)], hexc("#D6D6D6"), 1)
    rc = c.sub(left_w + 1, sb, c.W - left_w - 1, c.H - sb - nav)
    app_bar(rc, 0, v["contact"], bg=hexc("#EDEDED"), back=False, centered=True, actions=("dots",), h=48)
    rc.line([(0, 48), (rc.W, 48)], hexc("#DADADA"), 0.6)
    ih = chat_input(rc, "wechat", rc.H)
    chat_messages(rc, v, 62, rc.H - ih, "wechat")
