"""Nitpicker's painter: a screen rectangle composed from the views that cover it, labels on top.

    screen = Screen(width, height, read_into, pixels=None)
    with screen.into(mv): screen.paint(rect, stack, focused_session, xray) -> the rect clipped

`pixels` is Nitpicker's own copy of the screen (XRGB8888, `width * 4` bytes a line), or
`into(mv)` paints into other memory of that shape for a while: the scan-out memory itself
when the fb server maps it to Nitpicker (output.py). Every copy is a memoryview slice
assignment per row run (one for whole lines), never per pixel. Painting a rectangle: the background; then each view, back to front, clipped to the
rectangle: the buffer pixels it shows (read from the session's dataspace with
`read_into(addr, dst)`, Nitpicker's VM; what lies outside the buffer is grey); in X-ray mode
every view but the focused session's dimmed to a quarter; then the view's label bar — the
session's name (the policy's, never the client's) and the view's title — over the top
LABEL_H lines of the view. The bar is painted by Nitpicker after the client's pixels, so no
client can paint over its own label; a view in front may cover another's bar, which is
what X-ray mode reveals: all but the focused session dimmed, and every bar painted again
on top of all views, so each view's true owner shows.

Contracts: a view's pixels come only from its own session's buffer, and only the part
inside that buffer is read; nothing is read outside `rect`. Geometry was checked when it
was set (views.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from .font import CELL_H, text_pixels
from .views import Rect, Session, Stack, View

LABEL_H = CELL_H + 2
BACKGROUND = (40, 44, 52)
OUTSIDE = (96, 96, 96)                      # view pixels that lie outside the buffer
BAR, BAR_TEXT = (64, 64, 72), (230, 230, 230)
BAR_FOCUS, BAR_FOCUS_TEXT = (40, 110, 220), (255, 255, 255)
BAR_XRAY, BAR_XRAY_TEXT = (200, 40, 40), (255, 255, 255)
DIM = bytes(b >> 2 for b in range(256))     # X-ray: a quarter of each channel
BAR_CACHE = 64                              # label bars kept drawn

ReadInto = Callable[[int, memoryview], None]


def px(c: tuple[int, int, int]) -> bytes:
    return bytes((c[2], c[1], c[0], 0))


def label_text(v: View) -> str:
    return f"{v.session.name} | {v.title}" if v.title else v.session.name


class Screen:
    """The composed screen. Owned by Nitpicker's main thread."""

    def __init__(self, width: int, height: int, read_into: ReadInto,
                 pixels: memoryview | None = None) -> None:
        self.width, self.height = width, height
        self.stride = width * 4
        self.pixels = memoryview(bytearray(px(BACKGROUND) * (width * height))) \
            if pixels is None else pixels
        self.mv = self.pixels        # where paint writes: `pixels`, or what `into` gave
        self.read_into = read_into
        self.painted = 0                       # pixels composed so far
        self.bars: dict[tuple[str, bool, bool, int], tuple[int, memoryview]] = {}  # drawn labels

    @contextmanager
    def into(self, mv: memoryview) -> Iterator[None]:
        self.mv = mv
        try:
            yield
        finally:
            self.mv = self.pixels

    def clip(self, r: Rect) -> Rect:
        return r.intersect(Rect(0, 0, self.width, self.height))

    def _fill(self, r: Rect, colour: bytes) -> None:
        row = colour * r.w
        for y in range(r.y, r.y + r.h):
            o = y * self.stride + r.x * 4
            self.mv[o:o + r.w * 4] = row

    def _dim(self, r: Rect) -> None:
        mv, n = self.mv, r.w * 4
        if r.w == self.width:
            o = r.y * self.stride
            mv[o:o + r.h * n] = bytes(mv[o:o + r.h * n]).translate(DIM)
            return
        for y in range(r.y, r.y + r.h):
            o = y * self.stride + r.x * 4
            mv[o:o + n] = bytes(mv[o:o + n]).translate(DIM)

    def paint(self, rect: Rect, stack: Stack, focused: Session | None, xray: bool) -> Rect:
        r = self.clip(rect)
        if r.empty:
            return r
        views = stack.back_to_front() if xray else self._visible(stack, r)
        if not views or views[0].rect.intersect(r) != r:
            self._fill(r, px(BACKGROUND))
        for v in views:
            part = v.rect.intersect(r)
            if part.empty:
                continue
            self._content(v, part)
            if xray and v.session is not focused:
                self._dim(part)
            if not xray:
                self._bar(v, part, v.session is focused, xray)
        if xray:                                # X-ray: every label on top of everything
            for v in views:
                part = v.rect.intersect(r)
                if not part.empty:
                    self._bar(v, part, v.session is focused, xray)
        self.painted += r.w * r.h
        return r

    @staticmethod
    def _visible(stack: Stack, r: Rect) -> list[View]:
        """The views to paint for `r`, back to front: none behind the front-most view that
        covers all of `r` with its buffer (they would be painted over). Not in X-ray mode:
        there every label bar shows, so all views count."""
        out: list[View] = []
        for v in stack.views:                       # front first
            out.append(v)
            b = v.session.buffer
            if b is not None and v.rect.intersect(r) == r and Rect(
                    v.rect.x - v.buf_x, v.rect.y - v.buf_y, b.width, b.height).intersect(r) == r:
                break
        return out[::-1]

    def _content(self, v: View, part: Rect) -> None:
        """The buffer pixels `part` of view `v` shows (grey where it shows no buffer)."""
        buf = v.session.buffer
        inside = Rect(0, 0, 0, 0)
        if buf is not None:
            # the buffer, in screen coordinates
            inside = Rect(v.rect.x - v.buf_x, v.rect.y - v.buf_y, buf.width,
                          buf.height).intersect(part)
        if inside != part:
            self._fill(part, px(OUTSIDE))
        if inside.empty or buf is None:
            return
        bx, by = inside.x - v.rect.x + v.buf_x, inside.y - v.rect.y + v.buf_y
        n = inside.w * 4
        if inside.w == self.width == buf.width:            # whole lines on both sides
            o = inside.y * self.stride
            self.read_into(buf.addr + by * buf.stride, self.mv[o:o + inside.h * n])
            return
        src = buf.addr + by * buf.stride + bx * 4
        dst = inside.y * self.stride + inside.x * 4
        for _ in range(inside.h):
            self.read_into(src, self.mv[dst:dst + n])
            src += buf.stride
            dst += self.stride

    def _bar(self, v: View, part: Rect, focused: bool, xray: bool) -> None:
        bar = Rect(v.rect.x, v.rect.y, v.rect.w, min(LABEL_H, v.rect.h)).intersect(part)
        if bar.empty:
            return
        w, pix = self._label(label_text(v), focused, xray, v.rect.w)
        n = bar.w * 4
        if bar.w == w == self.width:                   # whole lines on both sides: one copy
            o = bar.y * self.stride
            so = (bar.y - v.rect.y) * w * 4
            self.mv[o:o + bar.h * n] = pix[so:so + bar.h * n]
            return
        for y in range(bar.y, bar.y + bar.h):
            so = ((y - v.rect.y) * w + (bar.x - v.rect.x)) * 4
            do = y * self.stride + bar.x * 4
            self.mv[do:do + n] = pix[so:so + n]

    def _label(self, text: str, focused: bool, xray: bool, width: int) -> tuple[int, memoryview]:
        """A label bar's pixels, drawn once per text, state and width (a full-screen
        frame would otherwise draw its bar anew each time)."""
        key = (text, focused, xray, width)
        got = self.bars.get(key)
        if got is None:
            bg, fg = (BAR_XRAY, BAR_XRAY_TEXT) if xray and focused else \
                (BAR_FOCUS, BAR_FOCUS_TEXT) if focused else (BAR, BAR_TEXT)
            w, _, pix = text_pixels(text, fg, bg, width, LABEL_H)
            if len(self.bars) >= BAR_CACHE:
                self.bars.clear()
            got = self.bars[key] = (w, memoryview(pix))
        return got


def union_rects(rects: list[Rect]) -> list[Rect]:
    """Rectangles to repaint: merged into their bounding box when that costs little."""
    rs = [r for r in rects if not r.empty]
    if len(rs) <= 1:
        return rs
    x0, y0 = min(r.x for r in rs), min(r.y for r in rs)
    x1, y1 = max(r.x + r.w for r in rs), max(r.y + r.h for r in rs)
    box = Rect(x0, y0, x1 - x0, y1 - y0)
    if box.w * box.h <= 2 * sum(r.w * r.h for r in rs):
        return [box]
    return rs
