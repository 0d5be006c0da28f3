"""The input session protocol (proto tag 0x494E) and its shared-memory event ring, declared once.

A client is known by its gate's label (`caps.input = { service = "input", label = N }`);
the server's policy (its task arguments) lists the labels that may read input.

    open() -> {entries, size, order, label}
        with a capability item: the client's own task capability (rights NONE will do: a
        death watch; a dead client's session is dropped). The reply carries two items into
        the caller's receive window `window(vaddr, order, cap_slot, 1)`: the session's event
        ring (a flexpage of 2**order bytes, mapped read-write) and an IRQ object (INVOKE |
        WRITE) the server triggers after each batch of events it wrote; the client attaches it
        to a thread of its own (irq_attach) with any label and drains the ring when it fires.
        A second open replaces the session. Errors: DENIED, NO_MEMORY
    end() -> None
    stats() -> {delivered, dropped, session}       the caller's own counters; NO_SESSION
                            (NO_SESSION: none open)
    usage() -> {sessions, events}                  admin: every label's counters

The ring (little endian; HEADER at offset 0, event i at EVENTS + (i % entries) * EVENT.size):

    magic u32, entries u32, head u64, tail u64, dropped u64
        head     events written so far: the server writes the event, then head
        tail     events read so far: the client reads events tail..head-1, then writes tail
        dropped  events the server could not write because the ring was full (head - tail
                 == entries): it never overwrites an unread event
    event: type u16, code u16, value i32, time_us u64 (the server's monotonic clock)

Events are Linux's (servers/dde_linux/input.py): EV_KEY with key codes (value 1 press, 0
release), BTN_LEFT/RIGHT/MIDDLE as keys, EV_ABS ABS_X/ABS_Y for the pointer, each frame
ended by EV_SYN SYN_REPORT; a frame is written whole or not at all.
"""
from __future__ import annotations

import struct

from kernel.user.rpc import Protocol, op

MAGIC = 0x494E5652                 # "INVR"
HEADER = struct.Struct("<IIQQQ")
HEAD_AT, TAIL_AT, DROPPED_AT = 8, 16, 24
EVENTS = 64
EVENT = struct.Struct("<HHiQ")
U64 = struct.Struct("<Q")          # head, tail, dropped: one aligned 8-byte store each
RING_ORDER = 12                    # one page
ENTRIES = ((1 << RING_ORDER) - EVENTS) // EVENT.size

INPUT = Protocol("input", [
    op("open", 1, [], "session", errors=["DENIED", "INVALID", "NO_MEMORY"], caps_in=1),
    op("end", 2, [], None),
    op("stats", 3, [], "stats", errors=["NO_SESSION"]),
    op("usage", 10, [], "usage", admin=True),
], tag=0x494E)
