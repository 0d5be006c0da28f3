"""Text as pixels: one small monospaced bitmap font (6x12 cells), XRGB8888 out, pure Python.

    text_pixels("hello", fg, bg, width=None, height=CELL_H) -> (w, h, bytes)
    scale_pixels(w, h, pixels, n) -> (w * n, h * n, bytes)

Used by Nitpicker for the labels it draws and by the client toolkit (toolkit.py), so by
the signer's PIN window, the terminal and the clock: all of them are in some task's
trusted computing base, which is why the font is a table of our own (glyphs.py) and not
an imaging library.

Mechanism: glyphs.py holds one entry per Latin-1 code point, CELL_H row masks of CELL_W
bits (courB08, the bitmap font Pillow embeds, read once by glyphs_source.py). A string is
drawn as Pillow drew it before: the pen starts at x = 1 and y = (h - CELL_H) // 2 + 1 and
advances CELL_W per character; a control character (C0, C1) draws nothing and does not
advance; a character outside Latin-1 (Pillow refused it) is drawn as '?'. Every pixel is
fg or bg (the font has no grey levels); what falls outside w x h is cut.
Contract: the canvas is `len(text) * CELL_W` wide unless `width` pads or cuts it; colours
are (r, g, b) of 0..255; rows are XRGB8888 little-endian (bytes b, g, r, 0), as the
framebuffer wants. tests/nitpicker/test_font.py compares every glyph, and strings, with
Pillow's own rendering while Pillow is installed.
Ownership: pure functions; the caches (bounded) are per process, shared by its threads
(lru_cache is thread-safe).
"""
from __future__ import annotations

from functools import lru_cache

from .glyphs import GLYPHS, LINE_H

CELL_W, CELL_H = 6, 12      # every printable glyph advances CELL_W; a text row is CELL_H
LINE_SPACING = LINE_H + 4   # where Pillow put the next line of a text with a newline
MARGIN = 8                  # bits either side of a line's mask: a box may stick out by one
Colour = tuple[int, int, int]


def _paste(codes: tuple[int, ...]) -> list[int]:
    """The LINE_H row masks (CELL_W bits a glyph, leftmost pixel the highest bit) of the
    glyphs `codes` side by side (-1: an empty cell): each glyph's box pasted over what is
    there, its clear pixels too, as Pillow's bitmap font does."""
    width = CELL_W * len(codes)
    rows = [0] * LINE_H
    for i, code in enumerate(codes):
        if code < 0:
            continue
        _, x0, y0, w, ink = GLYPHS[code]
        shift = width + MARGIN - CELL_W * i - x0 - w
        for j, bits in enumerate(ink):
            if 0 <= y0 + j < LINE_H:
                rows[y0 + j] = rows[y0 + j] & ~(((1 << w) - 1) << shift) | bits << shift
    keep = (1 << width) - 1
    return [(m >> MARGIN) & keep for m in rows]


_PATTERN = tuple(bytes(mask >> (CELL_W - 1 - x) & 1 for x in range(CELL_W))
                 for mask in range(1 << CELL_W))
_CELLS: dict[tuple[int, int, int], tuple[bytes, ...]] = {}
_CELLS_MAX = 1 << 16
_MISSING = ord("?")


def _cell(prev: int, code: int, nxt: int) -> tuple[bytes, ...]:
    """Glyph `code`'s cell (LINE_H rows of CELL_W bytes 0/1) between `prev` and `nxt`: a
    box reaches at most one pixel into a neighbour (glyphs_source.py's table), so a cell
    depends on its two neighbours and no further. Cached (a dict the GIL keeps whole)."""
    key = (prev, code, nxt)
    found = _CELLS.get(key)
    if found is None:
        if len(_CELLS) >= _CELLS_MAX:
            _CELLS.clear()
        found = _CELLS[key] = tuple(_PATTERN[m >> CELL_W & 63] for m in _paste(key))
    return found


def _line(line: str) -> list[bytes]:
    """LINE_H rows of 0/1 bytes, one a pixel, of one line of text: a NUL ends it (Pillow's
    C loop stops there), a control character is not drawn and does not advance."""
    codes = []
    for ch in line:
        code = ord(ch)
        if code == 0:
            break
        code = code if code < len(GLYPHS) else _MISSING
        if GLYPHS[code][0]:
            codes.append(code)
    padded = [-1] + codes + [-1]
    cells = [_cell(padded[i - 1], padded[i], padded[i + 1]) for i in range(1, len(padded) - 1)]
    return [b"".join([c[r] for c in cells]) for r in range(LINE_H)]


@lru_cache(maxsize=64)
def _channels(fg: Colour, bg: Colour) -> tuple[bytes, bytes, bytes]:
    """Translation tables 0 -> bg, 1 -> fg for the blue, green and red bytes."""
    return tuple(bytes([bg[k], fg[k]]) + bytes(254) for k in (2, 1, 0))  # type: ignore[return-value]


@lru_cache(maxsize=2048)
def text_pixels(text: str, fg: Colour, bg: Colour, width: int | None = None,
                height: int = CELL_H) -> tuple[int, int, bytes]:
    """`text` drawn in fg on bg, (w, h, XRGB8888 rows); `width` pads or cuts it."""
    w = len(text) * CELL_W if width is None else width
    w, h = max(1, w), max(1, height)
    top = (h - CELL_H) // 2 + 1
    lines = [_line(line) for line in text.split("\n")]
    blank = bytes(w)
    mask = []
    for y in range(h):
        li, r = divmod(y - top, LINE_SPACING)
        if 0 <= li < len(lines) and r < LINE_H:
            row = b"\0" + lines[li][r]           # the pen starts one pixel in
            mask.append(row[:w] if len(row) >= w else row + bytes(w - len(row)))
        else:
            mask.append(blank)
    ones = b"".join(mask)
    out = bytearray(4 * w * h)
    blue, green, red = _channels(fg, bg)
    out[0::4], out[1::4], out[2::4] = ones.translate(blue), ones.translate(green), \
        ones.translate(red)
    return w, h, bytes(out)


def scale_pixels(w: int, h: int, pixels: bytes, n: int) -> tuple[int, int, bytes]:
    """XRGB8888 `pixels` (w x h) enlarged n times, each pixel an n x n block (what a
    nearest-neighbour resize by a whole factor gives)."""
    if n <= 1:
        return w, h, pixels
    rows = []
    for y in range(h):
        src = pixels[4 * w * y:4 * w * (y + 1)]
        row = b"".join([src[i:i + 4] * n for i in range(0, 4 * w, 4)])
        rows.append(row * n)
    return w * n, h * n, b"".join(rows)
