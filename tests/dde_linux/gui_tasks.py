"""Clients of the fb and input servers for tests/dde_linux/test_fb_input.py (real booted images).

    painter(l4)    fb session (label 1: the left top quarter) and input session (label 1):
                   draws PAINTER's rectangles, then fills its buffer yellow and asks for
                   refreshes of bad rectangles (all refused: the screen keeps the picture),
                   then logs every input event; redraws after an fb server restart
    other(l4)      fb session (label 2: the right bottom quarter): OTHER's rectangles
    intruder(l4)   labels without policy: fb mode/open and input open, each refused
    listener(l4)   an input session (label 4) that only waits (the test kills it)

Log lines, read by the test: "GUI <what> <json>" and "GUI-EVENT <type> <code> <value>".
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from kernel.abi import SLOT_TASK, Rights
from kernel.user.client import L4, map_cap
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import window
from servers.fb.client import FbSession
from servers.fb.protocol import FB
from servers.input.client import InputSession
from servers.input.protocol import INPUT, RING_ORDER

Rect = tuple[int, int, int, int, tuple[int, int, int]]
PAINTER: list[Rect] = [(0, 0, 320, 240, (40, 40, 40)), (10, 10, 50, 30, (255, 0, 0)),
                       (100, 50, 40, 40, (0, 255, 0)), (200, 150, 60, 20, (0, 0, 255))]
OTHER: list[Rect] = [(0, 0, 320, 240, (200, 100, 0)), (20, 20, 30, 30, (255, 0, 255))]
BAD_RECTS = [(0, 0, 321, 240), (-1, 0, 5, 5), (0, 0, 0, 10), (300, 230, 30, 20)]


def log(what: str, value: Any = None) -> None:
    print(f"GUI {what} {json.dumps(value)}", flush=True)


def draw(fb: FbSession, rects: list[Rect]) -> None:
    for x, y, w, h, colour in rects:
        fb.fill(x, y, w, h, colour)
    fb.refresh(0, 0, fb.mode["width"], fb.mode["height"])


def redraw(rects: list[Rect]) -> Callable[[FbSession], None]:
    """An on_reopen hook: the new buffer is black, draw the picture again and say so."""
    def again(fb: FbSession) -> None:
        draw(fb, rects)
        log("reopened", fb.reopened)
    return again


def _keep_session(fb: FbSession) -> None:
    fb.stats()                      # an fb restart shows here: reopened, redrawn


def painter(l4: L4) -> int:
    fb = FbSession(l4, on_reopen=redraw(PAINTER))
    draw(fb, PAINTER)
    log("drawn", dict(fb.mode))
    w, h = fb.mode["width"], fb.mode["height"]
    fb.fill(0, 0, w, h, (255, 255, 0))         # in the buffer only: no good refresh follows
    refused = []
    for rect in BAD_RECTS:
        try:
            fb.refresh(*rect)
            refused.append("accepted")
        except RemoteFailure as e:
            refused.append(e.error)
    log("refused", {"answers": refused, "stats": fb.stats()})
    for x, y, rw, rh, colour in PAINTER:       # the buffer holds the picture again
        fb.fill(x, y, rw, rh, colour)
    inp = InputSession(l4, vm=fb.vm)
    log("input", inp.info)
    polls = 0
    while True:
        for ev in inp.next(timeout_ms=300):
            print(f"GUI-EVENT {ev.type} {ev.code} {ev.value}", flush=True)
        polls += 1
        if polls % 3 == 0:
            _keep_session(fb)


def other(l4: L4) -> int:
    fb = FbSession(l4, on_reopen=redraw(OTHER))
    draw(fb, OTHER)
    log("drawn", dict(fb.mode))
    while True:
        time.sleep(0.3)
        _keep_session(fb)


def intruder(l4: L4) -> int:
    answers: dict[str, str] = {}
    fb: Any = FB.client(l4, l4.caps["fb"], timeout=10_000)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("fb.mode", lambda: fb.mode()),
        ("fb.open", lambda: fb.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                                    _window=window(0x20_0000_0000, 21))),
        ("fb.refresh", lambda: fb.refresh(0, 0, 1, 1))]
    for name, call in calls:
        try:
            call()
            answers[name] = "accepted"
        except RemoteFailure as e:
            answers[name] = e.error
    inp: Any = INPUT.client(l4, l4.caps["input"], timeout=10_000)
    try:
        inp.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                 _window=window(0x21_0000_0000, RING_ORDER, 3600, 1))
        answers["input.open"] = "accepted"
    except RemoteFailure as e:
        answers["input.open"] = e.error
    log("intruder", answers)
    while True:
        time.sleep(1)


def listener(l4: L4) -> int:
    inp = InputSession(l4)
    log("listening", inp.info)
    while True:
        inp.next(timeout_ms=1000)
