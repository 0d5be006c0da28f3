"""Text as pixels: one small monospaced bitmap font (Pillow's built-in 6x11), XRGB8888 out.

    text_pixels("hello", fg, bg, width=None, height=CELL_H) -> (w, h, bytes)

Used by Nitpicker for the labels it draws and by the client toolkit (toolkit.py). The font
is embedded in Pillow (no file is read, so it works inside a task's sandbox); each glyph is
CELL_W pixels wide, so a string of n characters is n * CELL_W pixels. Rendered strings are
cached (bounded), since labels and terminal lines repeat.
"""
from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

CELL_W, CELL_H = 6, 12
Colour = tuple[int, int, int]

_FONT = ImageFont.load_default_imagefont()


@lru_cache(maxsize=2048)
def text_pixels(text: str, fg: Colour, bg: Colour, width: int | None = None,
                height: int = CELL_H) -> tuple[int, int, bytes]:
    """`text` drawn in fg on bg, (w, h, XRGB8888 rows); `width` pads or cuts it."""
    w = len(text) * CELL_W if width is None else width
    w, h = max(1, w), max(1, height)
    im = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(im).text((1, (h - CELL_H) // 2 + 1), text, font=_FONT, fill=fg)
    return w, h, im.tobytes("raw", "BGRX")
