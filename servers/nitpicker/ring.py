"""The flip ring: a client posts page flips in shared memory; Nitpicker paints them without a call.

    # in the page after a session's pixels (buffer() answers its offset: `ring`)
    POSTED   word 0   the client's count of flips posted (it writes it, after the entry)
    DONE     word 1   Nitpicker's count of those it handled (painted, or refused as invalid)
    IDLE     word 2   1 while Nitpicker may be blocked in the kernel: the client calls `kick`
    RELEASED word 3   Nitpicker's count of flips whose part of the buffer nothing reads any
                      more: DONE once a flip was composed (its pixels are copied), one less
                      while the display scans the buffer out directly (planes.py): the part
                      flip k shows is read until flip k+1 replaced it
    SCANOUT  word 4   1 while the display scans this session's buffer out directly: what
                      the client writes there is on the screen without Nitpicker, so a
                      `submit` needs no entry (nothing is to be copied). Nitpicker sets it
                      after the paint that made it so and clears it, then fences, before
                      any paint that may compose the buffer again; the client writes its
                      pixels, fences, then reads it: either it sees 0 and posts, or that
                      paint sees its pixels (Dekker's pattern again)
    entry k  (k = 1, 2, ...) at ENTRIES + ((k - 1) % SLOTS) * ENTRY: view, x, y, w, h:
             a flip of `view` to buffer offset (x, y) (w = h = 0), or, with view 0, a
             refresh of the buffer rectangle (x, y, w, h) (`submit`: refresh and continue)
  The event ring, the other way (input to the client without its `events` call):
    EV_WRITTEN word 5   Nitpicker's count of events written
    EV_READ    word 6   the client's count of events read (it writes it after reading them)
    EV_OVER    word 7   1 while more events wait in Nitpicker's queue (the ring was full):
                        the client takes them with the `events` call, which clears it
    event n  (n = 0, 1, ...) at EVENTS + (n % EV_SLOTS) * EVENT: kind, view, code, value,
             x, y, time_us (an `events` answer's entry)
  Nitpicker writes an event into the ring only while its queue is empty (so the ring's
  events are always older than the queue's) and there is room (EV_WRITTEN - EV_READ below
  EV_SLOTS; a client's EV_READ out of that range counts as full: its events then go
  through the queue, nobody else's are touched); the entry, then EV_WRITTEN; it triggers
  the session's IRQ after the batch, as before. The client reads EV_WRITTEN, the entries
  up to it, writes EV_READ, then reads EV_OVER.

Why: a `flip` call costs a kernel round trip (four ZeroMQ hops, two syscalls in Nitpicker:
the answer and the next wait) per frame, more than the frame's two copies together
(launcher/bench_gui.py). With the ring a frame costs no system call while both sides are
busy: the client posts frame n while Nitpicker paints frame n-1, Nitpicker finds n posted
when that paint ends (it looks for LINGER_S before it blocks). A call is made only to
wake a Nitpicker that is waiting (`kick`, when IDLE is set: answered at once, the ring
drained right after) and, as a fallback, to wait for a paint that takes longer than the
client's poll (`info`: every other request of a session is taken only after its ring is
drained). The waits poll (`poll`): yields first, then short naps.

Contract. Client: posts at most SLOTS flips beyond DONE; writes the entry, then POSTED
(x86 keeps stores in order), then `fence()`, then reads IDLE and kicks if it is set.
Nitpicker: sets IDLE, `fence()`, then reads every ring's POSTED before it blocks; it clears
IDLE once it is awake. Either the client sees IDLE or Nitpicker sees the entry (Dekker's
pattern; the fence is a locked instruction, a full barrier on x86). A wake-up lost anyway
is found at Nitpicker's next message or tick (POLL_MS), or at the client's next flip,
whose wait for DONE ends in a call: late, never lost.
Every word the client writes is a claim: Nitpicker reads POSTED and each entry once into
its own variables, checks them (POSTED - DONE in 0..SLOTS, the view one of the session's,
the offsets in range) and only then paints; an invalid entry is refused (counted), a
POSTED out of range is taken as DONE (nothing to paint). Each handled flip is one frame
painted: none is merged away (`shown` counts them, as for calls).

Nitpicker's side: `Rings` (the pages, pinned) and `RingDrain` (painting what they hold,
part of server.Nitpicker; its serve loop says when).

Ownership: the client's drawing thread writes POSTED and the entries; Nitpicker's main
thread writes DONE, IDLE, RELEASED and SCANOUT. Each side reaches the page through its own pins (pinned.py),
so a vanished page is a PageFault there: the client then takes the call path, which
reopens the session.
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Callable

from kernel.abi import PAGE_SIZE
from kernel.user.rpc import RpcError
from kernel.user.vm import VM, PageFault

from .pinned import Pins
from .views import Rect, Session, View, check_geometry

POSTED, DONE, IDLE, RELEASED, SCANOUT = 0, 8, 16, 24, 32     # byte offsets of the words
EV_WRITTEN, EV_READ, EV_OVER = 40, 48, 56
ENTRIES, ENTRY, SLOTS = 64, 40, 4
EVENTS, EVENT, EV_SLOTS = 256, 56, 64
SIZE = PAGE_SIZE
_WORD = struct.Struct("<Q")
_ENTRY = struct.Struct("<qqqqq")         # view, x, y, w, h
_EVENT = struct.Struct("<7q")            # kind, view, code, value, x, y, time_us
_FENCE = threading.Lock()
LINGER_S = 0.001                         # Nitpicker: how long it looks for the next flip
STREAMING_S = 0.05                       # ... if a ring gave it one this recently
SPIN_S = 0.002                           # a poll yields this long, then it naps
NAP_S = 0.00005                          # between looks (the host's timer rounds it up)

assert ENTRIES + SLOTS * ENTRY <= EVENTS and EVENTS + EV_SLOTS * EVENT <= SIZE


def fence() -> None:
    """A full memory barrier between our last store and our next load (a lock's atomic
    exchange: a locked instruction on x86)."""
    with _FENCE:
        pass


def poll(ready: Callable[[], bool], seconds: float) -> bool:
    """Whether ready() came true within `seconds`: looked at between yields for SPIN_S,
    then between naps of NAP_S, so a poll on a busy host leaves the CPU to the one it
    waits for (each side's wait is the other's work)."""
    start = time.perf_counter()
    while True:
        if ready():
            return True
        now = time.perf_counter() - start
        if now > seconds:
            return False
        time.sleep(0 if now < SPIN_S else NAP_S)


def word(mv: memoryview, at: int) -> int:
    return int(_WORD.unpack_from(mv, at)[0])


def set_word(mv: memoryview, at: int, value: int) -> None:
    _WORD.pack_into(mv, at, value)


def entry(mv: memoryview, k: int) -> tuple[int, int, int, int, int]:
    """The k-th entry posted (k >= 1): (view, x, y, w, h), as the client left it."""
    v, x, y, w, h = _ENTRY.unpack_from(mv, ENTRIES + ((k - 1) % SLOTS) * ENTRY)
    return int(v), int(x), int(y), int(w), int(h)


def set_entry(mv: memoryview, k: int, view: int, x: int, y: int, w: int = 0,
              h: int = 0) -> None:
    _ENTRY.pack_into(mv, ENTRIES + ((k - 1) % SLOTS) * ENTRY, view, x, y, w, h)


def event(mv: memoryview, n: int) -> list[int]:
    """Event n (n >= 0) of the event ring: [kind, view, code, value, x, y, time_us]."""
    return [int(v) for v in _EVENT.unpack_from(mv, EVENTS + (n % EV_SLOTS) * EVENT)]


def write_event(mv: memoryview, n: int, ev: list[int]) -> bool:
    """Nitpicker's side: event `ev` as event n (our count of those written, never read
    back) if the ring has room by the client's EV_READ (a claim: out of range counts as
    full); False: the caller queues it."""
    if not 0 <= n - word(mv, EV_READ) < EV_SLOTS:
        return False
    try:
        _EVENT.pack_into(mv, EVENTS + (n % EV_SLOTS) * EVENT, *ev)
    except struct.error:
        return False                              # a value beyond 64 bits: the queue's
    set_word(mv, EV_WRITTEN, n + 1)
    return True


def read_events(mv: memoryview, read: int) -> tuple[list[list[int]], int, bool]:
    """The client's side: the events written since its count `read`, its new count, and
    EV_OVER (more wait in Nitpicker's queue). Stores EV_READ before it reads EV_OVER."""
    written = word(mv, EV_WRITTEN)
    if not 0 <= written - read <= EV_SLOTS:
        read = max(0, written - EV_SLOTS)         # a new ring (Nitpicker restarted): resync
    out = [event(mv, n) for n in range(read, written)]
    set_word(mv, EV_READ, written)
    fence()
    return out, written, bool(word(mv, EV_OVER))


class Rings:
    """Nitpicker's side: every session's ring page, pinned writable (our own Pins: never
    held while the screen's are). Main thread only."""

    def __init__(self, vm: VM) -> None:
        self.pins = Pins(vm)
        self.pages: dict[int, int] = {}           # ring vaddr -> DONE (our count, never read back)
        self.written: dict[int, int] = {}         # ring vaddr -> EV_WRITTEN (ours, likewise)

    def add(self, vaddr: int) -> None:
        self.pins.add(vaddr, SIZE, writable=True)
        self.pages[vaddr] = 0
        self.written[vaddr] = 0

    def remove(self, vaddr: int) -> None:
        self.pins.remove(vaddr)
        self.pages.pop(vaddr, None)
        self.written.pop(vaddr, None)

    def post_event(self, vaddr: int, ev: list[int]) -> bool:
        """Event `ev` into the ring at `vaddr` if there is room (the client's EV_READ, a
        claim, in range); False: the caller queues it."""
        n = self.written.get(vaddr)
        if n is None:
            return False
        try:
            with self.pins.held():
                mv = self._page(vaddr)
                if mv is None:
                    return False
                if not write_event(mv, n, ev):
                    return False
        except PageFault:
            return False
        self.written[vaddr] = n + 1
        return True

    def over(self, vaddr: int, flag: bool) -> None:
        """EV_OVER: whether events wait in the session's queue (the `events` call)."""
        self._set(vaddr, EV_OVER, int(flag))

    def _set(self, vaddr: int, at: int, value: int) -> None:
        """Word `at` of the ring page at `vaddr`, if the page is still there."""
        try:
            with self.pins.held():
                mv = self._page(vaddr)
                if mv is not None:
                    set_word(mv, at, value)
        except PageFault:
            pass

    def _page(self, vaddr: int) -> memoryview | None:
        try:
            return self.pins.view(vaddr)
        except PageFault:
            return None                           # gone (moe took it): no ring there

    def take(self, vaddr: int) -> list[tuple[int, int, int, int, int, int]]:
        """The entries posted since the last take, checked for count: [(k, view, x, y, w,
        h)] (the rest are still claims: the caller checks them)."""
        done = self.pages.get(vaddr)
        if done is None:
            return []
        try:
            with self.pins.held():
                mv = self._page(vaddr)
                if mv is None:
                    return []
                posted = word(mv, POSTED)             # read once: the client may change it
                if not 0 <= posted - done <= SLOTS:
                    self.pages[vaddr] = posted        # nonsense: nothing to paint, resync
                    set_word(mv, DONE, posted)
                    return []
                return [(k, *entry(mv, k)) for k in range(done + 1, posted + 1)]
        except PageFault:
            return []

    def finish(self, vaddr: int, k: int, released: int | None = None) -> None:
        """Flip k is handled (painted or refused); the flips up to `released` (default k)
        showed parts of the buffer nothing reads any more: the client may draw there."""
        if vaddr not in self.pages:
            return
        self.pages[vaddr] = k
        try:
            with self.pins.held():
                mv = self._page(vaddr)
                if mv is not None:
                    if released is not None and released > word(mv, RELEASED):
                        set_word(mv, RELEASED, released)
                    set_word(mv, DONE, k)
        except PageFault:
            pass

    def scanout(self, vaddr: int, flag: bool) -> None:
        """Tell the client of this ring whether its buffer is scanned out directly."""
        self._set(vaddr, SCANOUT, int(flag))

    def pending(self) -> list[int]:
        """The rings with flips posted and not taken yet."""
        if not self.pages:
            return []
        try:
            with self.pins.held():
                out = []
                for vaddr, done in self.pages.items():
                    mv = self._page(vaddr)
                    if mv is not None and word(mv, POSTED) != done:
                        out.append(vaddr)
                return out
        except PageFault:
            return []

    def idle(self, flag: bool) -> None:
        """Say in every ring whether we may block in the kernel (then fence: see above)."""
        if not self.pages:
            return
        try:
            with self.pins.held():
                for vaddr in self.pages:
                    mv = self._page(vaddr)
                    if mv is not None:
                        set_word(mv, IDLE, int(flag))
        except PageFault:
            pass
        fence()


class RingDrain:
    """Nitpicker's painting of what the rings hold (a part of server.Nitpicker, main thread)."""
    rings: Rings
    sessions: dict[int, Session]
    streamed: float                  # when a ring last gave us a frame (time.monotonic)
    repaint: Callable[..., bool]             # server.Nitpicker's: paint and show
    _dirty: Callable[..., list[Rect]]        # ... the screen rectangles of a refresh
    shown: Callable[[Session], None]         # ... and count a frame of a session shown
    scanned_view: View | None                # the view the display scans out directly

    def drain(self, s: Session) -> int:
        """Paint the flips and refreshes session `s` posted in its ring, one frame each;
        how many."""
        b = s.buffer
        if b is None:
            return 0
        got = self.rings.take(b.ring)
        for k, vid, x, y, w, h in got:
            released = None                      # a refused entry frees nothing
            v = s.views.get(vid)
            try:
                if vid == 0:                     # a refresh (submit through the ring)
                    rects = self._dirty(s, x, y, w, h)
                elif v is None or w or h:
                    raise RpcError("NO_VIEW", f"session {s.name!r} has no view {vid}")
                else:
                    check_geometry(*v.rect, x, y)
                    v.buf_x, v.buf_y = x, y
                    s.refreshes += 1
                    rects = [v.rect]
            except RpcError:
                if vid != 0:                     # (_dirty counts its own refusals)
                    s.refused += 1               # a bad entry: skipped, counted
            else:
                if self.repaint(rects, content=True):
                    self.shown(s)
                released = k if v is None or vid == 0 else self._released(s, v, k)
            self.rings.finish(b.ring, k, released)   # the client may draw there again
        if got:
            self.streamed = time.monotonic()
        return len(got)

    def _released(self, s: Session, v: View, k: int) -> int | None:
        """How far the flips of `s` are released after flip k of view `v` was shown: all
        of them if the display scans none of the session's buffer out directly; all but k
        if it scans `v` (flip k's part is read now, the one before no longer); else none
        more (another view of `s` is scanned: its last flip's part is still read)."""
        scanned = self.scanned_view
        if scanned is None or scanned.session is not s:
            return k
        return k - 1 if scanned is v else None

    def drain_all(self) -> bool:
        """Paint what every ring holds (each session's in turn); whether any was there."""
        todo = self.rings.pending()
        for s in [s for s in self.sessions.values()
                  if s.buffer is not None and s.buffer.ring in todo]:
            self.drain(s)
        return bool(todo)

    def linger(self) -> bool:
        """Shortly after a ring's frame (within STREAMING_S), look for the next one for
        LINGER_S before blocking: a client a little slower than our paint posts it then,
        and needs no `kick`."""
        if time.monotonic() - self.streamed > STREAMING_S:
            return False
        return poll(lambda: bool(self.rings.pending()), LINGER_S)
