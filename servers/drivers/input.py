"""An input driver: takes the input device's interrupt, drains its queue, logs every event.

    run(l4, device="input0")

Log lines (l4run logs TASK), one per event:
    input: key 30 (a) press | release
    input: button left press | release at X,Y
    input: pointer at X,Y
"""
from __future__ import annotations

from hal.input import BUTTON, BUTTONS, KEY, KEYS, MOVE, unpack_event
from kernel.abi import Proto
from kernel.user.client import L4

from .common import log, open_device

IRQ_LABEL = 0x1297
KEY_NAMES = {v: k for k, v in KEYS.items()}
BUTTON_NAMES = {v: k for k, v in BUTTONS.items()}


def describe(word: int, x: int, y: int) -> str:
    t, code, value = unpack_event(word)
    if t == KEY:
        return f"key {code} ({KEY_NAMES.get(code, '?')}) {'press' if value else 'release'}"
    if t == BUTTON:
        return f"button {BUTTON_NAMES.get(code, code)} {'press' if value else 'release'} at {x},{y}"
    if t == MOVE:
        return f"pointer at {value >> 16},{value & 0xFFFF}"
    return f"unknown event {word:#x}"


def run(l4: L4, device: str = "input0") -> int:
    dev = open_device(l4, device)
    dev.attach_irq(label=IRQ_LABEL)
    log(f"input: listening on {device} (line {dev.info['line']})")
    x = y = 0
    while True:
        msg = l4.wait(timeout=None)
        if msg.proto != Proto.IRQ or msg.label != IRQ_LABEL:
            continue
        while dev.read("COUNT"):
            word = dev.read("EVENT")
            t, _, value = unpack_event(word)
            if t == MOVE:
                x, y = value >> 16, value & 0xFFFF
            log(f"input: {describe(word, x, y)}")
        dev.eoi()
