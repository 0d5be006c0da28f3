"""Where Nitpicker's composed screen goes: the scan-out memory itself, or a copy sent to fb.

    out = Output(l4, vm, pins, on_reopen)    # opens the fb session ("fb"), maps the screen
    out.width, out.height, out.direct
    with out.frame() as mv: ...              # the screen's pixels to paint into (pins held)
    out.show(rects)                          # after the frame: what the copy path must send

Direct (the fb server's policy names Nitpicker: `direct=N`, servers/fb/protocol.py
`screen`): the scan-out memory is mapped into Nitpicker at SCREEN_VADDR and composed into
in place. Painting is showing: no copy after the paint, no call per frame. It is pinned
(pinned.py) for the paint, so a shootdown waits for the paint's end.

Copied (an fb server that gives no direct mapping): Nitpicker composes into its own copy
of the screen, copies each painted rectangle into its fb session's buffer and refreshes it
there (one copy and one call per rectangle more).

Planes (planes.py): where the fb server also gives its plane page (FB `planes`), a screen
that is one client's full-screen view is scanned out of that client's buffer directly
(server.py `repaint` decides, frame by frame).

Faults: when the fb server dies, its scan-out memory (and the session buffer) vanish from
our address space: a frame then raises `ScreenGone` (the caller skips that paint). The fb
client notices the restart at its next call (Nitpicker's tick calls `stats`), opens a new
session and calls `reopened`: the new screen is mapped again, then `on_reopen` repaints.

Ownership: Nitpicker's main thread.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kernel.user.client import L4
from kernel.user.errors import L4Error, PeerDied, Timeout
from kernel.user.rpc import RemoteError
from kernel.user.vm import VM, PageFault
from servers.fb.client import FbSession

from .pinned import Pins
from .planes import Planes
from .views import Rect

FB_VADDR = 0x22_0000_0000           # the fb session's buffer (the copy path)
SCREEN_VADDR = 0x24_0000_0000       # the scan-out memory (the direct path)


class ScreenGone(Exception):
    """The screen's memory vanished (the fb server died); nothing was painted."""


class Output:
    def __init__(self, l4: L4, vm: VM, pins: Pins, on_reopen: Callable[[], None]) -> None:
        self.vm, self.pins = vm, pins
        self.on_reopen = on_reopen
        self.fb = FbSession(l4, "fb", vaddr=FB_VADDR, vm=vm, on_reopen=lambda _s: self.reopened())
        self.width, self.height = int(self.fb.mode["width"]), int(self.fb.mode["height"])
        self.stride = self.width * 4
        self.own = memoryview(bytearray(self.stride * self.height))   # the copy path's screen
        self.direct = False
        self.planes: Planes | None = None              # direct scan-out (planes.py)
        self.lost = 0                                  # frames that found the screen gone
        self._map()

    def _map(self) -> None:
        """The direct mapping, if the fb server gives it and it is the screen we paint."""
        self.pins.remove(SCREEN_VADDR)
        self.direct = False
        if self.planes is not None:
            self.planes.close()
            self.planes = None
        try:
            got = self.fb.map_screen(SCREEN_VADDR)
        except (RemoteError, L4Error) as e:
            print(f"nitpicker: no direct mapping of the screen: {e}", flush=True)
            return
        if got is None:
            return
        if (got["width"], got["height"], got["stride"]) != (self.width, self.height,
                                                            self.stride):
            print(f"nitpicker: the screen's mapping {got} is not the mode "
                  f"{self.width}x{self.height}: copying instead", flush=True)
            return
        self.pins.add(SCREEN_VADDR, self.stride * self.height, writable=True)
        self.direct = True
        print("nitpicker: composing straight into the scan-out memory", flush=True)
        planes = Planes(self.fb, self.vm, self.pins, self.width, self.height)
        self.planes = planes if planes.ok else None

    def reopened(self) -> None:
        self._map()
        self.on_reopen()

    @contextmanager
    def frame(self) -> Iterator[memoryview]:
        """The pixels to paint into, every pinned region held; ScreenGone if they vanished."""
        try:
            with self.pins.held():
                yield self.pins.view(SCREEN_VADDR) if self.direct else self.own
        except PageFault as e:
            self.lost += 1
            if self.direct:
                self.pins.remove(SCREEN_VADDR)
                self.direct = False                    # mapped again when fb is back
            if self.planes is not None:
                self.planes.close()
                self.planes = None
            raise ScreenGone(str(e)) from None

    def show(self, rects: list[Rect]) -> None:
        """After a frame: the copy path sends the painted rectangles to the fb server."""
        if self.direct:
            return
        try:
            self._send(rects)
        except PageFault as e:                         # the fb session's buffer is gone
            self.lost += 1
            print(f"nitpicker: the fb session's buffer is gone ({e}); waiting for fb",
                  flush=True)

    def _send(self, rects: list[Rect]) -> None:
        mv = self.own
        for r in rects:
            if r.w == self.width:
                o = r.y * self.stride
                self.vm.write(FB_VADDR + o, mv[o:o + r.h * self.stride])
            else:
                n = r.w * 4
                for y in range(r.y, r.y + r.h):
                    o = y * self.stride + r.x * 4
                    self.vm.write(FB_VADDR + o, mv[o:o + n])
            self.fb.refresh(r.x, r.y, r.w, r.h)

    def check(self) -> None:
        """Whether the fb server is still there (a restart: reopened, mapped, repainted)."""
        try:
            self.fb.stats()
        except (PeerDied, Timeout, RemoteError, L4Error, TimeoutError) as e:
            print(f"nitpicker: fb: {e}", flush=True)

    def usage(self) -> dict[str, Any]:
        return {"direct": self.direct, "lost_frames": self.lost,
                **(self.planes.usage() if self.planes is not None else {"planes": False})}
