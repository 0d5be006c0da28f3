"""The GUI demo client of configs/dde-gui.toml: a test picture through fb, input events logged.

    run(l4)          capabilities "fb" (a session with a viewport) and "input" (optional)

Draws `picture` into its fb session's shared buffer and refreshes the whole viewport, then
logs every input event its input session delivers, one line each:

    demo: drew the test picture (WxH at X,Y)
    demo: key 30 press | key 30 release | button 272 press | abs x 100 | abs y 200 | syn
    demo: fb session reopened, picture redrawn       (after an fb server restart)

The picture (in viewport coordinates; `BARS`, `SQUARES` say where): a dark blue background,
eight colour bars across the top BAR_HEIGHT lines, three squares (red, green, blue), a white
border two pixels wide.
"""
from __future__ import annotations

import time
from typing import Any

from kernel.user.client import L4

from .client import FbSession, rgb

BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255),
        (255, 0, 0), (0, 0, 255), (0, 0, 0)]
BAR_HEIGHT = 40
BACKGROUND = (16, 24, 96)
WHITE = (255, 255, 255)
EV_NAMES = {0: "syn", 1: "key", 2: "rel", 3: "abs"}
ABS_NAMES = {0: "x", 1: "y"}


def squares(w: int, h: int) -> list[tuple[int, int, int, tuple[int, int, int]]]:
    """(x, y, size, colour) of the three squares in a w x h viewport."""
    size = max(4, min(w // 5, (h - BAR_HEIGHT) // 3))
    y = BAR_HEIGHT + (h - BAR_HEIGHT - size) // 2
    return [(w * (2 * i + 1) // 6 - size // 2, y, size, c)
            for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)])]


def picture(w: int, h: int) -> bytearray:
    """The test picture, XRGB8888 rows."""
    buf = bytearray(rgb(*BACKGROUND) * (w * h))

    def rect(x: int, y: int, rw: int, rh: int, c: tuple[int, int, int]) -> None:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + rw), min(h, y + rh)
        row = rgb(*c) * max(0, x1 - x0)
        for yy in range(y0, y1):
            buf[(yy * w + x0) * 4:(yy * w + x1) * 4] = row
    bw = w // len(BARS)
    for i, c in enumerate(BARS):
        rect(i * bw, 0, bw, BAR_HEIGHT, c)
    for x, y, size, c in squares(w, h):
        rect(x, y, size, size, c)
    for x, y, rw, rh in ((0, 0, w, 2), (0, h - 2, w, 2), (0, 0, 2, h), (w - 2, 0, 2, h)):
        rect(x, y, rw, rh, WHITE)
    return buf


def draw(fb: FbSession) -> None:
    w, h = fb.mode["width"], fb.mode["height"]
    fb.put(0, 0, w, h, picture(w, h))
    fb.refresh(0, 0, w, h)


def describe(ev: Any) -> str:
    kind = EV_NAMES.get(ev.type, f"type {ev.type}")
    if ev.type == 1:
        return f"key {ev.code} {({0: 'release', 1: 'press', 2: 'repeat'}).get(ev.value, ev.value)}"
    if ev.type == 3:
        return f"abs {ABS_NAMES.get(ev.code, ev.code)} {ev.value}"
    return kind if ev.type == 0 else f"{kind} {ev.code} {ev.value}"


def run(l4: L4) -> int:
    def redraw(s: FbSession) -> None:
        draw(s)
        print("demo: fb session reopened, picture redrawn", flush=True)
    fb = FbSession(l4, on_reopen=redraw)
    draw(fb)
    m = fb.mode
    print(f"demo: drew the test picture ({m['width']}x{m['height']} at {m['x']},{m['y']})",
          flush=True)
    if "input" not in l4.caps:
        while True:
            fb.stats()                              # notices an fb restart, redraws
            time.sleep(0.5)
    from servers.input.client import InputSession
    inp = InputSession(l4, vm=fb.vm)
    print("demo: reading input", flush=True)
    polls = 0
    while True:
        for ev in inp.next(timeout_ms=500):
            print(f"demo: {describe(ev)}", flush=True)
        polls += 1
        if polls % 4 == 0:
            fb.stats()                              # notices an fb restart, redraws
