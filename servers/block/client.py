"""The block client library: a session with the `block` server over a shared buffer.

    bc = BlockClient(l4)                     # capability "block", a 1 MiB buffer from moe
    bc.write(sector, data); bc.read(sector, count) -> bytes; bc.flush()
    bc.buffer_write(off, data); bc.buffer_read(off, n)            # the shared buffer itself
    bc.submit([[tag, WRITE, sector, count, offset], ...]); bc.collect(min=1) -> [[tag, st]]
    bc.exchange(reqs, min=1) -> [[tag, st]]                        # both in one call
    bc.stream(op, sector, sectors, chunk=128, depth=8) -> statuses   # pipelined, many in flight
    bc.reserve(rate, sectors, deadline_ms); bc.unreserve()        # real-time disk scheduling
    bc.info(); bc.close()

A reservation's answer carries the session's reserved gate (servers/block/protocol.py):
from then on submit, collect and exchange go through it — to the server's thread for
reserved sessions — and the rest through the block capability; unreserve, a new session
(after a restart) or close drop it.

The buffer is a moe dataspace of this task (capability "moe": the task's image entry needs
`memory = "..."`), attached in our address space and passed to the server by capability at
open; data moves only through it (the disk DMAs into and out of its pages).

Restart: when the server dies during a call, the call raises PeerDied (the request may or
may not have been done; what `collect` acknowledged before is on the disk). The session is
then marked lost and the next call opens a new one first (waiting up to REOPEN_S for the
restarted server), so the caller just retries what was not acknowledged. A server that
answers NO_SESSION (restarted between our calls) is handled the same way, transparently.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

from hal.driver import free_slots
from kernel.abi import MemRights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error, PeerDied
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM
from servers.moe.client import MoeSession

from .protocol import BLOCK, FLUSH, READ, SECTOR, WRITE

REOPEN_S = 20.0
CALL_MS = 30_000
IO_OPS = ("submit", "collect", "exchange")   # through the reserved gate once there is one
RT_GATE_SLOTS = 3700            # the reserved gate lands in the first free slot from here

__all__ = ["BlockClient", "BlockError", "READ", "WRITE", "FLUSH", "SECTOR", "PeerDied"]


class BlockError(IOError):
    """A request completed with an I/O error status."""


class BlockClient:
    def __init__(self, l4: L4, cap: int | None = None, buffer: int = 1 << 20,
                 vm: VM | None = None, recv_slot: int = 3600) -> None:
        self.l4 = l4
        self.cap = l4.caps["block"] if cap is None else cap
        self.moe = MoeSession(l4, l4.caps["moe"], recv_slot=recv_slot, timeout=CALL_MS)
        self.ds = self.moe.alloc(buffer)
        self.addr = self.moe.attach(self.ds.slot, MemRights.RW)
        self.vm = vm if vm is not None else VM(l4)
        self._own_vm = vm is None
        self.stub: Any = BLOCK.client(l4, self.cap, timeout=CALL_MS)
        self.io: Any = self.stub        # submit/collect/exchange: the reserved gate once reserved
        self.rt_gate: int | None = None  # our slot of the reserved gate (reserve)
        self.session: Any = None
        self.reopens = 0                 # sessions opened after the first (server restarts)
        self.peer_died = 0               # calls that raised PeerDied
        self._tags = itertools.count(1)
        self.inflight: set[int] = set()
        self.open()

    # -- the session ------------------------------------------------------------------
    def open(self) -> Any:
        self._forget_gate()                 # a new session has no reservation yet
        self.session = self.stub.open(_items=[map_cap(self.ds.slot, 0x5)])
        self.inflight.clear()
        return self.session

    def _forget_gate(self) -> None:
        if self.rt_gate is not None:
            try:
                self.l4.cap_delete(self.rt_gate)
            except L4Error:
                pass
        self.io, self.rt_gate = self.stub, None

    def _stub(self, name: str) -> Any:
        """The stub for op `name`: IO_OPS through the reserved gate while there is one."""
        return self.io if name in IO_OPS else self.stub

    def _reopen(self) -> None:
        deadline = time.monotonic() + REOPEN_S
        while True:
            try:
                self.open()
                self.reopens += 1
                return
            except (L4Error, RemoteFailure):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        if self.session is None:
            self._reopen()
        try:
            return getattr(self._stub(name), name)(*args, **kw)
        except RemoteFailure as e:
            if e.error != "NO_SESSION":
                raise
            self._reopen()                      # a new session: no reserved gate yet
            return getattr(self._stub(name), name)(*args, **kw)
        except PeerDied:
            self.session = None
            self.peer_died += 1
            raise

    # -- the buffer -------------------------------------------------------------------
    @property
    def buffer_size(self) -> int:
        return self.ds.size

    def buffer_write(self, offset: int, data: bytes) -> None:
        self.vm.write(self.addr + offset, data)

    def buffer_read(self, offset: int, n: int) -> bytes:
        return self.vm.read(self.addr + offset, n)

    # -- requests ----------------------------------------------------------------------
    def tag(self) -> int:
        return next(self._tags) & 0x7FFF_FFFF

    def submit(self, reqs: list[list[int]]) -> int:
        n = self._call("submit", reqs)
        self.inflight.update(r[0] for r in reqs)
        return int(n)

    def collect(self, min: int = 1, wait_ms: int = 5000) -> list[list[int]]:
        done = self._call("collect", min, wait_ms)
        for tag, _ in done:
            self.inflight.discard(tag)
        return [list(d) for d in done]

    def exchange(self, reqs: list[list[int]], min: int = 1, wait_ms: int = 5000) -> list[list[int]]:
        """Submit `reqs` and collect completions in one call (one IPC)."""
        accepted, done = self._call("exchange", reqs, min, wait_ms)
        self.inflight.update(r[0] for r in reqs)
        for tag, _ in done:
            self.inflight.discard(tag)
        return [list(d) for d in done]

    def _one(self, op: int, sector: int, count: int, offset: int) -> None:
        tag = self.tag()
        self.submit([[tag, op, sector, count, offset]])
        while True:
            for t, status in self.collect(1):
                if t == tag:
                    if status:
                        raise BlockError(f"request {tag} ({op}) failed: status {status}")
                    return

    def write(self, sector: int, data: bytes, offset: int = 0) -> None:
        if len(data) % SECTOR:
            raise ValueError("data must be whole sectors")
        self.buffer_write(offset, data)
        self._one(WRITE, sector, len(data) // SECTOR, offset)

    def read(self, sector: int, count: int, offset: int = 0) -> bytes:
        self._one(READ, sector, count, offset)
        return self.buffer_read(offset, count * SECTOR)

    def flush(self) -> None:
        self._one(FLUSH, 0, 0, 0)

    def stream(self, op: int, sector: int, sectors: int, chunk: int = 128,
               depth: int = 8) -> list[int]:
        """`sectors` from `sector` in requests of `chunk` sectors, `depth` in flight, each
        using its own slice of the buffer (depth * chunk sectors must fit). Answers the
        statuses in request order."""
        if depth * chunk * SECTOR > self.buffer_size:
            raise ValueError("depth * chunk sectors do not fit in the buffer")
        starts = list(range(sector, sector + sectors, chunk))
        order: list[int] = []
        status: dict[int, int] = {}
        slot_of: dict[int, int] = {}           # tag in flight -> its buffer slice
        free = list(range(depth))
        nxt = 0
        while nxt < len(starts) or slot_of:
            batch = []
            while free and nxt < len(starts):
                s, tag = free.pop(), self.tag()
                slot_of[tag] = s
                order.append(tag)
                n = min(chunk, sector + sectors - starts[nxt])
                batch.append([tag, op, starts[nxt], n, s * chunk * SECTOR])
                nxt += 1
            # Wait for half of what is in flight, not for one: each round trip then carries
            # many completions and refills many slots (the disk completes in bursts).
            for tag, st in self.exchange(batch, max(1, len(slot_of) // 2)):
                if tag in slot_of:
                    status[tag] = st
                    free.append(slot_of.pop(tag))
        return [status[t] for t in order]

    def info(self) -> dict[str, Any]:
        return dict(self._call("info"))

    def reserve(self, rate: float, sectors: int, deadline_ms: int) -> dict[str, Any]:
        """Reserve `rate` requests/s of up to `sectors` sectors, each served within
        deadline_ms (servers/block/rtsched.py); RemoteFailure REFUSED past the capacity."""
        slot = free_slots(self.l4, 1, RT_GATE_SLOTS)
        got = dict(self._call("reserve", float(rate), sectors, deadline_ms, _window=(slot, 1)))
        self._forget_gate()
        self.rt_gate, self.io = slot, BLOCK.client(self.l4, slot, timeout=CALL_MS)
        return got

    def unreserve(self) -> None:
        self._call("unreserve")
        self._forget_gate()

    def close(self) -> None:
        try:
            if self.session is not None:
                self.stub.release()
        except (L4Error, RemoteFailure):
            pass
        self.session = None
        try:
            self.moe.detach(self.addr)
            self.moe.release(self.ds.slot)
        except (L4Error, RemoteFailure):
            pass
        if self._own_vm:
            self.vm.close()
