"""Input: a keyboard and mouse event queue with an interrupt.

Registers (from 8): COUNT (events queued, read-only), EVENT (read-only; reading pops the
oldest event, 0 when empty), POINTER_X, POINTER_Y (current absolute pointer, read-only),
DROPPED (events lost to a full queue, read-only), CTRL (bit0 ENABLE, set at reset; while
clear, injected events are dropped).

An event is one 64-bit word: bits 56..63 type, 32..55 code, 0..31 value.
    type 1 KEY     code = Linux key code (KEYS below), value 1 press / 0 release
    type 2 BUTTON  code 1 left / 2 right / 3 middle, value 1 press / 0 release
    type 3 MOVE    code 0, value = x << 16 | y (absolute, 0..65535 each)
Each injected event raises the line (held ones coalesce); the driver drains EVENT until
COUNT is 0. The queue holds QUEUE_LEN events; more are dropped and counted.

`events_for(kind, ...)` turns `l4run input key|click|move ...` into events.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from .device import Device, ErrCode
from .pic import Pic
from .ram import Ram

KEY, BUTTON, MOVE = 1, 2, 3
QUEUE_LEN = 256
ENABLE = 0x1
BUTTONS = {"left": 1, "right": 2, "middle": 3}
KEYS: dict[str, int] = {
    "esc": 1, "1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11,
    "minus": 12, "equal": 13, "backspace": 14, "tab": 15, "q": 16, "w": 17, "e": 18, "r": 19,
    "t": 20, "y": 21, "u": 22, "i": 23, "o": 24, "p": 25, "enter": 28, "ctrl": 29, "a": 30,
    "s": 31, "d": 32, "f": 33, "g": 34, "h": 35, "j": 36, "k": 37, "l": 38, "shift": 42,
    "z": 44, "x": 45, "c": 46, "v": 47, "b": 48, "n": 49, "m": 50, "comma": 51, "dot": 52,
    "slash": 53, "alt": 56, "space": 57, "f1": 59, "f2": 60, "f3": 61, "f4": 62, "f5": 63,
    "f6": 64, "f7": 65, "f8": 66, "f9": 67, "f10": 68, "f11": 87, "f12": 88, "home": 102,
    "up": 103, "pageup": 104, "left": 105, "right": 106, "end": 107, "down": 108,
    "pagedown": 109, "insert": 110, "delete": 111,
}


# What a US keyboard types: a character -> (key code, with shift). `input type TEXT`.
_US_ROWS = {2: "1!", 3: "2@", 4: "3#", 5: "4$", 6: "5%", 7: "6^", 8: "7&", 9: "8*", 10: "9(",
            11: "0)", 12: "-_", 13: "=+", 26: "[{", 27: "]}", 39: ";:", 40: "'\"", 41: "`~",
            43: "\\|", 51: ",<", 52: ".>", 53: "/?"}
TYPED: dict[str, tuple[int, bool]] = {
    **{ch: (KEYS[ch], False) for ch in "abcdefghijklmnopqrstuvwxyz"},
    **{ch.upper(): (KEYS[ch], True) for ch in "abcdefghijklmnopqrstuvwxyz"},
    **{pair[i]: (code, i == 1) for code, pair in _US_ROWS.items() for i in (0, 1)},
    " ": (57, False), "\n": (28, False), "\r": (28, False), "\t": (15, False),
}


def pack_event(etype: int, code: int, value: int) -> int:
    return (etype & 0xFF) << 56 | (code & 0xFFFFFF) << 32 | (value & 0xFFFFFFFF)


def unpack_event(word: int) -> tuple[int, int, int]:
    return word >> 56 & 0xFF, word >> 32 & 0xFFFFFF, word & 0xFFFFFFFF


def key_code(key: str | int) -> int:
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and len(key) > 1):
        code = int(key)
    else:
        code = KEYS.get(str(key).lower(), -1)
    if not 0 < code < 0x1000000:
        raise ValueError(f"unknown key {key!r} (names: {', '.join(sorted(KEYS))}, or a key code)")
    return code


def events_for(kind: str, *args: Any) -> list[list[int]]:
    """[[type, code, value], ...] for `key NAME`, `type TEXT` (the keys a US keyboard
    presses for TEXT, shift included; "\\n" is enter), `click X Y [BUTTON]`, `move X Y`."""
    def xy(x: Any, y: Any) -> int:
        x, y = int(x), int(y)
        if not (0 <= x <= 0xFFFF and 0 <= y <= 0xFFFF):
            raise ValueError(f"pointer position {x},{y} outside 0..65535")
        return x << 16 | y
    if kind == "key" and len(args) == 1:
        c = key_code(args[0])
        return [[KEY, c, 1], [KEY, c, 0]]
    if kind == "type" and len(args) >= 1:
        out: list[list[int]] = []
        for ch in " ".join(map(str, args)):
            if ch not in TYPED:
                raise ValueError(f"input type: no key types {ch!r} on a US keyboard")
            code, shift = TYPED[ch]
            keys = [KEYS["shift"], code] if shift else [code]
            out += [[KEY, c, 1] for c in keys] + [[KEY, c, 0] for c in reversed(keys)]
        return out
    if kind == "move" and len(args) == 2:
        return [[MOVE, 0, xy(*args)]]
    if kind == "click" and len(args) in (2, 3):
        b = BUTTONS.get(str(args[2]) if len(args) == 3 else "left")
        if b is None:
            raise ValueError(f"unknown button {args[2]!r} (left, right, middle)")
        return [[MOVE, 0, xy(args[0], args[1])], [BUTTON, b, 1], [BUTTON, b, 0]]
    raise ValueError(f"input {kind} {' '.join(map(str, args))}: use key NAME | type TEXT | move X Y | click X Y [BUTTON]")


class Input(Device):
    kind = "input"
    ID = 0x494E5054
    REGS = {"COUNT": (8, "ro"), "EVENT": (9, "ro"), "POINTER_X": (10, "ro"), "POINTER_Y": (11, "ro"),
            "DROPPED": (12, "ro"), "CTRL": (13, "rw")}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram) -> None:
        super().__init__(name, line, pic, ram)
        self.queue: deque[int] = deque()
        self.dropped = 0
        self.x = self.y = 0
        self.regs["CTRL"] = ENABLE

    def read_reg(self, name: str) -> int:
        if name == "COUNT":
            return len(self.queue)
        if name == "EVENT":
            return self.queue.popleft() if self.queue else 0
        if name == "POINTER_X":
            return self.x
        if name == "POINTER_Y":
            return self.y
        if name == "DROPPED":
            return self.dropped
        return super().read_reg(name)

    def write_reg(self, name: str, value: int) -> None:
        if name == "CTRL" and value & ~ENABLE:
            self.fail(ErrCode.BAD_VALUE)
        else:
            super().write_reg(name, value)

    def inject(self, events: list) -> int:
        """Queue events ([type, code, value] each, checked first); answers how many were queued."""
        words = []
        for ev in events:
            if not (isinstance(ev, list) and len(ev) == 3 and all(type(v) is int for v in ev)
                    and ev[0] in (KEY, BUTTON, MOVE)):
                raise ValueError(f"bad input event {ev!r}: [type 1..3, code, value]")
            words.append(pack_event(*ev))
        queued = 0
        with self.lock:
            for w in words:
                if not self.regs["CTRL"] & ENABLE or len(self.queue) >= QUEUE_LEN:
                    self.dropped += 1
                    continue
                t, _, v = unpack_event(w)
                if t == MOVE:
                    self.x, self.y = v >> 16, v & 0xFFFF
                self.queue.append(w)
                queued += 1
        if queued:
            self.raise_irq()
        return queued

    def stats(self) -> dict:
        return {**super().stats(), "queued": len(self.queue), "dropped": self.dropped}
