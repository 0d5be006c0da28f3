"""A clock window: the time, large, redrawn every second, in a Nitpicker session.

    run = "servers.nitpicker.clock:run"
    args = ["700", "40"]                      # where the window goes
    memory = "2M"
    caps = { gui = { service = "nitpicker", label = 4 } }

Only the digits that changed are drawn and refreshed (the toolkit's dirty rectangles), so
Nitpicker repaints a few hundred pixels a second. Time is the host's (UTC).
"""
from __future__ import annotations

import time

from kernel.user.client import L4

from .toolkit import BLUE, WHITE, Window

SCALE = 4
W, H = 8 * 6 * SCALE + 24, 12 * SCALE + 60


def run(l4: L4, x: str = "700", y: str = "40") -> int:
    win = Window(l4, "UTC", W, H, int(x), int(y), background=BLUE)
    print(f"clock: at {x},{y}", flush=True)
    shown = ""
    while True:
        now = time.strftime("%H:%M:%S", time.gmtime())
        if now != shown:
            for i, (a, b) in enumerate(zip(now, shown or " " * 8)):
                if a != b:
                    win.canvas.text(12 + i * 6 * SCALE, win.top + 8, a, WHITE, BLUE, SCALE)
            win.canvas.text(12, H - 18, time.strftime("%Y-%m-%d UTC", time.gmtime()), WHITE,
                            BLUE)
            win.show()
            shown = now
        win.events(timeout_ms=200)           # also notices a Nitpicker restart
