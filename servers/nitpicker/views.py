"""Nitpicker's model: sessions, their views, and the one stacking order of all views.

    stack = Stack()
    stack.add(view)                    # in front of all
    stack.place(view, "front" | "back" | "above" | "below", neighbour)
    stack.remove(view); stack.at(x, y) -> the front-most view there, or None
    stack.back_to_front() -> views, the order they are painted in

A `Session` is one client (one gate label): the name and quota from the policy, its buffer
(a moe dataspace Nitpicker owns and attached), its views, the events queued for it. A `View`
is a rectangle of the screen showing a part of its session's buffer; it belongs to exactly
one session and is in the stack exactly while its session holds it. Geometry is checked
before it is stored (`check_geometry`), so the painter (compose.py) meets only sane numbers.

Ownership: all of it belongs to Nitpicker's main thread (the serve loop).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from kernel.user.rpc import RpcError

from .protocol import MAX_SIDE, MAX_TITLE, QUEUE


class Rect(NamedTuple):
    x: int
    y: int
    w: int
    h: int

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, o: "Rect") -> "Rect":
        x0, y0 = max(self.x, o.x), max(self.y, o.y)
        x1, y1 = min(self.x + self.w, o.x + o.w), min(self.y + self.h, o.y + o.h)
        return Rect(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x + self.w and self.y <= y < self.y + self.h


@dataclass
class Buffer:
    slot: int           # our capability of the dataspace
    addr: int           # where it is attached in Nitpicker's address space
    width: int
    height: int
    ring: int = 0       # where its flip ring page is (ring.py), after the pixels

    @property
    def stride(self) -> int:
        return self.width * 4


@dataclass(eq=False)
class View:
    id: int
    session: "Session"
    title: str
    rect: Rect = Rect(0, 0, 0, 0)
    buf_x: int = 0
    buf_y: int = 0


@dataclass(eq=False)
class Session:
    label: int
    name: str
    quota: int                   # bytes of buffer the policy allows
    watch: int                   # our slot of the client's task capability
    irq: int                     # our slot of the session's IRQ object
    buffer: Buffer | None = None
    views: dict[int, View] = field(default_factory=dict)
    events: deque[list[int]] = field(default_factory=lambda: deque(maxlen=QUEUE))
    dropped: int = 0
    refreshes: int = 0           # refresh, submit, flip requests accepted
    shown: int = 0               # ... whose pixels reached the screen
    scanned: int = 0             # ... of those, shown by direct scan-out (planes.py: no copy)
    refused: int = 0
    next_view: int = 1

    def view(self, vid: int) -> View:
        v = self.views.get(vid)
        if v is None:
            raise RpcError("NO_VIEW", f"session {self.name!r} (label {self.label}) has no view "
                                      f"{vid} (views: {sorted(self.views)})")
        return v

    def queue(self, ev: list[int]) -> None:
        if len(self.events) == QUEUE:
            self.dropped += 1            # the deque drops the oldest; count it
        self.events.append(ev)


def check_title(title: str) -> str:
    if len(title) > MAX_TITLE:
        raise RpcError("INVALID", f"title of {len(title)} characters: at most {MAX_TITLE}")
    return "".join(c if c.isprintable() else "?" for c in title)


def check_geometry(x: int, y: int, w: int, h: int, bx: int, by: int) -> Rect:
    """The view's rectangle, or RpcError INVALID naming the field and why."""
    for name, v, lo in (("x", x, -MAX_SIDE), ("y", y, -MAX_SIDE), ("w", w, 0), ("h", h, 0),
                        ("buf_x", bx, -MAX_SIDE), ("buf_y", by, -MAX_SIDE)):
        if not lo <= v <= MAX_SIDE:
            raise RpcError("INVALID", f"view geometry {name}={v}: must be in {lo}..{MAX_SIDE}")
    return Rect(x, y, w, h)


class Stack:
    """Every view of every session, front first. A view is in it once or not at all."""

    def __init__(self) -> None:
        self.views: list[View] = []

    def add(self, v: View) -> None:
        self.views.insert(0, v)

    def remove(self, v: View) -> None:
        if v in self.views:
            self.views.remove(v)

    def place(self, v: View, where: str, neighbour: View | None) -> None:
        """Move `v`: to the front or back, or directly above / below `neighbour`."""
        self.remove(v)
        if where == "front":
            self.views.insert(0, v)
        elif where == "back":
            self.views.append(v)
        else:
            assert neighbour is not None and neighbour is not v
            i = self.views.index(neighbour)
            self.views.insert(i if where == "above" else i + 1, v)

    def at(self, x: int, y: int) -> View | None:
        for v in self.views:
            if v.rect.contains(x, y):
                return v
        return None

    def back_to_front(self) -> list[View]:
        return self.views[::-1]
