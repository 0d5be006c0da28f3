"""The fb client: a session's mode, its shared pixel buffer, refresh; reopened after a restart.

    fb = FbSession(l4)                     # capability "fb"; opens the session
    fb.mode.width, fb.mode.height          # the viewport (FB.mode's reply)
    fb.put(x, y, w, h, pixels)             # XRGB8888 bytes (B, G, R, X) into the buffer
    fb.fill(x, y, w, h, (r, g, b))
    fb.refresh(x, y, w, h)                 # to the screen (RemoteFailure INVALID if bad)
    fb.map_screen(vaddr) -> {width, height, stride, size, order} | None
                                           # the scan-out memory itself at vaddr, if the
                                           # policy names us (direct=); None if not
    fb.close()

The buffer is mapped at `vaddr` of our address space and reached through our VM: pixels
never go into a message. `on_reopen(session)`, if given, runs after the session was opened
again (the server restarted, or dropped us): the new buffer is black, so a client redraws
there. Errors other than a restarted server reach the caller (`RemoteFailure` with `.error`
DENIED, INVALID, NO_MEMORY...).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from kernel.abi import SLOT_TASK, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import PeerDied, Timeout
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM, window

from .protocol import BYTES_PER_PIXEL, FB

FB_VADDR = 0x20_0000_0000          # where the pixel buffer lands in the client
CALL_MS = 10_000
RETRY_S = 30.0


def rgb(r: int, g: int, b: int) -> bytes:
    return bytes((b, g, r, 0))


class FbSession:
    def __init__(self, l4: L4, cap: str = "fb", vaddr: int = FB_VADDR, vm: VM | None = None,
                 on_reopen: Callable[["FbSession"], None] | None = None) -> None:
        self.l4 = l4
        self.stub: Any = FB.client(l4, l4.caps[cap], timeout=CALL_MS)
        self.vaddr = vaddr
        self.vm = vm or VM(l4)
        self.on_reopen = on_reopen
        self.reopened = 0
        self.mode: Any = None
        self.open()

    def open(self) -> None:
        m = self.stub.mode()
        self.mode = self.stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                                   _window=window(self.vaddr, m["order"]))
        self.vm.flush()

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """`fn()`, reopening the session (and calling on_reopen) while the server restarts."""
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return fn()
            except (PeerDied, Timeout):
                pass
            except RemoteFailure as e:
                if e.error != "NO_SESSION":
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError("the fb server did not come back")
            time.sleep(0.1)
            try:
                self.open()
            except (PeerDied, Timeout, RemoteFailure):
                continue
            self.reopened += 1
            if self.on_reopen is not None:
                self.on_reopen(self)

    def _check(self, x: int, y: int, w: int, h: int) -> None:
        mw, mh = self.mode["width"], self.mode["height"]
        if w < 0 or h < 0 or x < 0 or y < 0 or x + w > mw or y + h > mh:
            raise ValueError(f"rectangle {x},{y} {w}x{h} outside the "
                             f"{self.mode['width']}x{self.mode['height']} buffer")

    def put(self, x: int, y: int, w: int, h: int, pixels: bytes | bytearray | memoryview) -> None:
        """Write w*h pixels (row after row) into the buffer at (x, y)."""
        self._check(x, y, w, h)
        stride, n = self.mode["stride"], w * BYTES_PER_PIXEL
        if len(pixels) != n * h:
            raise ValueError(f"{len(pixels)} bytes for {w}x{h} pixels")
        if x == 0 and w == self.mode["width"]:
            self.vm.write(self.vaddr + y * stride, pixels)
            return
        for row in range(h):
            self.vm.write(self.vaddr + (y + row) * stride + x * BYTES_PER_PIXEL,
                          pixels[row * n:(row + 1) * n])

    def fill(self, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
        self.put(x, y, w, h, rgb(*colour) * (w * h))

    def read(self, x: int, y: int) -> tuple[int, int, int]:
        b, g, r, _ = self.vm.read(self.vaddr + y * self.mode["stride"] + x * BYTES_PER_PIXEL, 4)
        return r, g, b

    def refresh(self, x: int, y: int, w: int, h: int) -> None:
        self._retry(lambda: self.stub.refresh(x, y, w, h))

    def map_screen(self, vaddr: int) -> dict[str, Any] | None:
        """Map the scan-out memory at `vaddr` (aligned to its order), if the policy lets us:
        the reply's mode, or None (no direct mapping for our label). After a reopen the old
        mapping is gone (the server took it back, or died): map again."""
        order = int(self.mode.get("screen_order", 0))
        if not order:
            return None
        try:
            got = dict(self.stub.screen(_window=window(vaddr, order)))
        except RemoteFailure as e:
            if e.error == "DENIED":
                return None
            raise
        self.vm.flush()
        return got

    def stats(self) -> dict[str, Any]:
        return dict(self._retry(lambda: self.stub.stats()))

    def close(self) -> None:
        try:
            self.stub.end()
        except (PeerDied, Timeout):
            pass
