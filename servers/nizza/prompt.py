"""The signer's window: the document's digest above a PIN keypad (Nizza's trusted path).

Mechanism: a Nitpicker session of the signer's own (capability "gui"), so the label bar on
top of the window is drawn by Nitpicker from the image's policy ("signer"), never by us and
never by anyone else; the PIN entry itself is servers/nitpicker/pin.py's `PinEntry` (keypad
clicks, or the keyboard while the window has focus; OK / enter ends, C / escape cancels),
drawn here with the digest the user is asked to approve:

    +---------------------------+
    | signer            (label) |   Nitpicker's bar
    | Sign? SHA-256 of document |   the prompt (or the last outcome, when idle)
    | 9f86d081884c7d659a2feaa0c5|   the digest, 64 hex digits on two lines
    | 5ad015a3bf4f1b2b0b822cd15d|
    | [ ****                  ] |   one star per digit typed
    |  1  2  3 / 4 5 6 / ... OK |   the keypad
    +---------------------------+

Contract: the digits never leave this task; `ask` answers them to the signer (the same
process) only. A request arriving while the user types is answered BUSY.
Ownership: the signer's single thread.
"""
from __future__ import annotations

from kernel.user.client import L4
from servers.nitpicker.compose import LABEL_H
from servers.nitpicker.keys import Keymap
from servers.nitpicker.pin import KEYS, PinEntry
from servers.nitpicker.toolkit import BLUE, DARK, GREY, WHITE, Window
from servers.nitpicker.views import Rect

from .protocol import SIGNER

W = 204
TOP = LABEL_H + 2
PAD_Y = TOP + 80                          # the keypad's first row
H = PAD_Y + 4 * 44 + 4
AMBER = (255, 190, 60)


def key_centre(key: str) -> tuple[int, int]:
    """Where keypad button `key` is, relative to the window (tests click there)."""
    i = KEYS.index(key)
    return 8 + (i % 3) * 64 + 29, PAD_Y + (i // 3) * 44 + 20


class SignPrompt(PinEntry):
    """PinEntry's input loop in a window that also shows what is being signed."""
    busy_reason = "a signature is waiting for the user's PIN"
    busy_tag = SIGNER.tag

    def __init__(self, l4: L4, x: int, y: int) -> None:          # noqa: super not called:
        self.l4 = l4                                            # our own window size
        self.win = Window(l4, "PIN to sign", W, H, x, y)
        self.buttons = []
        self.keymap = Keymap()
        self.digest = ""
        self.note = "no signature requested"
        self.idle()

    def _screen(self, prompt: str, entered: int) -> None:
        c = self.win.canvas
        c.fill(Rect(0, TOP, W, H - TOP), DARK)
        c.text(6, TOP + 4, prompt[:32], WHITE, DARK)
        if self.digest:
            c.text(6, TOP + 20, self.digest[:32], AMBER, DARK)
            c.text(6, TOP + 34, self.digest[32:64], AMBER, DARK)
        c.fill(Rect(6, TOP + 50, W - 12, 26), GREY)
        c.text(10, TOP + 51, "*" * entered, WHITE, GREY, scale=2)
        self.buttons = []
        for i, k in enumerate(KEYS):
            r = Rect(8 + (i % 3) * 64, PAD_Y + (i // 3) * 44, 58, 40)
            self.buttons.append(c.button(r, k, WHITE, BLUE, scale=2))
        self.win.show()

    def idle(self) -> None:
        self.digest = ""
        self._screen(self.note, 0)
