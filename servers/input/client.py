"""The input client: a session's event ring in shared memory and its IRQ; reopened after a restart.

    inp = InputSession(l4)                 # capability "input"; opens the session
    for ev in inp.next(timeout_ms=1000):   # Event(type, code, value, time_us), in order
        ...
    inp.close()

`next` drains what the ring holds; if it is empty it waits (on the calling thread, which
must be the one the session was opened on: the IRQ object is attached to it) for the
server's IRQ, then drains. The ring is read through our VM: events never go into a message.
While the server is away (restarted), `next` notices on a timeout (a `stats` call fails)
and opens the session again; events of the outage are lost.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from kernel.abi import SLOT_TASK, SLOT_THREAD, Proto, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error, NoCapability, PeerDied, Timeout
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM, PageFault, window

from .protocol import (ENTRIES, EVENT, EVENTS, HEAD_AT, HEADER, INPUT, MAGIC, RING_ORDER,
                       TAIL_AT, U64)

INPUT_VADDR = 0x21_0000_0000         # where the ring lands in the client
IRQ_SLOT = 3600                      # where the session's IRQ object lands
IRQ_LABEL = 0x1A9B
CALL_MS = 10_000


class Event(NamedTuple):
    type: int
    code: int
    value: int
    time_us: int


class InputSession:
    def __init__(self, l4: L4, cap: str = "input", vaddr: int = INPUT_VADDR,
                 irq_slot: int = IRQ_SLOT, vm: VM | None = None) -> None:
        self.l4 = l4
        self.stub: Any = INPUT.client(l4, l4.caps[cap], timeout=CALL_MS)
        self.vaddr, self.irq_slot = vaddr, irq_slot
        self.vm = vm or VM(l4)
        self.tail = 0
        self.reopened = 0
        self.open()

    def open(self) -> None:
        try:
            self.l4.cap_delete(self.irq_slot)       # a former session's IRQ object
        except NoCapability:
            pass
        self.info = self.stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                                   _window=window(self.vaddr, RING_ORDER, self.irq_slot, 1))
        self.vm.flush()
        magic, entries, head, _, _ = HEADER.unpack(self.vm.read(self.vaddr, HEADER.size))
        if magic != MAGIC or entries != ENTRIES:
            raise RuntimeError(f"input ring: magic {magic:#x}, {entries} entries: not our layout")
        self.tail = head
        self.l4.irq_attach(self.irq_slot, SLOT_THREAD, IRQ_LABEL)

    def drain(self) -> list[Event]:
        """The events the ring holds now, oldest first; the ring is ours to refill after."""
        head = U64.unpack(self.vm.read(self.vaddr + HEAD_AT, 8))[0]
        out = []
        while self.tail < head:
            at = EVENTS + (self.tail % ENTRIES) * EVENT.size
            out.append(Event(*EVENT.unpack(self.vm.read(self.vaddr + at, EVENT.size))))
            self.tail += 1
        if out:
            self.vm.write(self.vaddr + TAIL_AT, U64.pack(self.tail))
        return out

    def next(self, timeout_ms: float = 1000) -> list[Event]:
        """The next events (waiting up to `timeout_ms` for one); [] if none came. A server
        that died took its ring with it (our next read faults): reopen, answer []."""
        try:
            got = self.drain()
            if got:
                return got
            try:
                msg = self.l4.wait(timeout=timeout_ms)
            except Timeout:
                self._check_alive()
                return self.drain()
            if msg.proto != Proto.IRQ:
                return []                           # not ours: nothing to read
            return self.drain()
        except PageFault:
            self._reopen()
            return []

    def _reopen(self) -> None:
        try:
            self.open()
            self.reopened += 1
        except (L4Error, RemoteFailure):
            pass                                    # not back yet: the next call retries

    def _check_alive(self) -> None:
        try:
            if self.stub.stats()["session"]:
                return
        except (PeerDied, Timeout):
            pass
        except RemoteFailure:
            pass
        self._reopen()

    def stats(self) -> dict[str, Any]:
        return dict(self.stub.stats())

    def close(self) -> None:
        try:
            self.stub.end()
        except (PeerDied, Timeout):
            pass
