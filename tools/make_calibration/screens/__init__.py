"""One renderer per app type; ``RENDERERS`` maps a screen's ``kind`` (screens.yaml) to it.

A renderer draws one full screen into a :class:`~tools.make_calibration.canvas.Ctx` from the
screen's ``params``. Renderers may use ``c.rng`` (seeded per screen) but no other randomness.
"""

from __future__ import annotations

from typing import Callable

from ..canvas import Ctx
from .browser import screen_browser
from .calendar_screen import screen_calendar
from .chat import screen_chat, screen_chat_tablet
from .clock import screen_clock
from .gallery import screen_gallery
from .home import screen_home
from .login import screen_login
from .map import screen_map
from .music import screen_music
from .settings import screen_settings, screen_settings_tablet
from .shade import screen_shade
from .shopping import screen_shopping

RENDERERS: dict[str, Callable[[Ctx, dict], None]] = {
    "settings": screen_settings,
    "settings_tablet": screen_settings_tablet,
    "chat": screen_chat,
    "chat_tablet": screen_chat_tablet,
    "home": screen_home,
    "shopping": screen_shopping,
    "map": screen_map,
    "music": screen_music,
    "login": screen_login,
    "browser": screen_browser,
    "shade": screen_shade,
    "calendar": screen_calendar,
    "clock": screen_clock,
    "gallery": screen_gallery,
}
