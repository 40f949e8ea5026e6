"""Login forms: phone number + verification code, or email + password, with other sign-in options."""

from __future__ import annotations

from ..canvas import Ctx, DIVIDER, TEXT, TEXT2, TEXT3, WHITE, hexc
from ..chrome import chevron, nav_bar, status_bar
from ..glyphs import glyph


def screen_login(c: Ctx, v: dict):
    accent = hexc(v["accent"])
    c.rect(0, 0, c.W, c.H, fill=WHITE)
    y = status_bar(c)
    c.text(c.W - 20, y + 24, c.t("帮助", "Help"), 14, TEXT2, anchor="rm")
    y += 60
    c.rect(c.W / 2 - 36, y, 72, 72, fill=accent, r=18)
    c.text(c.W / 2, y + 36, v["logo"], 30, WHITE, bold=True, anchor="mm")
    y += 104
    c.text(c.W / 2, y, c.t(v["title_zh"], v["title_en"]), 24, TEXT, bold=True, anchor="mm")
    c.text(c.W / 2, y + 30, c.t(v["sub_zh"], v["sub_en"]), 13, TEXT2, anchor="mm", max_w=c.W - 48)
    y += 68
    fw = c.W - 48
    if v["mode"] == "phone":
        c.rect(24, y, fw, 52, fill=hexc("#F5F6F7"), r=12)
        c.text(40, y + 26, "+86", 16, TEXT, anchor="lm")
        chevron(c, 84, y + 26, TEXT2, 4, "down", 1.4)
        c.line([(98, y + 14), (98, y + 38)], DIVIDER, 1)
        c.text(112, y + 26, c.t("请输入手机号", "Phone number"), 16, TEXT3, anchor="lm")
        y += 64
        c.rect(24, y, fw, 52, fill=hexc("#F5F6F7"), r=12)
        c.text(40, y + 26, c.t("请输入验证码", "Verification code"), 16, TEXT3, anchor="lm")
        c.text(24 + fw - 16, y + 26, c.t("获取验证码", "Get code"), 14, accent, anchor="rm")
    else:
        c.text(24, y, c.t("邮箱", "Email"), 13, TEXT2, anchor="lm")
        c.rect(24, y + 12, fw, 50, outline=accent, r=10, width=1.6)
        c.text(40, y + 37, v.get("email", ""), 16, TEXT, anchor="lm")
        c.line([(40 + c.tw(v.get("email", ""), 16) + 2, y + 26), (40 + c.tw(v.get("email", ""), 16) + 2, y + 48)],
               accent, 1.5)
        y += 76
        c.text(24, y, c.t("密码", "Password"), 13, TEXT2, anchor="lm")
        c.rect(24, y + 12, fw, 50, outline=hexc("#C4C7C5"), r=10, width=1)
        for k in range(9):
            c.circle(44 + k * 13, y + 37, 3.5, fill=TEXT)
        c.ellipse(24 + fw - 40, y + 30, 22, 14, outline=TEXT2, width=1.4)
        c.circle(24 + fw - 29, y + 37, 3, fill=TEXT2)
        y += 14
    y += 70
    c.rect(24, y, fw, 50, fill=accent, r=25)
    c.text(c.W / 2, y + 25, c.t("登录", "Sign in"), 17, WHITE, bold=True, anchor="mm")
    y += 66
    c.rect(24, y - 7, 14, 14, outline=TEXT3, r=7, width=1.2)
    agree = c.t("我已阅读并同意《用户协议》和《隐私政策》", "I agree to the Terms of Service and Privacy Policy")
    c.text(44, y, agree, 11, TEXT2, anchor="lm", max_w=c.W - 64)
    y += 34
    c.text(24, y, c.t("忘记密码？", "Forgot password?"), 14, accent, anchor="lm")
    c.text(c.W - 24, y, c.t("注册新账号", "Create account"), 14, accent, anchor="rm")
    nav = v.get("nav", "gesture")
    bottom = c.H - (20 if nav == "gesture" else 44)
    oy = bottom - 90
    if oy > y + 40:
        c.line([(24, oy), (c.W / 2 - 60, oy)], DIVIDER, 1)
        c.line([(c.W / 2 + 60, oy), (c.W - 24, oy)], DIVIDER, 1)
        c.text(c.W / 2, oy, c.t("其他登录方式", "or continue with"), 12, TEXT3, anchor="mm")
        for k, (col, gl, lab) in enumerate(v["others"]):
            cx = c.W / 2 + (k - 1) * 70
            c.circle(cx, oy + 46, 22, outline=DIVIDER, width=1)
            glyph(c, gl, cx, oy + 46, 24, hexc(col), WHITE, label=lab)
    nav_bar(c, nav, bg=WHITE)
