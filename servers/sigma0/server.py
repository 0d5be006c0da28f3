"""sigma0: owns all RAM at boot and hands out frames, each frame to one client at a time.

The kernel maps every frame 1:1 into sigma0's address space (virtual page n = frame n), so
sigma0 never touches memory itself: it only sends map items. Clients are told apart by the
label of the gate they call (the launcher gives each client its own gate).

`main(l4, reserve)`: the first `reserve` bytes of RAM (rounded up to frames) are never handed
out, so device DMA buffers placed there by an image cannot collide with allocations.

Protocol: servers/sigma0/protocol.py (SIGMA0), served by `kernel.user.rpc`.
"""
from __future__ import annotations

import time
from typing import Any

from kernel.abi import PAGE_SHIFT, MemRights
from kernel.user.rpc import ADMIN_LABEL, Call, Reply, RpcError
from kernel.user.vm import map_mem

from .protocol import SIGMA0

FREE = 0
RESERVED = -1           # owner of frames kept out of circulation (no label maps to it)


class Sigma0:
    """The SIGMA0 implementation: one method per op (and the page-fault handler); the
    caller is the gate label the kernel reports, never a claim of the client."""

    def __init__(self, l4: Any, frames: int, reserved: int = 0) -> None:
        self.l4 = l4
        self.frames = frames
        self.reserved = min(reserved, frames)
        # client label (+1) per frame; FREE = unowned, RESERVED = never handed out
        self.owner = [RESERVED] * self.reserved + [FREE] * (frames - self.reserved)
        self.nfree = frames - self.reserved

    def _find(self, npages: int) -> int:
        for start in range(0, self.frames - npages + 1, npages):
            if all(o == FREE for o in self.owner[start:start + npages]):
                return start
        return -1

    # -- the ops -----------------------------------------------------------------------
    def alloc(self, call: Call, order: int) -> Reply:
        if not PAGE_SHIFT <= order <= PAGE_SHIFT + 20:
            raise RpcError("INVALID", f"order {order} outside {PAGE_SHIFT}..{PAGE_SHIFT + 20}")
        n = 1 << (order - PAGE_SHIFT)
        start = self._find(n)
        if start < 0:
            raise RpcError("QUOTA", f"no free block of 2**{order} bytes ({self.nfree} frames free)")
        self._own(start, n, call.label + 1)
        phys = start << PAGE_SHIFT
        return Reply({"phys": phys, "order": order}, [map_mem(phys, order, MemRights.RWX)])

    def free(self, call: Call, phys: int, order: int) -> int:
        # The order is bounded first: `1 << order` of a client's 2**40 would exhaust memory.
        if not PAGE_SHIFT <= order <= PAGE_SHIFT + 20:
            raise RpcError("INVALID", f"order {order} outside {PAGE_SHIFT}..{PAGE_SHIFT + 20}")
        start, n = phys >> PAGE_SHIFT, 1 << (order - PAGE_SHIFT)
        if phys < 0 or phys & ((1 << order) - 1) or start + n > self.frames:
            raise RpcError("INVALID", f"[0x{phys:x}, order {order}] is not a block of RAM")
        if any(o != call.label + 1 for o in self.owner[start:start + n]):
            raise RpcError("NO_RIGHTS", f"[0x{phys:x}, order {order}] is not all yours")
        removed = self.l4.mem_unmap(phys, order)
        self._own(start, n, FREE)
        return int(removed)

    def info(self, call: Call) -> dict:
        clients = len({o for o in self.owner if o not in (FREE, RESERVED)})
        return {"frames": self.frames, "free": self.nfree, "reserved": self.reserved,
                "clients": clients}

    def client_gone(self, call: Call, label: int) -> int:
        """Free every frame of the (dead) client `label` (admin: checked by the dispatch)."""
        if label == ADMIN_LABEL or label < 0:
            raise RpcError("INVALID", f"label {label} is no client's")
        who, freed, f = label + 1, 0, 0
        while f < self.frames:
            if self.owner[f] != who:
                f += 1
                continue
            end = f
            while end < self.frames and self.owner[end] == who:
                end += 1
            for start, order in _blocks(f, end):
                self.l4.mem_unmap(start << PAGE_SHIFT, order + PAGE_SHIFT)
            self._own(f, end - f, FREE)
            freed += end - f
            f = end
        return freed

    # -- kernel messages -------------------------------------------------------------------
    def on_page_fault(self, call: Call, body: dict) -> Reply:
        addr = body.get("addr")
        if type(addr) is not int or addr < 0:
            raise RpcError("INVALID", f"page fault without an address: {body!r:.80}")
        frame = addr >> PAGE_SHIFT
        if frame >= self.frames:
            raise RpcError("INVALID", f"0x{addr:x} is beyond RAM")
        if self.owner[frame] not in (FREE, call.label + 1):
            raise RpcError("NO_RIGHTS", f"frame {frame} belongs to another client")
        self._own(frame, 1, call.label + 1)
        return Reply(None, [map_mem(frame << PAGE_SHIFT, PAGE_SHIFT, MemRights.RWX)])

    def _own(self, start: int, n: int, who: int) -> None:
        for f in range(start, start + n):
            if (self.owner[f] == FREE) != (who == FREE):
                self.nfree += -1 if who != FREE else 1
            self.owner[f] = who


def _blocks(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) frames as naturally aligned power-of-two blocks: (first frame, order)."""
    out = []
    while start < end:
        order = (start & -start).bit_length() - 1 if start else 30
        while start + (1 << order) > end:
            order -= 1
        out.append((start, order))
        start += 1 << order
    return out


def main(l4: Any, reserve: str = "0") -> int:
    # The launcher makes us sigma0 right after creating the task; wait until it has.
    deadline = time.monotonic() + 10
    while not l4.mem_query(0, PAGE_SHIFT):
        if time.monotonic() > deadline:
            raise SystemExit("sigma0: the kernel never made this task sigma0 (MEM_SIGMA0)")
        time.sleep(0.005)
    info = l4.mem_attach(False)
    SIGMA0.serve(l4, Sigma0(l4, info["frames"], -(-int(reserve) >> PAGE_SHIFT)))
    return 0


def boot(system: Any, name: str = "sigma0", **kw: Any) -> Any:
    """Start sigma0 in a `kernel.user.testing.System` (or anything with root + spawn)."""
    tp = system.spawn("servers.sigma0.server:main", name, **kw)
    system.root.mem_sigma0(tp.slot)
    return tp
