"""The input device server: the l4input driver in this task, its events streamed to sessions.

    run = "servers.input.server:main"
    args = ["1", "3"]                   # the client labels that may read input

Arguments: the policy, the labels allowed a session (a label not listed is refused, DENIED,
counted). The task needs `devices = ["input0"]` (its io policy) and a sigma0 capability
(DDEKit's memory: the sessions' rings).

Design:
- The driver (servers/dde_linux/drivers/l4input.py), loaded through the DDE/Linux glue,
  reports Linux input events from its interrupt thread; this server is an `input_handler`
  (Linux's evdev in our place) connected to every input device the driver registers.
- Each frame (events up to SYN_REPORT) is time-stamped and appended, whole, to every
  session's ring in shared memory (protocol.py's layout: a page of DDEKit memory mapped
  into the client), and the session's IRQ object is triggered once per frame: the client's
  thread gets one IRQ message and drains the ring. A full ring drops the frame for that
  session only (counted in its `dropped` and the ring's header); other sessions and the
  device are not held up, and the interrupt thread never waits for a client.
- A dead client's session is dropped by the death watch (servers/fb/sessions.py): its ring
  is freed (unmapped from the client) and its IRQ object destroyed.
- Restart: a new incarnation has no sessions (clients see their IRQ never fire again and
  their next call fail with PEER_DIED / NO_SESSION; servers/input/client.py reopens).

Threads: the serve loop is the task's main thread; frames come on the driver's interrupt
thread. `Sessions.lock` guards the table between them, and the interrupt thread writes the
rings and triggers the IRQs while holding it, so a session is dropped (ring freed, IRQ
destroyed) only between two frames. A ring is written by that thread only and read by the
client. Lock order: the table's lock, then DDEKit's service lock (kcall), never the reverse.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from kernel.abi import MemRights, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error
from kernel.user.rpc import Call, Reply, RpcError
from kernel.user.vm import map_mem
from servers.dde_linux import input as linput
from servers.dde_linux import kernel
from servers.ddekit import env as _env
from servers.ddekit import memory as _mem
from servers.fb.sessions import Sessions

from .protocol import (DROPPED_AT, ENTRIES, EVENT, EVENTS, HEAD_AT, HEADER, INPUT, MAGIC,
                       RING_ORDER, TAIL_AT, U64)

DRIVER = "servers.dde_linux.drivers.l4input"


@dataclass
class Session:
    label: int
    va: int                    # the ring, a DDEKit page (mapped into the client)
    ring: memoryview           # its bytes, writable; written by the interrupt thread only
    irq: int                   # our slot of the session's IRQ object
    head: int = 0              # events written (the ring's head word is a copy)
    delivered: int = 0
    dropped: int = 0


class InputServer:
    """INPUT's implementation and the input handler; see the module's "Threads"."""

    def __init__(self, l4: L4, labels: set[int]) -> None:
        self.sessions: Sessions[Session] = Sessions(l4, {lb: True for lb in labels}, self._free,
                                                    "input")
        self.events = 0          # events the driver reported to us
        self.frames = 0

    def _make(self, call: Call) -> Session:
        env = _env.get()
        try:
            va = _mem.large_malloc(1 << RING_ORDER)
        except _mem.OutOfMemory as e:
            raise RpcError("NO_MEMORY", str(e)) from None
        slot = env.slots(1)
        try:
            env.kcall(lambda svc: svc.create_irq(dst=slot))
        except L4Error as e:
            env.cap_delete(slot)
            _mem.large_free(va)
            raise RpcError("NO_MEMORY", f"no IRQ object: {e}") from None
        ring = _mem.view(va, 1 << RING_ORDER, writable=True)
        ring[:EVENTS] = bytes(EVENTS)
        HEADER.pack_into(ring, 0, MAGIC, ENTRIES, 0, 0, 0)
        return Session(call.label, va, ring, slot)

    def _free(self, s: Session) -> None:
        s.ring.release()
        _env.get().cap_delete(s.irq)          # the only capability: the IRQ object goes
        _mem.large_free(s.va)

    # -- the input handler: connect at the device's registration, frames on its interrupt thread
    def connect(self, handler: linput.input_handler, dev: linput.input_dev) -> linput.input_handle:
        handle = linput.input_handle(dev, handler, "input-server")
        linput.input_open_device(handle)
        print(f"input: reading {dev.name} ({dev.phys})", flush=True)
        return handle

    def on_frame(self, handle: linput.input_handle, frame: list[tuple[int, int, int]]) -> None:
        now = int(time.monotonic() * 1e6)
        self.events += len(frame)
        self.frames += 1
        # Under the table's lock: a session being dropped (its ring freed, its IRQ object
        # destroyed) is either still whole here or already gone from the table.
        with self.sessions.lock:
            for s in self.sessions.sessions.values():
                if self._write(s, frame, now):
                    self._wake(s)

    @staticmethod
    def _wake(s: Session) -> None:
        try:
            _env.get().kcall(lambda svc: svc.irq_trigger(s.irq))
        except L4Error:
            pass                               # the kernel refused: nothing more to do

    @staticmethod
    def _write(s: Session, frame: list[tuple[int, int, int]], now: int) -> bool:
        """Append the frame whole (True: the reader is to be woken), or drop it: the ring is
        full, or its tail (the client's word) is past the head."""
        ring = s.ring
        tail = U64.unpack_from(ring, TAIL_AT)[0]
        if tail > s.head or s.head - tail + len(frame) > ENTRIES:
            s.dropped += len(frame)
            U64.pack_into(ring, DROPPED_AT, s.dropped)
            return bool(tail <= s.head)        # full: wake it anyway, it is behind
        for t, c, v in frame:
            EVENT.pack_into(ring, EVENTS + (s.head % ENTRIES) * EVENT.size, t, c,
                            max(-2 ** 31, min(v, 2 ** 31 - 1)), now)
            s.head += 1
        U64.pack_into(ring, HEAD_AT, s.head)     # after the events: a reader sees them whole
        s.delivered += len(frame)
        return True

    # -- INPUT ops (main thread) -----------------------------------------------------------
    def open(self, call: Call) -> Reply:
        s = self.sessions.open(call, lambda _rule: self._make(call))
        return Reply({"entries": ENTRIES, "size": 1 << RING_ORDER, "order": RING_ORDER,
                      "label": call.label},
                     [map_mem(s.va, RING_ORDER, MemRights.RW),
                      map_cap(s.irq, Rights.INVOKE | Rights.WRITE)])

    def end(self, call: Call) -> None:
        self.sessions.remove(call.label)

    def stats(self, call: Call) -> dict[str, Any]:
        s = self.sessions.get(call)
        return {"delivered": s.delivered, "dropped": s.dropped, "session": True}

    def usage(self, call: Call) -> dict[str, Any]:
        self.sessions.sweep()
        with self.sessions.lock:
            per = {str(lb): {"delivered": s.delivered, "dropped": s.dropped}
                   for lb, s in self.sessions.sessions.items()}
        return {"sessions": per, "events": self.events, "frames": self.frames,
                **self.sessions.counters()}


def main(l4: L4, *policy: str) -> int:
    bad = [p for p in policy if not p.isdigit() or int(p) < 1]
    if bad:
        print(f"input: policy entries {bad}: expected client labels >= 1", file=sys.stderr,
              flush=True)
        return 2
    kernel.boot(l4)
    srv = InputServer(l4, {int(p) for p in policy})
    handler = linput.input_handler("input-server", srv.connect, events=srv.on_frame)
    linput.input_register_handler(handler)
    ret = kernel.load(DRIVER)
    if ret or not linput.input_devices():
        print(f"input: no input device (driver load: {ret}; is it in this task's devices?)",
              file=sys.stderr, flush=True)
        kernel.shutdown()
        return 2
    print(f"input: serving labels {sorted(int(p) for p in policy)}", flush=True)
    srv.sessions.serve(INPUT, srv)
    return 0

