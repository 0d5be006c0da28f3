"""The trusted PIN-entry window (Nizza, paper §4.3): a small native task asks the user for a PIN.

    [[task]]
    name = "pin"
    run = "servers.nitpicker.pin:run"
    args = ["420", "300"]                     # where the window goes
    provides = ["pin"]
    memory = "2M"
    caps = { gui = { service = "nitpicker", label = 5 } }

Protocol PIN (tag 0x5049), declared here once:

    ask(prompt, digits) -> pin   show `prompt`, collect up to `digits` (1..MAX_DIGITS)
                                 digits from the keypad (clicks) or the keyboard (when the
                                 window has focus), answer them on OK / enter. Errors:
                                 INVALID, CANCELLED (C with nothing entered, or escape),
                                 TIMEOUT (ASK_S without OK), BUSY (another ask is running)

Why it is trustworthy: the window's label is drawn by Nitpicker from the image's policy
(no other task can show a window labelled "pin"), keys reach it only while it has focus,
and X-ray mode shows the user whose window is in front. The digits never leave this task
except in the answer to the task that asked (the image decides who may: the `pin` route).

One request at a time: while an ask runs, this task's thread waits for Nitpicker's events;
another request arriving then is answered BUSY at once.
"""
from __future__ import annotations

import time
from typing import Any

from kernel.abi import Proto
from kernel.user.client import L4
from kernel.user.errors import Timeout
from kernel.user.rpc import Call, Protocol, RpcError, Status, error_answer, op

from .keys import Keymap
from .protocol import BUTTON, KEY
from .toolkit import BLUE, DARK, GREY, WHITE, Button, Window
from .views import Rect

MAX_DIGITS = 12
ASK_S = 60.0
W, H = 200, 250
KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "C", "0", "OK"]

PIN = Protocol("pin", [
    op("ask", 1, ["prompt:str", "digits:int"], "pin",
       errors=["INVALID", "CANCELLED", "TIMEOUT", "BUSY"]),
], tag=0x5049)


class PinEntry:
    # what a request arriving during an entry is answered (a subclass serving another
    # protocol says its own)
    busy_reason = "a PIN entry is running"
    busy_tag = PIN.tag

    def __init__(self, l4: L4, x: int, y: int) -> None:
        self.l4 = l4
        self.win = Window(l4, "PIN entry", W, H, x, y)
        self.buttons: list[Button] = []
        self.keymap = Keymap()
        self.idle()

    def _screen(self, prompt: str, entered: int) -> None:
        c, top = self.win.canvas, self.win.top
        c.fill(Rect(0, top, W, H - top), DARK)
        c.text(8, top + 4, prompt[:30], WHITE, DARK)
        c.fill(Rect(8, top + 20, W - 16, 22), GREY)
        c.text(12, top + 23, "*" * entered, WHITE, GREY, scale=2)
        self.buttons = []
        for i, k in enumerate(KEYS):
            r = Rect(8 + (i % 3) * 62, top + 50 + (i // 3) * 44, 58, 40)
            self.buttons.append(c.button(r, k, WHITE, BLUE, scale=2))
        self.win.show()

    def idle(self) -> None:
        self._screen("no PIN requested", 0)

    def ask(self, call: Call, prompt: str, digits: int) -> str:
        if not 1 <= digits <= MAX_DIGITS:
            raise RpcError("INVALID", f"digits={digits}: must be in 1..{MAX_DIGITS}")
        pin = ""
        self._screen(prompt, 0)
        deadline = time.monotonic() + ASK_S
        try:
            while time.monotonic() < deadline:
                for ev in self._events():
                    k = self._key_of(ev)
                    if k == "OK":
                        return pin
                    if k in ("C", "ESC"):
                        if not pin or k == "ESC":
                            raise RpcError("CANCELLED", "the user cancelled the PIN entry")
                        pin = ""
                    elif k.isdigit() and len(pin) < digits:
                        pin += k
                    elif k == "BS":
                        pin = pin[:-1]
                    self._screen(prompt, len(pin))
            raise RpcError("TIMEOUT", f"no PIN within {ASK_S:.0f} s")
        finally:
            self.idle()

    def _key_of(self, ev: Any) -> str:
        if ev.kind == BUTTON and ev.value == 1:
            return next((b.label for b in self.buttons if b.hit(ev.x, ev.y)), "")
        if ev.kind == KEY:
            ch = self.keymap.press(ev.code, ev.value)
            return {"\r": "OK", "\x1b": "ESC", "\x7f": "BS"}.get(ch, ch)
        return ""

    def _events(self) -> list[Any]:
        """Nitpicker's events; a request arriving meanwhile is answered BUSY."""
        got = self.win.gui.events()
        if got:
            return got
        try:
            msg = self.l4.wait(timeout=500)
        except Timeout:
            return []
        if msg.proto != Proto.IRQ and msg.reply:
            self.l4.reply(msg.reply, error_answer(Status.FAILED, "BUSY", self.busy_reason),
                          proto=self.busy_tag)
        return self.win.gui.events()

    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        self.win.gui.events()                    # idle: events are not for anyone


def run(l4: L4, x: str = "420", y: str = "300") -> int:
    pe = PinEntry(l4, int(x), int(y))
    print(f"pin: ready at {x},{y}", flush=True)
    while True:
        PIN.serve(l4, pe, timeout=1000)
        try:
            pe.win.gui.stats()                   # a restarted Nitpicker: reopened, redrawn
        except (Timeout, TimeoutError):
            pass
