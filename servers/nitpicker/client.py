"""The Nitpicker client: a session, its buffer in shared memory, views; all recreated after a restart.

    gui = GuiSession(l4, on_reopen=redraw)   # capability "gui" (and "moe": `memory` in the image)
    gui.buffer(w, h)                         # the pixel buffer, attached in our address space
    gui.put(x, y, w, h, pixels); gui.fill(x, y, w, h, (r, g, b)); gui.refresh(x, y, w, h)
    gui.submit(x, y, w, h)                   # refresh and continue (posted in the flip ring)
    gui.ready()                              # the last submit shown: a frame may be drawn now
    v.flip(buf_x, buf_y)                     # show the buffer from there (a page flip), continue
                                             # once the part the flip before showed is free
    v = gui.view("title"); v.geometry(x, y, w, h, buf_x=0, buf_y=0); v.stack("front")
    v.title("..."); v.destroy()
    for ev in gui.wait(timeout_ms=500): ...  # Event(kind, view, code, value, x, y, time_us)
    gui.close()

The buffer is a dataspace Nitpicker allocated (paid from our session's quota) and sent us by
capability; we attach it with our own moe session and write it through our VM: pixels never
go into a message. `put` writes through the buffer's pinned runs (pinned.py: walked once,
kept while our address space does not change), so a whole frame is one copy per run of
contiguous frames, not a TLB walk per page. `flip` posts in the session's flip ring (the
page after the pixels, ring.py) and makes no call while Nitpicker is busy painting; it
calls `kick` when Nitpicker is waiting, `info` when the last paint takes longer than
WAIT_S, the `flip` op itself when there is no ring. Events: Nitpicker writes them into
the same page's event ring and triggers our session's IRQ object (attached to the thread
that opened the session); `wait` waits for it and reads them there, without a call. Only
when the ring was full (its EV_OVER word), before there is a buffer, and after a wait that
timed out (to notice a restarted Nitpicker) does it make the `events` call.

Restart: when a call finds Nitpicker gone (PeerDied, Timeout) or without our session
(NO_SESSION), the library opens a new session, asks for a buffer of the same size, recreates
every view with its title, geometry and stacking (back to front), calls `on_reopen(gui)`
(the new buffer is black: redraw and refresh there), and makes the call again. Our `View`
objects stay valid; their server ids change. Other errors reach the caller as
`RemoteFailure` (`.error`: INVALID, QUOTA, NO_VIEW, DENIED...).
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

from kernel.abi import SLOT_TASK, SLOT_THREAD, MemRights, Proto, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error, NoCapability, PeerDied, Timeout
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM, PageFault
from servers.moe.client import MoeSession

from . import ring
from .pinned import Pins
from .protocol import BYTES_PER_PIXEL, NITPICKER

IRQ_SLOT = 3700                  # where the session's IRQ object lands
BUFFER_SLOT = 3701               # where the buffer's dataspace capability lands
IRQ_LABEL = 0x6E70
CALL_MS = 10_000
RETRY_S = 30.0
WAIT_S = 0.02                    # how long a flip waits for the last paint before asking


class Event(NamedTuple):
    kind: int
    view: int
    code: int
    value: int
    x: int
    y: int
    time_us: int


def rgb(r: int, g: int, b: int) -> bytes:
    return bytes((b, g, r, 0))


class View:
    """One of our views; what we set is remembered, to recreate it after a restart."""

    def __init__(self, gui: "GuiSession", title: str) -> None:
        self.gui = gui
        self.title_text = title
        self.geom: tuple[int, int, int, int, int, int] | None = None
        self.id = gui._call(lambda: gui.stub.view_create(title))
        self.alive = True

    def geometry(self, x: int, y: int, w: int, h: int, buf_x: int = 0, buf_y: int = 0) -> None:
        self.gui._call(lambda: self.gui.stub.view_geometry(self.id, x, y, w, h, buf_x, buf_y))
        self.geom = (x, y, w, h, buf_x, buf_y)

    def stack(self, where: str = "front", neighbour: "View | None" = None) -> None:
        self.gui._call(lambda: self.gui.stub.view_stack(
            self.id, where, None if neighbour is None else neighbour.id))
        order = self.gui.views
        order.remove(self)
        if where == "front":
            order.append(self)
        elif where == "back":
            order.insert(0, self)
        else:
            assert neighbour is not None
            i = order.index(neighbour)
            order.insert(i + 1 if where == "above" else i, self)

    def flip(self, buf_x: int, buf_y: int) -> None:
        """Show the buffer from (buf_x, buf_y), posted in the flip ring (no call while
        Nitpicker is painting): back once the part of the buffer the flip before this one
        showed is free (composed: copied to the screen; scanned out directly: replaced by
        this flip), like the `flip` call's answer, so that part may be drawn again."""
        if self.geom is not None:
            self.geom = (*self.geom[:4], buf_x, buf_y)
        if not self.gui._post(self, buf_x, buf_y):
            self.gui._call(lambda: self.gui.stub.flip(self.id, buf_x, buf_y))

    def title(self, title: str) -> None:
        self.gui._call(lambda: self.gui.stub.view_title(self.id, title))
        self.title_text = title

    def destroy(self) -> None:
        self.gui._call(lambda: self.gui.stub.view_destroy(self.id))
        self.gui.views.remove(self)
        self.alive = False


class GuiSession:
    def __init__(self, l4: L4, cap: str = "gui", vm: VM | None = None,
                 moe: MoeSession | None = None,
                 on_reopen: Callable[["GuiSession"], None] | None = None) -> None:
        self.l4 = l4
        self.stub: Any = NITPICKER.client(l4, l4.caps[cap], timeout=CALL_MS)
        self.vm = vm or VM(l4)
        self.pins = Pins(self.vm)            # the buffer, for put
        self.moe = moe or MoeSession(l4, l4.caps["moe"], recv_slot=3710, timeout=CALL_MS)
        self.on_reopen = on_reopen
        self.views: list[View] = []          # back to front
        self.size: tuple[int, int] | None = None
        self.addr = 0
        self.ring = 0                        # our flip ring's page (ring.py), 0: none
        self.posted = 0                      # flips we posted there
        self.kicks = self.waits = 0          # calls the ring still needed: wake-ups, waits
        self.unposted = 0                    # submits that needed no entry (ring.py SCANOUT)
        self.ev_read = 0                     # events taken from our event ring (ring.py)
        self.event_calls = 0                 # `events` calls made (the ring's overflow, ...)
        self.reopened = 0
        self.info: Any = None
        self._open()

    # -- the session ---------------------------------------------------------------------
    def _open(self) -> None:
        for slot in (IRQ_SLOT,):
            try:
                self.l4.cap_delete(slot)
            except NoCapability:
                pass
        self.info = self.stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                                   _window=(IRQ_SLOT, 1))
        self.l4.irq_attach(IRQ_SLOT, SLOT_THREAD, IRQ_LABEL)

    @property
    def width(self) -> int:
        return int(self.info["width"])

    @property
    def height(self) -> int:
        return int(self.info["height"])

    def _attach(self, w: int, h: int) -> None:
        if self.addr:
            self.pins.remove(self.addr)
            self.pins.remove(self.ring)
            self.ring = self.posted = 0
            try:
                self.moe.detach(self.addr)
            except (RemoteFailure, L4Error):
                pass                         # the dataspace died with an old Nitpicker
            self.addr = 0
        try:
            self.l4.cap_delete(BUFFER_SLOT)
        except NoCapability:
            pass
        self.binfo = self.stub.buffer(w, h, _window=(BUFFER_SLOT, 1))
        self.addr = self.moe.attach(BUFFER_SLOT, MemRights.RW)
        self.vm.flush()
        self.pins.add(self.addr, w * h * BYTES_PER_PIXEL, writable=True)
        if isinstance(self.binfo.get("ring"), int):
            self.ring = self.addr + self.binfo["ring"]
            self.pins.add(self.ring, ring.SIZE, writable=True)
            self.ev_read = 0
        self.size = (w, h)

    def buffer(self, w: int, h: int) -> None:
        self._call(lambda: self._attach(w, h))

    def _reopen(self) -> None:
        self._open()
        if self.size is not None:
            self._attach(*self.size)
        for v in self.views:                # back to front: each new view goes in front
            v.id = self.stub.view_create(v.title_text)
            if v.geom is not None:
                self.stub.view_geometry(v.id, *v.geom)
        self.reopened += 1
        if self.on_reopen is not None:
            self.on_reopen(self)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """`fn()`, reopening everything while Nitpicker restarts (see the module's doc)."""
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
                raise TimeoutError("Nitpicker did not come back")
            time.sleep(0.1)
            try:
                self._reopen()
            except (PeerDied, Timeout, RemoteFailure, L4Error):
                continue

    # -- pixels ----------------------------------------------------------------------------
    def put(self, x: int, y: int, w: int, h: int, pixels: bytes | bytearray | memoryview) -> None:
        """Write w*h XRGB8888 pixels (row after row) into the buffer at (x, y)."""
        assert self.size is not None, "no buffer: call buffer(w, h) first"
        bw, bh = self.size
        if w < 0 or h < 0 or x < 0 or y < 0 or x + w > bw or y + h > bh:
            raise ValueError(f"rectangle {x},{y} {w}x{h} outside the {bw}x{bh} buffer")
        n = w * BYTES_PER_PIXEL
        if len(pixels) != n * h:
            raise ValueError(f"{len(pixels)} bytes for {w}x{h} pixels")
        stride = bw * BYTES_PER_PIXEL
        mv = memoryview(pixels).cast("B")
        with self.pins.held():               # PageFault: the buffer is gone (Nitpicker died)
            if x == 0 and w == bw:
                self.pins.write_from(self.addr + y * stride, mv)
                return
            for row in range(h):
                self.pins.write_from(self.addr + (y + row) * stride + x * BYTES_PER_PIXEL,
                                     mv[row * n:(row + 1) * n])

    def _post(self, v: View | None, x: int, y: int, w: int = 0, h: int = 0) -> bool:
        """A flip of `v` (or, with v None, a refresh of the buffer rectangle x, y, w, h)
        through the ring (ring.py's contract), back once the entry before it was released;
        False if there is no ring to take it (none, full, gone: the caller makes the call
        instead, which reopens)."""
        if not self.ring:
            return False
        k = self.posted + 1
        if not self._wait(ring.DONE, k - ring.SLOTS):     # a slot free
            return False
        try:
            with self.pins.held():
                mv = self.pins.view(self.ring)
                if k - 1 - ring.word(mv, ring.DONE) >= ring.SLOTS:
                    return False
                ring.set_entry(mv, k, 0 if v is None else v.id, x, y, w, h)
                ring.set_word(mv, ring.POSTED, k)
            self.posted = k
            ring.fence()
            with self.pins.held():
                mv = self.pins.view(self.ring)
                idle = ring.word(mv, ring.IDLE)
        except PageFault:
            self.ring = 0                    # gone with an old Nitpicker: calls from now on
            return False
        if idle:
            self.kicks += 1
            self._call(lambda: self.stub.kick())
        self._shown(k - 1)
        return True

    def _wait(self, at: int, k: int) -> bool:
        """Poll until ring word `at` reaches k (for up to WAIT_S); False if it did not."""
        def done() -> bool:
            if not self.ring:
                return True
            try:
                with self.pins.held():
                    return ring.word(self.pins.view(self.ring), at) >= k
            except PageFault:
                self.ring = 0
                return True
        return k <= 0 or (ring.poll(done, WAIT_S) and bool(self.ring))

    def _shown(self, k: int) -> None:
        """Wait until the part of the buffer flip k showed is released (ring.py RELEASED:
        painted, or no longer scanned out directly): polled for up to WAIT_S, then a call,
        which Nitpicker takes once its ring is drained (and flip k+1 shown)."""
        def done() -> bool:
            if not self.ring:
                return False
            try:
                with self.pins.held():
                    return ring.word(self.pins.view(self.ring), ring.RELEASED) >= k
            except PageFault:
                self.ring = 0                # gone: the call below finds out why
                return False
        if ring.poll(lambda: done() or not self.ring, WAIT_S) and self.ring:
            return
        self.waits += 1
        self._call(lambda: self.stub.info())

    def fill(self, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
        self.put(x, y, w, h, rgb(*colour) * (w * h))

    def refresh(self, x: int = 0, y: int = 0, w: int | None = None, h: int | None = None) -> None:
        assert self.size is not None, "no buffer: call buffer(w, h) first"
        w = self.size[0] if w is None else w
        h = self.size[1] if h is None else h
        self._call(lambda: self.stub.refresh(x, y, w, h))

    def submit(self, x: int = 0, y: int = 0, w: int | None = None, h: int | None = None) -> None:
        """Like refresh, but back once the submit before this one is shown (refresh and
        continue): posted in the flip ring (no call while Nitpicker keeps up), the `submit`
        op if there is no ring; nothing at all while the display scans our buffer out
        directly (the pixels are on the screen: `unposted` counts those). Any call of ours
        is taken after what we posted."""
        assert self.size is not None, "no buffer: call buffer(w, h) first"
        w = self.size[0] if w is None else w
        h = self.size[1] if h is None else h
        if self._scanned_out():
            self.unposted += 1               # on the screen already: nothing to copy
            return
        if not self._post(None, x, y, w, h):
            self._call(lambda: self.stub.submit(x, y, w, h))

    def ready(self) -> bool:
        """Whether the buffer is free for a new frame without waiting: every submit posted
        so far is shown (ring.py RELEASED), or there is no ring to ask (the calls then
        order). A client with a deadline draws only then and skips the frame otherwise,
        instead of waiting for the display (`submit` waits up to WAIT_S, then calls)."""
        if not self.ring or self.posted == 0:
            return True
        try:
            with self.pins.held():
                return ring.word(self.pins.view(self.ring), ring.RELEASED) >= self.posted
        except PageFault:
            self.ring = 0
            return True

    def _scanned_out(self) -> bool:
        """Whether the display scans our buffer out directly (ring.py SCANOUT), read after
        a fence that orders our pixels before it."""
        if not self.ring:
            return False
        ring.fence()
        try:
            with self.pins.held():
                return bool(ring.word(self.pins.view(self.ring), ring.SCANOUT))
        except PageFault:
            self.ring = 0
            return False

    # -- views and events ------------------------------------------------------------------------
    def view(self, title: str = "") -> View:
        v = View(self, title)
        self.views.append(v)
        return v

    def events(self, call: bool = False) -> list[Event]:
        """The events Nitpicker has for us: those in our event ring (ring.py: no call), then,
        when it says more wait in its queue, there is no ring, or `call`, the `events`
        call's (in that order: the queue's are the newer)."""
        got: list[list[int]] = []
        if self.ring:
            try:
                with self.pins.held():
                    got, self.ev_read, over = ring.read_events(self.pins.view(self.ring),
                                                               self.ev_read)
            except PageFault:
                self.ring = 0                # gone with an old Nitpicker: the call reopens
                over = True
            call = call or over
        if call or not self.ring:
            self.event_calls += 1
            got += self._call(lambda: self.stub.events())
        return [Event(*e) for e in got]

    def wait(self, timeout_ms: float = 500) -> list[Event]:
        """The next events, waiting up to `timeout_ms` for Nitpicker's IRQ; [] if none came.
        Must run on the thread that opened the session (the IRQ is attached to it)."""
        got = self.events()
        if got:
            return got
        try:
            msg = self.l4.wait(timeout=timeout_ms)
        except Timeout:
            return self.events(call=True)   # also notices a restarted Nitpicker
        if msg.proto != Proto.IRQ:
            return []
        return self.events()

    def stats(self) -> dict[str, Any]:
        return dict(self._call(lambda: self.stub.info()))

    def close(self) -> None:
        try:
            self.stub.end()
        except (PeerDied, Timeout):
            pass
