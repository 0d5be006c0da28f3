"""A framebuffer demo: sets a mode and draws a test picture, so a screenshot shows something.

    run(l4, device="fb0", base="0", width="0", height="0")   (0 = the largest mode)

The picture (`draw`): a vertical blue gradient, colour bars along the top, a red, a green
and a blue square, a white frame around the screen and "L4PY" in big block letters.
`SQUARES` and `BARS` say where and in which colour, so a test can check pixels in the PNG.
The frame lives at offset `base` of the DMA memory sigma0 gives us (`PhysRam`, physically
contiguous); the driver writes it through its address space and then sets BASE (its
physical address), WIDTH, HEIGHT and CTRL.ENABLE.
"""
from __future__ import annotations

from hal.device import Status
from kernel.user.client import L4

from .common import PhysRam, idle, log, number, open_device

# (x, y, size, (r, g, b)) - in a 640x480 frame or larger
SQUARES = [(60, 300, 100, (255, 0, 0)), (200, 300, 100, (0, 255, 0)), (340, 300, 100, (0, 0, 255))]
BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255),
        (255, 0, 0), (0, 0, 255), (0, 0, 0)]
BAR_HEIGHT = 40
WHITE = (255, 255, 255)
FONT = {   # 5x7 block letters
    "L": ["X....", "X....", "X....", "X....", "X....", "X....", "XXXXX"],
    "4": ["...X.", "..XX.", ".X.X.", "X..X.", "XXXXX", "...X.", "...X."],
    "P": ["XXXX.", "X...X", "X...X", "XXXX.", "X....", "X....", "X...."],
    "Y": ["X...X", "X...X", ".X.X.", "..X..", "..X..", "..X..", "..X.."],
}


def px(rgb: tuple[int, int, int]) -> bytes:
    r, g, b = rgb
    return bytes((b, g, r, 0))          # XRGB8888 little-endian: B, G, R, X


class Canvas:
    """A frame in memory (bytearray), written to RAM in one go."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.buf = bytearray(width * height * 4)

    def rect(self, x: int, y: int, w: int, h: int, rgb: tuple[int, int, int]) -> None:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(self.w, x + w), min(self.h, y + h)
        if x0 >= x1 or y0 >= y1:
            return
        row = px(rgb) * (x1 - x0)
        for yy in range(y0, y1):
            at = (yy * self.w + x0) * 4
            self.buf[at:at + len(row)] = row

    def text(self, x: int, y: int, s: str, scale: int, rgb: tuple[int, int, int]) -> None:
        for ch in s:
            for r, line in enumerate(FONT[ch]):
                for c, bit in enumerate(line):
                    if bit == "X":
                        self.rect(x + c * scale, y + r * scale, scale, scale, rgb)
            x += 6 * scale


def draw(c: Canvas) -> None:
    for y in range(c.h):                                  # background gradient
        shade = 40 + 120 * y // max(1, c.h - 1)
        c.rect(0, y, c.w, 1, (10, 20, shade))
    bw = c.w // len(BARS)
    for i, rgb in enumerate(BARS):
        c.rect(i * bw, 0, bw, BAR_HEIGHT, rgb)
    for x, y, size, rgb in SQUARES:
        c.rect(x, y, size, size, rgb)
    c.text(60, 90, "L4PY", 20, WHITE)
    for x, y, w, h in ((0, 0, c.w, 4), (0, c.h - 4, c.w, 4), (0, 0, 4, c.h), (c.w - 4, 0, 4, c.h)):
        c.rect(x, y, w, h, WHITE)


def run(l4: L4, device: str = "fb0", base: str = "0", width: str = "0",
        height: str = "0") -> int:
    fb = open_device(l4, device)
    mw, mh = fb.reads("MAX_WIDTH", "MAX_HEIGHT")
    w, h = number(width) or mw, number(height) or mh
    ram = PhysRam(l4, number(base) + w * h * 4)
    addr = ram.phys + number(base)        # `base`: an offset in our DMA buffer
    c = Canvas(w, h)
    draw(c)
    ram.write(addr, bytes(c.buf))
    fb.writes(CTRL=0, WIDTH=w, HEIGHT=h, BASE=addr)        # disabled while the mode changes
    status = fb.write("CTRL", 1)
    if status & Status.ERROR:
        log(f"fbdemo: {device} refused the mode {w}x{h} at {addr:#x}: error {fb.read('ERROR')}")
        return 1
    log(f"fbdemo: drew a {w}x{h} test picture on {device} at physical {addr:#x}")
    ram.close()
    return idle(l4)
