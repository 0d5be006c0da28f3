"""Linux key codes to characters (a US keyboard), for the toolkit's clients.

    km = Keymap(); ch = km.press(code, value)    # the text a key event types, or ""

Tracks shift and ctrl (value 1 press, 0 release, 2 repeat). Ctrl with a letter gives its
control character (ctrl-c: "\\x03"); enter "\\r", backspace "\\x7f", tab, escape and the
arrow keys their VT100 sequences.
"""
from __future__ import annotations

_ROWS = {2: "1!", 3: "2@", 4: "3#", 5: "4$", 6: "5%", 7: "6^", 8: "7&", 9: "8*", 10: "9(",
         11: "0)", 12: "-_", 13: "=+", 26: "[{", 27: "]}", 39: ";:", 40: "'\"", 41: "`~",
         43: "\\|", 51: ",<", 52: ".>", 53: "/?", 57: "  "}
_LETTERS = dict(zip([16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35, 36, 37,
                     38, 44, 45, 46, 47, 48, 49, 50], "qwertyuiopasdfghjklzxcvbnm"))
_SPECIAL = {28: "\r", 14: "\x7f", 15: "\t", 1: "\x1b", 103: "\x1b[A", 108: "\x1b[B",
            106: "\x1b[C", 105: "\x1b[D"}
SHIFT = {42, 54}
CTRL = {29, 97}


class Keymap:
    def __init__(self) -> None:
        self.shift = self.ctrl = False

    def press(self, code: int, value: int) -> str:
        if code in SHIFT:
            self.shift = value != 0
            return ""
        if code in CTRL:
            self.ctrl = value != 0
            return ""
        if value == 0:
            return ""
        if code in _LETTERS:
            ch = _LETTERS[code]
            if self.ctrl:
                return chr(ord(ch) - 96)
            return ch.upper() if self.shift else ch
        if code in _ROWS:
            return _ROWS[code][1 if self.shift else 0]
        return _SPECIAL.get(code, "")
