"""The framebuffer: width x height 32-bit pixels in physical RAM, mode registers, planes, screenshots.

Registers (from 8): WIDTH, HEIGHT (1..MAX_WIDTH/MAX_HEIGHT), STRIDE (bytes per line,
read-only: WIDTH*4), BPP (read-only: 32), BASE (physical address of the first pixel, 4-byte
aligned), CTRL (bit0 ENABLE), MAX_WIDTH, MAX_HEIGHT (read-only), PLANES (physical address
of the plane page, page aligned; 0: no planes), PLANE_STATUS (read-only: the last scan-out's
plane error, 0 if none). Pixel format XRGB8888, little-endian: bytes B, G, R, X at
BASE + y*STRIDE + x*4.

ENABLE is accepted only if the mode is valid and the whole frame [BASE, BASE+STRIDE*HEIGHT)
lies in RAM (else BAD_VALUE / DMA_RANGE, and ENABLE stays clear); changing the mode while
enabled is re-checked the same way. The framebuffer raises no interrupt.

Scan-out. The device has no vsync: it scans out when it is looked at (`pixels()`, what the
control socket's `pixels` and `screenshot` answer: `l4run screenshot`, the browser viewer's
poll). A scan-out shows the base frame (BASE), then the enabled planes over it in order.

Planes (hal/DEVICES.md "Planes"): PLANES names a page of RAM the device reads at every
scan-out, a block of plane registers in memory (as a display controller's shadow
registers or display list): whoever the driver maps that page to programs the planes with
plain stores, no register IPC. Each plane is a rectangle of the screen (X, Y, W, H) shown
from its own memory (ADDR, STRIDE): plane 0 under plane 1, both over the base frame. So a
compositor can scan out of a client's buffer (plane 0, the whole screen) with its own
decoration on top (plane 1, from memory only it writes) and copy nothing per frame.
With CTRL.LIST a plane's memory is a scatter list of physical runs in the page (its extent
list) and ADDR an offset into it, so a buffer need not be physically contiguous.
Consistency: the writer makes SEQ odd while it changes the planes and even when done; the
device latches the planes only from an even SEQ it read unchanged around its copy, and
keeps the set it latched last otherwise (shadow registers latch at a frame's start). While
a scan-out reads plane memory the device sets SCANNING and LATCHED (the SEQ it uses), so a
writer knows when a page flip is complete (the old buffer no longer read).

Validation at scan-out (nothing a driver writes into the page can crash the device): a
plane with unknown CTRL bits, a rectangle not inside the mode, a misaligned ADDR, STRIDE or
extent, STRIDE < W*4, an extent list shorter than the plane, or plane memory (or the page
itself: plane 0xff) outside RAM or not allowed by the device's DMA domain
(hal/iommu.py, checked at every scan-out) makes that scan-out show black; the code
(BAD_VALUE, DMA_RANGE, DMA_DENIED) | plane << 8 goes to STATUS in the page and to the
PLANE_STATUS register, and ERROR/STATUS.ERROR are set as for a refused register write.

`screenshot()` (control socket; `l4run screenshot`) renders the scan-out as a PNG.
"""
from __future__ import annotations

import io
import struct
import threading
from typing import Any, NamedTuple

from .device import Device, ErrCode
from .pic import Pic
from .ram import Ram

ENABLE, LIST = 0x1, 0x2               # a plane's CTRL bits
PAGE = 4096
PLANES_N = 2
# the plane page: byte offsets of its words (little-endian u64)
SEQ, SCANNING, LATCHED, STATUS, SCANOUTS, ERRORS = 0, 8, 16, 24, 32, 40
PLANE0, PLANE_SIZE = 64, 64            # plane i at PLANE0 + i * PLANE_SIZE:
PLANE = struct.Struct("<8Q")           # CTRL, ADDR, STRIDE, X, Y, W, H, reserved
EXTENTS0, EXTENTS_N = 256, 120         # plane i's extent list at EXTENTS0 + i * EXTENTS_N * 16:
EXTENT = struct.Struct("<2Q")          # physical address, length (0: the list ends)
_WORD = struct.Struct("<Q")
LATCH_TRIES = 4
_FENCE = threading.Lock()
assert EXTENTS0 + PLANES_N * EXTENTS_N * EXTENT.size <= PAGE


class Plane(NamedTuple):
    ctrl: int
    addr: int              # physical; with LIST an offset into the memory `extents` list
    stride: int
    x: int
    y: int
    w: int
    h: int
    extents: tuple[tuple[int, int], ...] = ()

    def pieces(self, off: int, n: int) -> list[tuple[int, int]]:
        """Bytes [off, off+n) from the plane's first pixel as physical (address, length)
        pieces (fewer bytes than n if the extent list ends first)."""
        off += self.addr
        if not self.ctrl & LIST:
            return [(off, n)]
        out, pos = [], 0
        for phys, length in self.extents:
            if n <= 0:
                break
            if off < pos + length:
                o = max(0, off - pos)
                k = min(length - o, n)
                out.append((phys + o, k))
                off, n = off + k, n - k
            pos += length
        return out


def fence() -> None:
    """A full barrier between a store and the next load (a locked instruction on x86)."""
    with _FENCE:
        pass


class Framebuffer(Device):
    kind = "fb"
    ID = 0x46420001
    REGS = {"WIDTH": (8, "rw"), "HEIGHT": (9, "rw"), "STRIDE": (10, "ro"), "BPP": (11, "ro"),
            "BASE": (12, "rw"), "CTRL": (13, "rw"), "MAX_WIDTH": (14, "ro"), "MAX_HEIGHT": (15, "ro"),
            "PLANES": (16, "rw"), "PLANE_STATUS": (17, "ro")}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram, max_width: int = 1024,
                 max_height: int = 768) -> None:
        super().__init__(name, line, pic, ram)
        if not (1 <= max_width <= 8192 and 1 <= max_height <= 8192):
            raise ValueError(f"device {name}: mode {max_width}x{max_height} outside 1..8192")
        self.max_width, self.max_height = max_width, max_height
        self.regs.update(WIDTH=max_width, HEIGHT=max_height, BASE=0, CTRL=0, PLANES=0)
        self.plane_status = 0
        self.latched: tuple[int, int, list[Plane]] = (0, -1, [])   # (PLANES, SEQ, planes)
        self.scanouts = self.plane_errors = 0

    def read_reg(self, name: str) -> int:
        if name == "STRIDE":
            return self.regs["WIDTH"] * 4
        if name == "BPP":
            return 32
        if name == "MAX_WIDTH":
            return self.max_width
        if name == "MAX_HEIGHT":
            return self.max_height
        if name == "PLANE_STATUS":
            return self.plane_status
        return super().read_reg(name)

    def _valid(self, mode: dict[str, int]) -> ErrCode:
        if not (1 <= mode["WIDTH"] <= self.max_width and 1 <= mode["HEIGHT"] <= self.max_height):
            return ErrCode.BAD_VALUE
        if mode["BASE"] % 4 or mode["CTRL"] & ~ENABLE:
            return ErrCode.BAD_VALUE
        if mode["CTRL"] & ENABLE:
            return self.dma([(mode["BASE"], mode["WIDTH"] * 4 * mode["HEIGHT"], False)])
        return ErrCode.NONE

    def write_reg(self, name: str, value: int) -> None:
        if name in ("WIDTH", "HEIGHT", "BASE", "CTRL"):
            mode = {**self.regs, name: value}
            err = self._valid(mode)
            if err:
                self.fail(err)
            else:
                self.regs[name] = value
        elif name == "PLANES":
            err = ErrCode.BAD_VALUE if value % PAGE else \
                self.dma([(value, PAGE, True)]) if value else ErrCode.NONE
            if err:
                self.fail(err)
            else:
                self.regs["PLANES"] = value
                self.latched = (value, -1, [])
                self.plane_status = 0
        else:
            super().write_reg(name, value)

    # -- scan-out -------------------------------------------------------------------------
    def _latch(self, page: memoryview) -> list[Plane]:
        """The plane set to show: read from the page at an even SEQ that held across the
        read, else the one latched last (see the module's doc)."""
        planes_at, seq_then, kept = self.latched
        for _ in range(LATCH_TRIES):
            seq = _WORD.unpack_from(page, SEQ)[0]
            raw = bytes(page[:PAGE])
            fence()
            if seq % 2 == 0 and _WORD.unpack_from(page, SEQ)[0] == seq:
                got = [self._plane(raw, i) for i in range(PLANES_N)]
                self.latched = (planes_at, seq, got)
                return got
        return kept

    @staticmethod
    def _plane(raw: bytes, i: int) -> Plane:
        ctrl, addr, stride, x, y, w, h, _ = PLANE.unpack_from(raw, PLANE0 + i * PLANE_SIZE)
        extents: list[tuple[int, int]] = []
        if ctrl & LIST:
            at = EXTENTS0 + i * EXTENTS_N * EXTENT.size
            for k in range(EXTENTS_N):
                phys, length = EXTENT.unpack_from(raw, at + k * EXTENT.size)
                if not length:
                    break
                extents.append((phys, length))
        return Plane(ctrl, addr, stride, x, y, w, h, tuple(extents))

    def _check(self, planes: list[Plane], w: int, h: int) -> tuple[ErrCode, int]:
        """(NONE, 0) if every enabled plane may be shown, else (code, plane index)."""
        for i, p in enumerate(planes):
            if not p.ctrl & ENABLE:
                if p.ctrl:
                    return ErrCode.BAD_VALUE, i
                continue
            if p.ctrl & ~(ENABLE | LIST) or p.w < 1 or p.h < 1 or p.x + p.w > w \
                    or p.y + p.h > h or p.addr % 4 or p.stride % 4 or p.stride < p.w * 4:
                return ErrCode.BAD_VALUE, i
            n = (p.h - 1) * p.stride + p.w * 4
            pieces = p.pieces(0, n)
            if sum(k for _, k in pieces) != n or any(phys % 4 or k % 4 for phys, k in pieces):
                return ErrCode.BAD_VALUE, i            # the list is short, or splits a pixel
            if not all(self.ram.check(a, k) for a, k in pieces):
                return ErrCode.DMA_RANGE, i
            err = self.dma([(a, k, False) for a, k in pieces])
            if err:
                return err, i
        return ErrCode.NONE, 0

    def _compose(self, w: int, h: int, base: int) -> bytes:
        """The base frame with the planes over it, or black if the page or a plane is
        refused (the error recorded). Called with the lock held."""
        addr = self.regs["PLANES"]
        err = self.dma([(addr, PAGE, True)])
        if err:
            self._refuse(err, 0xff)
            return bytes(w * h * 4)
        page = self.ram.view(addr, PAGE)
        _WORD.pack_into(page, SCANNING, 1)
        fence()
        try:
            planes = self._latch(page)
            _WORD.pack_into(page, LATCHED, max(0, self.latched[1]))
            err, which = self._check(planes, w, h)
            if err:
                self._refuse(err, which, page)
                return bytes(w * h * 4)
            stride = w * 4
            covered = any(p.ctrl & ENABLE and p.x == 0 and p.y == 0 and p.w == w and p.h == h
                          for p in planes)
            frame = bytearray(w * h * 4) if covered else bytearray(self.ram.view(base, h * stride))
            for p in planes:
                if p.ctrl & ENABLE:
                    self._blit(frame, stride, p)
            _WORD.pack_into(page, SCANOUTS, _WORD.unpack_from(page, SCANOUTS)[0] + 1)
            _WORD.pack_into(page, STATUS, 0)
            self.plane_status = 0
            return bytes(frame)
        finally:
            _WORD.pack_into(page, SCANNING, 0)
            page.release()

    def _blit(self, frame: bytearray, stride: int, p: Plane) -> None:
        """Plane `p` (checked) into the frame: piece by piece for whole lines, else by rows."""
        mv = self.ram.mv
        if p.x == 0 and p.w * 4 == stride == p.stride:
            dst = p.y * stride
            for a, k in p.pieces(0, p.h * stride):
                frame[dst:dst + k] = mv[a:a + k]
                dst += k
            return
        n, off, dst = p.w * 4, 0, p.y * stride + p.x * 4
        for _ in range(p.h):
            d = dst
            for a, k in p.pieces(off, n):
                frame[d:d + k] = mv[a:a + k]
                d += k
            off += p.stride
            dst += stride

    def _refuse(self, err: ErrCode, which: int, page: memoryview | None = None) -> None:
        self.plane_status = int(err) | which << 8
        self.plane_errors += 1
        self.fail(err)
        if page is not None:
            _WORD.pack_into(page, STATUS, self.plane_status)
            _WORD.pack_into(page, ERRORS, _WORD.unpack_from(page, ERRORS)[0] + 1)

    def scanout(self) -> tuple[bytes | None, int, int]:
        """(the pixels shown now, w * 4 bytes a line, or None while disabled; width; height)."""
        with self.lock:
            w, h, base, on = self.regs["WIDTH"], self.regs["HEIGHT"], self.regs["BASE"], \
                self.regs["CTRL"] & ENABLE
            if not on:
                return None, w, h
            self.scanouts += 1
            if not self.regs["PLANES"]:
                return self.ram.read(base, w * h * 4), w, h
            return self._compose(w, h, base), w, h

    def pixels(self) -> dict:
        """The screen now as raw XRGB8888 bytes (w * 4 a line); disabled: all zero."""
        data, w, h = self.scanout()
        return {"data": bytes(w * h * 4) if data is None else data, "width": w, "height": h,
                "enabled": data is not None}

    def screenshot(self) -> dict:
        """The screen now as PNG bytes; a disabled framebuffer shows black."""
        from PIL import Image
        data, w, h = self.scanout()
        if data is None:
            img = Image.new("RGB", (w, h))
        else:
            img = Image.frombuffer("RGB", (w, h), data, "raw", "BGRX", w * 4, 1)
        out = io.BytesIO()
        img.save(out, format="PNG")
        return {"png": out.getvalue(), "width": w, "height": h, "enabled": data is not None}

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "scanouts": self.scanouts, "plane_errors": self.plane_errors,
                "plane_status": self.plane_status}
