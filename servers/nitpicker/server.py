"""Nitpicker, the secure GUI multiplexer (paper §4.3): sessions, views, labels, X-ray, focus.

    [[task]]
    name = "nitpicker"
    run = "servers.nitpicker.server:main"
    args = ["3=terminal", "4=clock:2M", "kill=3"]
    provides = ["nitpicker"]
    memory = "16M"                    # a moe session: the sessions' buffers are paid from it
    [task.caps]
    fb = { service = "fb", label = 1 }         # Nitpicker is an fb client: the whole screen
    input = { service = "input", label = 1 }   # ... and the only input client

Arguments: the policy, one entry per client label, "N=NAME" or "N=NAME:QUOTA" (QUOTA:
bytes of buffer, K/M suffixes, default DEFAULT_QUOTA). NAME is what Nitpicker draws on
every view of that session; the client never chooses or changes it (its label is the
kernel's word). "kill=N,M" names the labels whose task kill mode may end (by default:
none). A label without an entry is refused (DENIED).

Design (Feske & Helmuth, ACSAC 2005):
- Each session's pixels are a moe dataspace Nitpicker allocates (its size bounded by the
  session's quota), attached in Nitpicker's own address space and handed to the client by
  capability; the client draws there and calls `refresh`. Nitpicker composes the screen
  (compose.py) straight into the scan-out memory when the fb server maps it to Nitpicker
  (its policy's `direct=`; output.py), else into its own copy that it sends to its fb
  session. Buffers and screen are pinned views (pinned.py): a frame is one slice copy per
  row run. A client never touches the screen or another buffer.
- Refresh and continue: `refresh` answers once the pixels are on the screen; `submit` and
  `flip` answer at once and Nitpicker paints right after the answer, before it takes its
  next request. So a client's next call is its back-pressure (taken only once the last
  frame is shown) and a double-buffering client (`flip` between two halves of its buffer)
  draws its next frame while Nitpicker shows the last one. Every request is painted, none
  is merged away: a session's `shown` counts the refreshes whose pixels reached the screen.
- The flip ring (ring.py): a page after each buffer where the client posts flips without
  a call. The loop paints what the rings hold before it looks at the kernel (without
  waiting, at least every STREAM_MS while rings keep it busy), looks for more a little
  (LINGER_S) after a ring's frame, and before it blocks sets every ring's IDLE word, so a
  client posting then wakes it (`kick`). Each request of a session first drains that
  session's ring: a call is taken after the flips posted before it.
- Input comes from Nitpicker's input session (its ring IRQ arrives in this serve loop as
  Proto.IRQ; routing.py routes it). Two secure keys never reach a client: XRAY_KEY
  toggles X-ray mode, KILL_KEY arms kill mode (the next click ends the clicked session's task, if the policy lists its
  label: Nitpicker asks the launcher through its `launcher` capability). A click focuses
  the session of the view under the pointer; keys go to the focused session only; pointer
  events to the view under the pointer, or to the view a held button was pressed on.
- A dead client (its task capability, sent at open, is gone) is noticed by a sweep every
  POLL_MS and at every open: its views vanish (their screen area repainted), its buffer is
  freed (moe takes it back), its IRQ object destroyed.
- Restart: the launcher restarts this task; the new incarnation has no sessions, its moe
  session is new (the old buffers died with the old one). Clients get PEER_DIED, then
  NO_SESSION, and open again (client.py recreates buffer and views).

Ownership: everything belongs to the main thread (the serve loop); there is no other.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from kernel.abi import PAGE_SIZE, MemRights, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error, NoCapability, PeerDied, Timeout
from kernel.user.rpc import Call, RemoteError, Reply, RpcError
from kernel.user.vm import VM
from servers.input.client import InputSession
from servers.moe.client import MoeSession

from .compose import LABEL_H, Screen, union_rects
from .output import Output, ScreenGone
from .pinned import Pins
from .policy import Policy, parse_policy
from .protocol import MAX_SIDE, MAX_VIEWS, NITPICKER, STACK
from .ring import SIZE as RING_SIZE
from .ring import RingDrain, Rings, fence
from .routing import Routing
from .views import Buffer, Rect, Session, Stack, View, check_geometry, check_title

POLL_MS = 500
STREAM_MS = 16                   # while rings keep us painting: a look at the kernel this often
SLOTS = range(2000, 3000)        # our capability slots: watches, IRQs (a free one is found)
MOE_SLOTS = 3000                 # where moe's answers (dataspaces) land
INPUT_VADDR = 0x23_0000_0000


class Nitpicker(Routing, RingDrain):
    """NITPICKER's implementation, the input router and the screen. Main thread only."""

    def __init__(self, l4: L4, policy: Policy) -> None:
        self.l4 = l4
        self.policy = policy
        self.vm = VM(l4)
        self.moe = MoeSession(l4, l4.caps["moe"], recv_slot=MOE_SLOTS, timeout=10_000)
        self.pins = Pins(self.vm)
        self.rings = Rings(self.vm)
        self.kicked = False                      # a `kick`: drain the rings after the answer
        self.streamed = 0.0                      # when a ring last gave us a frame
        self.out = Output(l4, self.vm, self.pins, on_reopen=lambda: self.repaint_all())
        self.later: list[tuple[Session, list[Rect]]] = []   # submit/flip: painted after the answer
        self.scanned_view: View | None = None    # the last repaint: a direct scan-out of it
        self.scanout_session: Session | None = None   # ... whose ring says SCANOUT
        self.screen = Screen(self.out.width, self.out.height, self.pins.read_into,
                             pixels=self.out.own)
        self.input = InputSession(l4, "input", vaddr=INPUT_VADDR, vm=self.vm) \
            if "input" in l4.caps else None
        self.sessions: dict[int, Session] = {}
        self.stack = Stack()
        self.focused: Session | None = None
        self.xray = False
        self.kill_mode = False
        self.pointer = (0, 0)
        self.moved = False
        self.grab: View | None = None            # the view a held button was pressed on
        self.buttons: set[int] = set()
        self.swallow: set[int] = set()           # releases of presses no client saw
        self.next_slot = SLOTS.start
        self.recv_slot = self._slot()
        self.rewindow = False
        self.denied = self.opened = self.dropped = self.kills = 0
        self.refused_kills = 0
        self.repaint_all()

    def _slot(self) -> int:
        """A free slot of ours, searched round SLOTS from where the last one was found."""
        for _ in SLOTS:
            slot = self.next_slot
            self.next_slot = slot + 1 if slot + 1 < SLOTS.stop else SLOTS.start
            try:
                self.l4.cap_inspect(slot)
            except NoCapability:
                return slot
        raise RpcError("NO_MEMORY", f"no free capability slot in {SLOTS.start}..{SLOTS.stop - 1}")

    # -- painting -------------------------------------------------------------------------
    def repaint(self, rects: list[Rect], content: bool = False) -> bool:
        """Paint the rectangles and show them; False if the screen was gone (fb died).
        `content`: only a client's pixels changed there (a refresh or flip), nothing of
        ours, so a direct scan-out that stays as it is paints nothing."""
        todo = union_rects(rects)
        if not todo:
            return True
        planes = self.out.planes
        plan = None
        cand = None if planes is None else planes.candidate(self.stack, self.xray)
        if cand is None or cand.session is not self.scanout_session:
            self._scanout(None)          # first: a client told so copies no more (ring.py)
        try:
            with self.out.frame() as mv, self.screen.into(mv):
                if planes is not None:           # direct scan-out? (planes.py)
                    plan = planes.plan(self.stack, self.xray)
                    if plan is not None:         # only the bar is ours to paint
                        todo = [] if content and planes.bar == plan.bar else \
                            [r.intersect(plan.bar) for r in todo]
                    elif planes.active is not None:     # leaving: the base frame is stale
                        todo = [Rect(0, 0, self.screen.width, self.screen.height)]
                done = [p for p in (self.screen.paint(r, self.stack, self.focused, self.xray)
                                    for r in todo) if not p.empty]
                if planes is not None and plan is not None:
                    planes.show(plan)
                elif planes is not None:
                    planes.off()
                    planes.composed += 1
        except ScreenGone as e:
            print(f"nitpicker: a frame found no screen ({e}); waiting for fb", flush=True)
            return False
        self.out.show(done)
        self.scanned_view = None if plan is None else plan.view
        if plan is not None:
            self._scanout(plan.view.session)
        elif self.scanout_session is not None:   # (its buffer's runs: composed after all)
            self._scanout(None)
        return True

    def _scanout(self, s: Session | None) -> None:
        """Say in the rings which session's buffer the display scans out (ring.py SCANOUT):
        set after the paint that made it so, cleared (and fenced) before a paint that may
        compose that buffer again, so a submit that read it set needs no copy."""
        old, self.scanout_session = self.scanout_session, s
        if old is s:
            return
        for x, flag in ((old, False), (s, True)):
            if x is not None and x.buffer is not None:
                self.rings.scanout(x.buffer.ring, flag)
        fence()

    def shown(self, s: Session) -> None:
        """A frame of `s` reached the screen (by the last repaint)."""
        s.shown += 1
        s.scanned += self.scanned_view is not None

    def paint_later(self) -> None:
        """What submit and flip left for after their answers: painted as one frame."""
        later, self.later = self.later, []
        if self.repaint([r for _, rects in later for r in rects], content=True):
            for s, _ in later:
                self.shown(s)

    def repaint_all(self) -> None:
        if hasattr(self, "screen"):
            self.repaint([Rect(0, 0, self.screen.width, self.screen.height)])

    # -- sessions -------------------------------------------------------------------------
    def session(self, call: Call) -> Session:
        """The caller's session, its ring drained first: every request of a session is
        handled after the flips it posted (so any call waits for them, like a call after
        `flip`)."""
        s = self.sessions.get(call.label)
        if s is None:
            raise RpcError("NO_SESSION", f"label {call.label} has no open session (open first)")
        self.drain(s)
        return s

    def open(self, call: Call) -> Reply:
        watch = call.items[0][1]
        rule = self.policy.get(call.label)
        try:
            if rule is None:
                self.denied += 1
                raise RpcError("DENIED", f"the policy gives label {call.label} no session "
                                         f"(labels: {sorted(self.policy)})")
            what = self.l4.cap_inspect(watch)
            if what.get("type") != "task" or not what.get("alive"):
                raise RpcError("INVALID", f"open needs the client's own task capability, got "
                                          f"a {what.get('type')}")
            irq = self._slot()
            try:
                self.l4.create_irq(dst=irq)
            except L4Error as e:
                raise RpcError("NO_MEMORY", f"no IRQ object for the session: {e}") from None
        except BaseException:
            self._delete(watch)
            raise
        self.recv_slot, self.rewindow = self._slot(), True     # the watch stays where it landed
        self._drop(call.label, "replaced")
        s = Session(call.label, rule[0], rule[1], watch, irq)
        self.sessions[call.label] = s
        self.opened += 1
        self.sweep()
        return Reply({"label": call.label, "name": s.name, "quota": s.quota,
                      "width": self.screen.width, "height": self.screen.height},
                     [map_cap(irq, Rights.INVOKE | Rights.WRITE)])

    def _delete(self, slot: int) -> None:
        try:
            self.l4.cap_delete(slot)
        except L4Error:
            pass

    def _drop(self, label: int, why: str) -> None:
        """Forget a session: its views vanish from the screen, its buffer goes back to moe."""
        s = self.sessions.pop(label, None)
        if s is None:
            return
        dirty = [v.rect for v in s.views.values()]
        for v in s.views.values():
            self.stack.remove(v)
            if self.grab is v:
                self.grab = None
        s.views.clear()
        if self.focused is s:
            self.focused = None
        self._free_buffer(s)
        self._delete(s.irq)
        self._delete(s.watch)
        self.dropped += 1
        print(f"nitpicker: session {s.name!r} (label {label}) {why}: its views and buffer "
              f"are gone", flush=True)
        self.repaint(dirty)

    def _free_buffer(self, s: Session) -> None:
        b, s.buffer = s.buffer, None
        if b is None:
            return
        if self.out.planes is not None and self.out.planes.active is not None:
            self.repaint_all()                   # the display may be reading it: compose first
        self.pins.remove(b.addr)
        self.rings.remove(b.ring)
        self.later = [(o, r) for o, r in self.later if o is not s]
        for fn in (lambda: self.moe.detach(b.addr), lambda: self.moe.release(b.slot)):
            try:
                fn()
            except (RemoteError, L4Error) as e:
                print(f"nitpicker: freeing the buffer of {s.name!r}: {e}", file=sys.stderr,
                      flush=True)
        self._delete(b.slot)

    def alive(self, s: Session) -> bool:
        try:
            return bool(self.l4.cap_inspect(s.watch).get("alive", False))
        except NoCapability:
            return False

    def sweep(self) -> None:
        for s in [s for s in self.sessions.values() if not self.alive(s)]:
            self._drop(s.label, "ended (its client is gone)")

    def end(self, call: Call) -> None:
        self._drop(call.label, "ended by its client")

    # -- the buffer -----------------------------------------------------------------------
    def buffer(self, call: Call, w: int, h: int) -> Reply:
        s = self.session(call)
        for name, v in (("w", w), ("h", h)):
            if not 1 <= v <= MAX_SIDE:
                raise RpcError("INVALID", f"buffer {name}={v}: must be in 1..{MAX_SIDE}")
        size = w * h * 4
        if size > s.quota:
            raise RpcError("QUOTA", f"a {w}x{h} buffer needs {size} bytes; the quota of "
                                    f"session {s.name!r} is {s.quota}")
        self._free_buffer(s)
        self.later = [(o, r) for o, r in self.later if o is not s]
        ring = -(-size // PAGE_SIZE) * PAGE_SIZE     # the flip ring's page, after the pixels
        try:                                         # (ours: not counted in the quota)
            ds = self.moe.alloc(ring + RING_SIZE)
        except RemoteError as e:
            raise RpcError("NO_MEMORY", f"moe refused {size} bytes: {e.reason}") from None
        try:
            addr = self.moe.attach(ds.slot, MemRights.RW)
        except RemoteError as e:
            self.moe.release(ds.slot)
            raise RpcError("NO_MEMORY", f"attaching the buffer: {e.reason}") from None
        s.buffer = Buffer(ds.slot, addr, w, h, addr + ring)
        self.pins.add(addr, size)
        self.rings.add(addr + ring)
        self.repaint([v.rect for v in s.views.values()])
        return Reply({"width": w, "height": h, "stride": w * 4, "size": size, "ring": ring},
                     [map_cap(ds.slot, Rights.INVOKE | Rights.GRANT)])

    def _dirty(self, s: Session, x: int, y: int, w: int, h: int) -> list[Rect]:
        """The screen rectangles a refresh of buffer rectangle (x, y, w, h) repaints."""
        if w < 1 or h < 1 or s.buffer is None:
            s.refused += 1
            raise RpcError("INVALID", f"refresh {x},{y} {w}x{h} of session {s.name!r}: "
                           + ("it has no buffer" if s.buffer is None else "empty rectangle"))
        s.refreshes += 1
        dirty = Rect(x, y, w, h).intersect(Rect(0, 0, s.buffer.width, s.buffer.height))
        if dirty.empty:
            return []
        # the buffer rectangle, in screen coordinates, clipped to each view
        return [Rect(v.rect.x - v.buf_x + dirty.x, v.rect.y - v.buf_y + dirty.y, dirty.w,
                     dirty.h).intersect(v.rect) for v in s.views.values()]

    def refresh(self, call: Call, x: int, y: int, w: int, h: int) -> None:
        s = self.session(call)
        if self.repaint(self._dirty(s, x, y, w, h), content=True):
            self.shown(s)

    def submit(self, call: Call, x: int, y: int, w: int, h: int) -> None:
        s = self.session(call)
        self.later.append((s, self._dirty(s, x, y, w, h)))

    def flip(self, call: Call, view: int, buf_x: int, buf_y: int) -> None:
        s = self.session(call)
        v = s.view(view)
        check_geometry(*v.rect, buf_x, buf_y)
        if s.buffer is None:
            s.refused += 1
            raise RpcError("INVALID", f"flip of session {s.name!r}: it has no buffer")
        v.buf_x, v.buf_y = buf_x, buf_y
        s.refreshes += 1
        self.later.append((s, [v.rect]))

    def kick(self, call: Call) -> None:
        if call.label not in self.sessions:
            raise RpcError("NO_SESSION", f"label {call.label} has no open session (open first)")
        self.kicked = True                   # answered now, its ring drained right after

    # -- views ------------------------------------------------------------------------------
    def view_create(self, call: Call, title: str) -> int:
        s = self.session(call)
        title = check_title(title)
        if len(s.views) >= MAX_VIEWS:
            raise RpcError("QUOTA", f"session {s.name!r} has {MAX_VIEWS} views already")
        v = View(s.next_view, s, title)
        s.next_view += 1
        s.views[v.id] = v
        self.stack.add(v)
        return v.id

    def view_destroy(self, call: Call, view: int) -> None:
        s = self.session(call)
        v = s.view(view)
        del s.views[view]
        self.stack.remove(v)
        if self.grab is v:
            self.grab = None
        self.repaint([v.rect])

    def view_geometry(self, call: Call, view: int, x: int, y: int, w: int, h: int,
                      buf_x: int, buf_y: int) -> None:
        s = self.session(call)
        v = s.view(view)
        new = check_geometry(x, y, w, h, buf_x, buf_y)
        old = v.rect
        v.rect, v.buf_x, v.buf_y = new, buf_x, buf_y
        self.repaint([old, new])

    def view_stack(self, call: Call, view: int, where: str, neighbour: int | None) -> None:
        s = self.session(call)
        v = s.view(view)
        if where not in STACK:
            raise RpcError("INVALID", f"stack where={where!r}: one of {', '.join(STACK)}")
        other = None
        if where in ("above", "below"):
            if neighbour is None or neighbour == view:
                raise RpcError("INVALID", f"stack {where} needs another view of session "
                                          f"{s.name!r} as neighbour")
            other = s.view(neighbour)
        self.stack.place(v, where, other)
        self.repaint([v.rect])

    def view_title(self, call: Call, view: int, title: str) -> None:
        s = self.session(call)
        v = s.view(view)
        v.title = check_title(title)
        self.repaint([Rect(v.rect.x, v.rect.y, v.rect.w, min(v.rect.h, LABEL_H))])

    # -- events and info ----------------------------------------------------------------------
    def events(self, call: Call) -> list[list[int]]:
        s = self.session(call)
        out = list(s.events)
        s.events.clear()
        if s.buffer is not None:
            self.rings.over(s.buffer.ring, False)     # the ring's turn again (ring.py)
        return out

    def info(self, call: Call) -> dict[str, Any]:
        s = self.session(call)
        b = s.buffer
        return {"views": sorted(s.views), "buffer": None if b is None else [b.width, b.height],
                "focused": self.focused is s, "xray": self.xray, "dropped": s.dropped,
                "refreshes": s.refreshes, "shown": s.shown, "scanned": s.scanned,
                "scanout": self.scanned_view is not None and self.scanned_view.session is s,
                "refused": s.refused,
                "name": s.name}

    def usage(self, call: Call) -> dict[str, Any]:
        self.sweep()
        per = {str(lb): {"name": s.name, "views": [[v.id, *v.rect, v.title] for v in
                                                   s.views.values()],
                         "buffer": None if s.buffer is None else [s.buffer.width,
                                                                   s.buffer.height],
                         "queued": len(s.events), "dropped": s.dropped}
               for lb, s in self.sessions.items()}
        return {"sessions": per, "focused": None if self.focused is None else self.focused.label,
                "xray": self.xray, "kill_mode": self.kill_mode,
                "stack": [[v.session.label, v.id] for v in self.stack.views],
                "opened": self.opened, "dropped": self.dropped, "denied": self.denied,
                "kills": self.kills, "refused_kills": self.refused_kills,
                "painted": self.screen.painted, "pointer": list(self.pointer),
                **self.out.usage()}

    # -- the loop ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Every POLL_MS: dead clients, and whether fb and input are still there."""
        self.sweep()
        self.out.check()                             # an fb restart: reopened, repainted
        if self.input is not None:
            self.input._check_alive()      # the client library's own check: stats, reopen

    def serve(self) -> None:
        due = time.monotonic() + POLL_MS / 1000      # kept across returns: a client that
        looked = time.monotonic()                    # submits all the time delays no tick
        while True:
            self.rewindow = self.kicked = False
            busy = self.drain_all() or self.linger()
            if busy and time.monotonic() - looked < STREAM_MS / 1000:
                continue                             # rings keep us painting
            if busy:
                timeout = 0                          # a look at the kernel, no wait
            else:
                self.rings.idle(True)                # then a last look (ring.py's contract)
                if self.rings.pending():
                    self.rings.idle(False)
                    continue
                timeout = POLL_MS
            NITPICKER.serve(self.l4, self, window=(self.recv_slot, 1), timeout=timeout,
                            until=lambda: self.rewindow or self.kicked or bool(self.later)
                            or time.monotonic() >= due)
            looked = time.monotonic()
            if timeout:
                self.rings.idle(False)
            if self.later:                           # answered already: paint now
                self.paint_later()
            if time.monotonic() >= due:
                self.tick()
                due = time.monotonic() + POLL_MS / 1000


def main(l4: L4, *policy: str) -> int:
    try:
        rules = parse_policy(policy)
    except ValueError as e:
        print(f"nitpicker: {e}", file=sys.stderr, flush=True)
        return 2
    for need in ("fb", "moe"):
        if need not in l4.caps:
            print(f"nitpicker: no '{need}' capability (the image must route fb and give "
                  f"nitpicker `memory`)", file=sys.stderr, flush=True)
            return 2
    try:
        srv = Nitpicker(l4, rules)
    except (PeerDied, Timeout, RemoteError) as e:
        print(f"nitpicker: cannot start: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"nitpicker: {srv.screen.width}x{srv.screen.height}, sessions for "
          f"{ {lb: n for lb, (n, _) in sorted(rules.items())} }, input "
          f"{'on' if srv.input else 'off'}", flush=True)
    srv.serve()
    return 0
