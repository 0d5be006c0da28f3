"""Nitpicker clients for tests/nitpicker (real booted images).

    painter(l4, name, colour, x, y, w, h, how="refresh")
        a session (capability "gui"), a w x h buffer filled with `colour` (a 10-pixel white
        square at its bottom left corner), one view at x, y; logs every event it receives
        ("NP-EVENT kind view code value x y") and redraws after a restart. `how` it shows
        its pixels: "refresh" (waits for the screen), "submit" (refresh and continue) or
        "flip" (a buffer of two frames: it draws the lower one and flips the view to it)
    probe(l4)
        malformed commands, each answer logged: "NP probe {...}"; then claims written
        into its flip ring (servers/nitpicker/ring.py): "NP ring {...}"
    hog(l4)
        a buffer beyond its quota (refused), then a small one
    scanner(l4)
        a full-screen view and a second one, stepped by key presses (direct scan-out)
    fbprobe(l4)
        an fb client asking for what only the direct client may have (screen, planes)

Log lines, read by the test: "NP <what> <json>".
"""
from __future__ import annotations

import json
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure
from servers.nitpicker.client import GuiSession
from servers.nitpicker.kill import NAMES_END


def log(what: str, value: Any = None) -> None:
    print(f"NP {what} {json.dumps(value)}", flush=True)


def _colour(text: str) -> tuple[int, int, int]:
    r, g, b = (int(p) for p in text.split(","))
    return r, g, b


def painter(l4: L4, title: str, colour: str, x: str, y: str, w: str, h: str,
            how: str = "refresh") -> int:
    c = _colour(colour)
    W, H = int(w), int(h)
    top = H if how == "flip" else 0             # where the frame shown is drawn

    def draw(gui: GuiSession) -> None:
        gui.fill(0, top, W, H, c)
        gui.fill(0, top + H - 10, 10, 10, (255, 255, 255))
        if how == "flip":
            gui.views[0].flip(0, top)
        elif how == "submit":
            gui.submit()
        else:
            gui.refresh()
    gui = GuiSession(l4, on_reopen=lambda g: (draw(g), log("reopened", g.reopened)))
    gui.buffer(W, top + H)
    v = gui.view(title)
    v.geometry(int(x), int(y), W, H)
    draw(gui)
    log("drawn", {"label": gui.info["name"], "screen": [gui.width, gui.height]})
    if how == "submit":                          # the frame shown: the buffer free again
        end = time.monotonic() + 10
        while not gui.ready() and time.monotonic() < end:
            time.sleep(0.01)
        log("ready", {"ready": gui.ready(), "posted": gui.posted})
    while True:
        for ev in gui.wait(500):
            print(f"NP-EVENT {ev.kind} {ev.view} {ev.code} {ev.value} {ev.x} {ev.y}", flush=True)


def _answer(fn: Any) -> str:
    try:
        fn()
        return "ok"
    except RemoteFailure as e:
        return e.error


def probe(l4: L4) -> int:
    gui = GuiSession(l4)
    gui.buffer(20, 20)
    v = gui.view("probe")
    s = gui.stub
    out = {
        "negative": _answer(lambda: s.view_geometry(v.id, 0, 0, -5, 10, 0, 0)),
        "huge": _answer(lambda: s.view_geometry(v.id, 0, 0, 10 ** 9, 10, 0, 0)),
        "unknown_view": _answer(lambda: s.view_geometry(9999, 0, 0, 5, 5, 0, 0)),
        "bad_stack": _answer(lambda: s.view_stack(v.id, "sideways", None)),
        "stack_self": _answer(lambda: s.view_stack(v.id, "above", v.id)),
        "long_title": _answer(lambda: s.view_title(v.id, "x" * 500)),
        "empty_refresh": _answer(lambda: s.refresh(0, 0, 0, 5)),
        "empty_submit": _answer(lambda: s.submit(0, 0, 5, -1)),
        "flip_unknown": _answer(lambda: s.flip(9999, 0, 0)),
        "flip_huge": _answer(lambda: s.flip(v.id, 10 ** 9, 0)),
        "huge_buffer": _answer(lambda: s.buffer(100000, 100000, _window=(3702, 1))),
        "quota": _answer(lambda: s.buffer(1024, 1024, _window=(3702, 1))),
        "destroy_twice": _answer(lambda: (s.view_destroy(v.id), s.view_destroy(v.id))),
        # only the task that provides a service may have the launcher end its clients
        "end_client": _answer(lambda: NAMES_END.client(l4, l4.caps["launcher"], timeout=5000)
                              .end_client("nitpicker", 1)),
    }
    log("probe", out)
    log("ring", _ring_claims(gui))
    while True:
        gui.wait(1000)


def _ring_claims(gui: GuiSession) -> dict[str, Any]:
    """Write what a broken client might into the flip ring; Nitpicker's counts after each."""
    from servers.nitpicker import ring
    v = gui.view("ring")                         # hidden (0x0): painting it shows nothing

    def post(k: int, view: int, bx: int, by: int) -> dict[str, Any]:
        with gui.pins.held():
            mv = gui.pins.view(gui.ring)
            ring.set_entry(mv, k, view, bx, by)
            ring.set_word(mv, ring.POSTED, k)
        gui.stub.kick()
        return gui.stats()                       # answered once the ring is drained
    s0 = gui.stats()
    bad = post(2, 9999, 0, 0)                    # entries 1 and 2: 1 is zeros (no view 0)
    huge = post(3, v.id, 10 ** 9, 0)             # offsets out of range
    with gui.pins.held():
        ring.set_word(gui.pins.view(gui.ring), ring.POSTED, 1 << 40)   # a wild count
    wild = gui.stats()
    gui.posted = 1 << 40                         # go on from the count Nitpicker took
    v.flip(0, 0)
    good = gui.stats()
    return {"refused": [bad["refused"] - s0["refused"], huge["refused"] - s0["refused"],
                        wild["refused"] - s0["refused"]],
            "shown": [bad["shown"] - s0["shown"], huge["shown"] - s0["shown"],
                      wild["shown"] - s0["shown"], good["shown"] - s0["shown"]]}


def asker(l4: L4) -> int:
    """Asks the PIN-entry window (capability "pin") for a PIN, logs "NP pin {...}"."""
    from servers.nitpicker.pin import PIN
    stub: Any = PIN.client(l4, l4.caps["pin"], timeout=90_000)
    log("asking", None)
    try:
        log("pin", {"pin": stub.ask("PIN for the test", 4)})
    except RemoteFailure as e:
        log("pin", {"error": e.error})
    return 0


def picture(w: int, h: int, which: int) -> bytes:
    """Test picture `which` (0 or 1), w x h XRGB8888: every pixel tells where it is."""
    from servers.nitpicker.client import rgb
    if which == 0:
        return b"".join(rgb(y % 256, x % 256, 77) for y in range(h) for x in range(w))
    return b"".join(rgb(x % 256, 50, y % 256) for y in range(h) for x in range(w))


OVER = (60, 60, 80, 60)                          # the scanner's second view


def scanner(l4: L4) -> int:
    """A full-screen view (a buffer of two screens: picture 0 above, 1 below) and a second
    view OVER in front; each key press (KEY value 1) takes the next step, logged "NP step N":
    1 the second view destroyed, 2 created again, 3 destroyed and the full view flipped to
    picture 1, 4 the shown half painted white (its top rows lie under Nitpicker's bar), 5
    picture 0 drawn there and submitted; after each step, and at each "i" (any key after
    step 5), its info: "NP state {...}"."""
    gui = GuiSession(l4)
    w, h = gui.width, gui.height
    gui.buffer(w, 2 * h)
    gui.put(0, 0, w, h, picture(w, h, 0))
    gui.put(0, h, w, h, picture(w, h, 1))
    full = gui.view("full")
    full.geometry(0, 0, w, h)

    def over() -> Any:
        v = gui.view("over")
        v.geometry(*OVER, buf_x=0, buf_y=h)
        return v
    second = over()
    gui.refresh()
    log("step", 0)
    step = 0

    def state(n: int) -> None:
        st = gui.stats()
        log("state", {"n": n, "scanout": st["scanout"], "scanned": st["scanned"],
                      "xray": st["xray"], "unposted": gui.unposted})
    state(0)
    asked = 0
    while True:
        for ev in gui.wait(500):
            if ev.kind != 1 or ev.value != 1:        # KEY presses only
                continue
            if ev.code == 23 or step == 5:           # "i": how the screen is shown now
                asked += 1
                state(100 + asked)
                continue
            step += 1
            if step == 1:
                second.destroy()
            elif step == 2:
                second = over()
            elif step == 3:
                second.destroy()
                full.flip(0, h)
                gui.stats()                          # answered once the flip is shown
            elif step == 4:
                gui.fill(0, h, w, h, (255, 255, 255))
                gui.refresh(0, h, w, h)
            elif step == 5:
                gui.put(0, h, w, h, picture(w, h, 0))
                gui.submit(0, h, w, h)
            log("step", step)
            state(step)


def fbprobe(l4: L4) -> int:
    """An fb client without `direct`: asks for the screen and the plane page, logs answers."""
    from kernel.abi import SLOT_TASK, Rights
    from kernel.user.client import map_cap
    from kernel.user.vm import window
    from servers.fb.client import FbSession
    fb = FbSession(l4)
    out = {"screen": _answer(lambda: fb.stub.screen(_window=window(0x30_0000_0000, 22))),
           "planes": _answer(lambda: fb.stub.planes(
               _items=[map_cap(SLOT_TASK, Rights.INVOKE | Rights.GRANT)],
               _window=window(0x31_0000_0000, 12)))}
    log("fbprobe", out)
    while True:
        time.sleep(1)
