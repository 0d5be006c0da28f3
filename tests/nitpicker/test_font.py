"""The font's own glyph table draws what Pillow drew (servers/nitpicker/font.py, glyphs.py).

Nitpicker's label bars, the signer's PIN window and the terminal are drawn with this font,
and the pixel tests (the Nizza label attack among them) compare those pixels: so the table
must give exactly the pixels of the Pillow rendering it replaced. The reference here is that
old code, run on the host's Pillow: every Latin-1 character alone, strings of printable
ASCII cut and padded, odd heights, control characters, and the whole-factor scaling the
toolkit uses. And no task loads Pillow for its text any more.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from servers.nitpicker.font import CELL_H, CELL_W, scale_pixels, text_pixels
from servers.nitpicker.glyphs import GLYPHS

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

FG, BG = (255, 255, 255), (40, 40, 56)
_FONT = ImageFont.load_default_imagefont()


def pillow_pixels(text: str, fg: tuple[int, int, int], bg: tuple[int, int, int],
                  width: int | None = None, height: int = CELL_H) -> tuple[int, int, bytes]:
    """The implementation font.py had before its table: Pillow's built-in bitmap font."""
    w = len(text) * CELL_W if width is None else width
    w, h = max(1, w), max(1, height)
    im = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(im).text((1, (h - CELL_H) // 2 + 1), text, font=_FONT, fill=fg)
    return w, h, im.tobytes("raw", "BGRX")


def test_every_latin1_character_alone_matches_pillow() -> None:
    assert len(GLYPHS) == 256
    for code in range(256):
        ch = chr(code)
        assert text_pixels(ch, FG, BG) == pillow_pixels(ch, FG, BG), f"character {code:#04x}"
        # and in the middle of a string, where its right column is not cut by the canvas
        s = f"a{ch}b"
        assert text_pixels(s, (0, 200, 0), BG) == pillow_pixels(s, (0, 200, 0), BG), \
            f"character {code:#04x} between two others"


def test_strings_cut_padded_and_odd_heights_match_pillow() -> None:
    rnd = random.Random(20)
    printable = [chr(c) for c in range(0x20, 0x7f)]
    for i in range(300):
        s = "".join(rnd.choice(printable) for _ in range(rnd.randint(0, 40)))
        if i % 7 == 0:
            s = s[:5] + "\t\x1b\x85" + s[5:]         # controls: drawn as nothing, no advance
        if i % 11 == 0:
            s = s[:3] + "\n" + s[3:]                    # Pillow's second line, 15 rows lower
        if i % 13 == 0:
            s = s[:4] + "\x00" + s[4:]                  # a NUL ends the line (a C string)
        width = rnd.choice([None, 0, 1, 5, 37, len(s) * CELL_W + 13, 400])
        height = rnd.choice([CELL_H, 1, 7, 11, 13, 16, 30])
        fg = tuple(rnd.randrange(256) for _ in range(3))
        bg = tuple(rnd.randrange(256) for _ in range(3))
        assert text_pixels(s, fg, bg, width, height) == pillow_pixels(s, fg, bg, width, height), \
            (s, width, height)


def test_a_character_pillow_refused_is_drawn_as_a_question_mark() -> None:
    with pytest.raises(UnicodeEncodeError):
        pillow_pixels("\u2500", FG, BG)
    assert text_pixels("x\u2500y", FG, BG) == pillow_pixels("x?y", FG, BG)


def test_whole_factor_scaling_matches_a_nearest_neighbour_resize() -> None:
    for n in (1, 2, 3):
        w, h, pix = text_pixels("OK 4711", FG, (10, 20, 200))
        im = Image.frombytes("RGB", (w, h), pix, "raw", "BGRX").resize(
            (w * n, h * n), Image.Resampling.NEAREST)
        assert scale_pixels(w, h, pix, n) == (w * n, h * n, im.tobytes("raw", "BGRX"))


def test_the_font_and_the_toolkit_load_no_imaging_library() -> None:
    code = ("import json, sys; import servers.nitpicker.font, servers.nitpicker.toolkit; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'PIL')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
