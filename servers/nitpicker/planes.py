"""Direct scan-out: the display shows a client's buffer itself, Nitpicker's label bar over it.

    planes = Planes(fb, vm, pins, screen_bus)   # maps the fb's plane page (FB `planes`)
    plan = planes.plan(stack, composing)      # a Plan, or None: compose
    planes.show(plan)      # program the planes (stores into the page, no call); the flip
                           # is complete when it returns (no scan-out reads the old buffer)
    planes.off()           # the base frame (what Nitpicker composed) shows again

Why: a composed full-screen frame is two copies (the client's into its buffer, Nitpicker's
into the scan-out memory); a driver writing the screen makes one. When the screen is
exactly one client buffer and Nitpicker's own decoration, the display can read that buffer
itself, as compositors do for an unobscured full-screen surface (direct scan-out, hardware
planes): the framebuffer's plane 0 shows the buffer, plane 1 shows the label bar from the
scan-out memory (which only Nitpicker and the fb server write), composed over plane 0 by
the device at scan-out (hal/fb.py "Planes"). A flip is then a few stores into the plane
page and no copy; the bar is still Nitpicker's pixels on top, which no client can reach.

When (`plan`): not while Nitpicker draws anything but the front view and its bar (X-ray:
`composing`; kill mode draws nothing, so it changes nothing here); the front view covers
the whole screen, and its buffer covers the view there (so nothing grey or behind shows);
the rows the screen shows lie in at most EXTENTS_N runs of contiguous frames (plane 0's
extent list: the device gathers the buffer as a scatter list; moe's frames come in runs).
Anything else is
composed as before (compose.py). What the screen shows is the same either way: the base
frame keeps the bar's pixels painted by the same painter; the rest is the buffer's pixels,
which the composed path would copy verbatim. One difference, by design: between refreshes
the display shows what the buffer holds now, so a client writing the half it shows sees its
writes early (in its own view only: it can reach nothing else).

Switching (server.py `repaint`): entering direct scan-out needs nothing composed (the base
frame was complete); while direct, only the bar's rows are painted into the base frame;
leaving (`off`) comes after a full repaint of the base frame, which went stale under plane 0.

Trust: the plane page is mapped by the fb server to its direct client only (FB `planes`),
and the device's DMA domain is then Nitpicker's address space, so a plane can show only
memory Nitpicker maps: its clients' buffers and the screen. A client cannot name a frame.
The device checks every plane at every scan-out (a bad one shows black and an error).

Page-flip completion: the device sets SCANNING and LATCHED (the SEQ it uses) while it reads;
after committing SEQ, `show` waits while a scan-out that latched an older set still reads
(Dekker's pattern, as the flip ring's: our store of SEQ, a fence, our load of SCANNING;
the device's store of SCANNING, a fence, its load of SEQ).

Ownership: Nitpicker's main thread; the page is reached through `pins` (held by the caller).
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple

from kernel.abi import SLOT_TASK, Rights
from kernel.user.client import map_cap
from kernel.user.errors import L4Error
from kernel.user.rpc import RemoteError
from kernel.user.vm import VM, PageFault, window
from servers.fb.client import FbSession

from .compose import LABEL_H
from .pinned import Pins
from .ring import fence, poll
from .views import Rect, Stack, View

PLANES_VADDR = 0x25_0000_0000
PAGE = 4096
SEQ, SCANNING, LATCHED, STATUS = 0, 8, 16, 24     # the page's words (hal/fb.py)
PLANE0, PLANE_SIZE = 64, 64
EXTENTS0, EXTENTS_N = 256, 120               # plane 0's extent list
_PLANE = struct.Struct("<8Q")
_EXTENT = struct.Struct("<2Q")
_WORD = struct.Struct("<Q")
ENABLE, LIST = 1, 2
FLIP_WAIT_S = 0.5              # longest wait for a scan-out of the old set to end


class Plan(NamedTuple):
    view: View
    src: tuple[tuple[int, int], ...]   # the buffer from its pixel at screen (0, 0) on:
                                       # physical (address, length) runs
    stride: int
    bar: Rect                  # the label bar on the screen (maybe empty)


class Planes:
    def __init__(self, fb: FbSession, vm: VM, pins: Pins, width: int, height: int) -> None:
        self.pins = pins
        self.width, self.height = width, height
        self.stride = width * 4
        self.ok = False
        self.active: tuple[Any, ...] | None = None   # what plane 0/1 show now
        self.bar: Rect | None = None                  # ... plane 1 (the bar): None if off
        self.seq = 0
        self.direct = self.composed = self.waits = 0   # frames shown each way; flip waits
        try:
            got = dict(fb.stub.planes(_items=[map_cap(SLOT_TASK, Rights.INVOKE | Rights.GRANT)],
                                      _window=window(PLANES_VADDR, 12)))
        except (RemoteError, L4Error) as e:
            print(f"nitpicker: no planes: {e}", flush=True)
            return
        vm.flush()
        self.screen_bus = int(got["screen_bus"])
        pins.add(PLANES_VADDR, PAGE, writable=True)
        self.ok = True
        print("nitpicker: direct scan-out of full-screen views (planes)", flush=True)

    def close(self) -> None:
        self.pins.remove(PLANES_VADDR)
        self.ok = False
        self.active = self.bar = None

    def candidate(self, stack: Stack, composing: bool) -> View | None:
        """The view the screen is made of alone (it and its bar), if any: no memory read."""
        if not self.ok or composing or not stack.views:
            return None
        v = stack.views[0]
        b = v.session.buffer
        scr = Rect(0, 0, self.width, self.height)
        if b is None or v.rect.intersect(scr) != scr or Rect(
                v.rect.x - v.buf_x, v.rect.y - v.buf_y, b.width, b.height).intersect(scr) != scr:
            return None
        return v

    def plan(self, stack: Stack, composing: bool) -> Plan | None:
        """Inside pins.held(): the planes for the screen as it is, or None (compose it)."""
        v = self.candidate(stack, composing)
        if v is None or v.session.buffer is None:
            return None
        b = v.session.buffer
        scr = Rect(0, 0, self.width, self.height)
        ox, oy = v.buf_x - v.rect.x, v.buf_y - v.rect.y      # the buffer pixel at (0, 0)
        src = tuple(self.pins.bus(b.addr + oy * b.stride + ox * 4,
                                  (self.height - 1) * b.stride + self.stride))
        if not src or len(src) > EXTENTS_N:
            return None                                # gone, or too many runs: compose
        bar = Rect(v.rect.x, v.rect.y, v.rect.w, min(LABEL_H, v.rect.h)).intersect(scr)
        return Plan(v, src, b.stride, bar)

    def _page(self) -> memoryview:
        return self.pins.view(PLANES_VADDR)

    def _commit(self, planes: tuple[int, ...], src: tuple[tuple[int, int], ...]) -> None:
        """Write both planes (plane 0's extent list `src`) under an odd SEQ, then the even
        SEQ; wait for the flip."""
        mv = self._page()
        self.seq += 1
        _WORD.pack_into(mv, SEQ, self.seq)
        for i in range(2):
            _PLANE.pack_into(mv, PLANE0 + i * PLANE_SIZE, *planes[i * 7:i * 7 + 7], 0)
        for k, (phys, length) in enumerate((*src, (0, 0))[:EXTENTS_N]):
            _EXTENT.pack_into(mv, EXTENTS0 + k * _EXTENT.size, phys, length)
        self.seq += 1
        _WORD.pack_into(mv, SEQ, self.seq)
        self.active = (planes, src) if planes[0] else None
        fence()
        if _WORD.unpack_from(mv, SCANNING)[0] and _WORD.unpack_from(mv, LATCHED)[0] < self.seq:
            self.waits += 1
            poll(lambda: not _WORD.unpack_from(mv, SCANNING)[0]
                 or _WORD.unpack_from(mv, LATCHED)[0] >= self.seq, FLIP_WAIT_S)

    def show(self, p: Plan) -> None:
        """Inside pins.held(): plane 0 the buffer, plane 1 the bar (from the base frame)."""
        bar = (ENABLE, self.screen_bus + p.bar.y * self.stride + p.bar.x * 4, self.stride,
               *p.bar) if not p.bar.empty else (0,) * 7
        planes = (ENABLE | LIST, 0, p.stride, 0, 0, self.width, self.height, *bar)
        if (planes, p.src) != self.active:
            self._commit(planes, p.src)
        self.bar = p.bar
        self.direct += 1

    def off(self) -> None:
        """Inside pins.held(): the base frame shows again (after it was fully repainted)."""
        self.bar = None
        if self.active is not None:
            self._commit((0,) * 14, ())

    def usage(self) -> dict[str, Any]:
        status = None
        if self.ok:
            try:
                with self.pins.held():
                    status = _WORD.unpack_from(self._page(), STATUS)[0]
            except PageFault:                      # the page is gone (fb died): no status
                status = None
        return {"planes": self.ok, "scanout_direct": self.active is not None,
                "frames_direct": self.direct, "frames_composed": self.composed,
                "flip_waits": self.waits, "plane_status": status}
