"""A small toolkit for Nitpicker clients: a window, and text, boxes, buttons, images on it.

    win = Window(l4, "title", 300, 200, x=50, y=60)      # session, buffer, one view
    win.canvas.fill(Rect(0, 0, 300, 200), BLUE)
    win.canvas.text(10, 20, "hello", WHITE, BLUE, scale=2)
    win.canvas.box(Rect(5, 5, 100, 30), WHITE)          # a one-pixel frame
    b = win.canvas.button(Rect(10, 50, 60, 24), "OK")     # answers the button (hit-test: b.hit)
    win.canvas.image(10, 90, pil_image)
    win.show()                                           # what changed goes to the buffer
    for ev in win.events(500): ...                       # Nitpicker's events (client.Event)

The canvas is a local copy of the window's pixels (a bytearray); drawing marks rectangles
dirty, `show` writes the dirty lines into the session's shared buffer and refreshes them.
After a Nitpicker restart the client library reopens the session and `Window` writes the
whole canvas again (the new buffer is black). The window's top LABEL_H lines are covered
by Nitpicker's label bar: draw below them (`Window.top`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kernel.user.client import L4

from .client import Event, GuiSession, rgb
from .compose import LABEL_H
from .font import CELL_H, CELL_W, scale_pixels, text_pixels
from .views import Rect

Colour = tuple[int, int, int]
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (128, 128, 128)
BLUE, DARK = (30, 60, 140), (24, 26, 32)


@dataclass
class Button:
    rect: Rect
    label: str

    def hit(self, x: int, y: int) -> bool:
        return self.rect.contains(x, y)


class Canvas:
    """A w x h XRGB8888 picture with drawing operations and a list of dirty rectangles."""

    def __init__(self, w: int, h: int, background: Colour = DARK) -> None:
        self.w, self.h = w, h
        self.pixels = bytearray(rgb(*background) * (w * h))
        self.dirty: list[Rect] = [Rect(0, 0, w, h)]

    def _clip(self, r: Rect) -> Rect:
        return r.intersect(Rect(0, 0, self.w, self.h))

    def blit(self, x: int, y: int, w: int, h: int, pix: bytes | bytearray) -> None:
        """w x h pixels at (x, y), clipped to the canvas."""
        r = self._clip(Rect(x, y, w, h))
        if r.empty:
            return
        n = r.w * 4
        for row in range(r.y, r.y + r.h):
            so = ((row - y) * w + (r.x - x)) * 4
            do = (row * self.w + r.x) * 4
            self.pixels[do:do + n] = pix[so:so + n]
        self.dirty.append(r)

    def fill(self, r: Rect, c: Colour) -> None:
        r = self._clip(r)
        if r.empty:
            return
        line = rgb(*c) * r.w
        for row in range(r.y, r.y + r.h):
            o = (row * self.w + r.x) * 4
            self.pixels[o:o + r.w * 4] = line
        self.dirty.append(r)

    def box(self, r: Rect, c: Colour) -> None:
        for edge in (Rect(r.x, r.y, r.w, 1), Rect(r.x, r.y + r.h - 1, r.w, 1),
                     Rect(r.x, r.y, 1, r.h), Rect(r.x + r.w - 1, r.y, 1, r.h)):
            self.fill(edge, c)

    def text(self, x: int, y: int, s: str, fg: Colour = WHITE, bg: Colour = DARK,
             scale: int = 1, width: int | None = None) -> Rect:
        if not s and width is None:
            return Rect(x, y, 0, 0)
        w, h, pix = text_pixels(s, fg, bg, None if width is None else width // scale)
        w, h, pix = scale_pixels(w, h, pix, scale)
        self.blit(x, y, w, h, pix)
        return Rect(x, y, w, h)

    def button(self, r: Rect, label: str, fg: Colour = WHITE, bg: Colour = BLUE,
               scale: int = 1) -> Button:
        self.fill(r, bg)
        self.box(r, fg)
        tw, th = len(label) * CELL_W * scale, CELL_H * scale
        self.text(r.x + (r.w - tw) // 2, r.y + (r.h - th) // 2, label, fg, bg, scale)
        return Button(r, label)

    def image(self, x: int, y: int, im: Any) -> None:
        """A PIL image of the caller's (this module does not load Pillow: the font is ours)."""
        rgbim = im.convert("RGB")
        self.blit(x, y, rgbim.width, rgbim.height, rgbim.tobytes("raw", "BGRX"))


class Window:
    """A session with one buffer and one view of its size: the simplest client."""

    def __init__(self, l4: L4, title: str, w: int, h: int, x: int = 0, y: int = 0,
                 cap: str = "gui", background: Colour = DARK) -> None:
        self.canvas = Canvas(w, h, background)
        self.gui = GuiSession(l4, cap, on_reopen=self._reopened)
        self.gui.buffer(w, h)
        self.view = self.gui.view(title)
        self.view.geometry(x, y, w, h)
        self.top = LABEL_H + 2

    @property
    def w(self) -> int:
        return self.canvas.w

    @property
    def h(self) -> int:
        return self.canvas.h

    def _reopened(self, gui: GuiSession) -> None:
        self.canvas.dirty = [Rect(0, 0, self.canvas.w, self.canvas.h)]
        self._write()

    def _write(self) -> None:
        c, dirty = self.canvas, self.canvas.dirty
        c.dirty = []
        if not dirty:
            return
        x0, y0 = min(r.x for r in dirty), min(r.y for r in dirty)
        y1 = max(r.y + r.h for r in dirty)
        x1 = max(r.x + r.w for r in dirty)
        # whole lines: one write of the rows between the first and the last dirty line
        self.gui.put(0, y0, c.w, y1 - y0, memoryview(c.pixels)[y0 * c.w * 4:y1 * c.w * 4])
        self.gui.refresh(x0, y0, x1 - x0, y1 - y0)

    def show(self) -> None:
        self._write()

    def events(self, timeout_ms: float = 500) -> list[Event]:
        return self.gui.wait(timeout_ms)

    def info(self) -> dict[str, Any]:
        return self.gui.stats()
