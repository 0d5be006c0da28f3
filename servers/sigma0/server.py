"""sigma0: owns all RAM at boot and hands out frames, each frame to one client at a time.

The kernel maps every frame 1:1 into sigma0's address space (virtual page n = frame n), so
sigma0 never touches memory itself: it only sends map items. Clients are told apart by the
label of the gate they call (the launcher gives each client its own gate).

`main(l4, reserve)`: the first `reserve` bytes of RAM (rounded up to frames) are never handed
out, so device DMA buffers placed there by an image cannot collide with allocations.

Protocol (payload msgpack {"op": ..., args}; answer {"ok": value} or {"err", "reason"}):
    alloc  {order}            -> {"phys", "order"} and a map item of 2**order bytes, rw,
                                 placed in the caller's memory receive window
    free   {phys, order}      -> number of mappings removed (recursive unmap; frames free again)
    info   {}                 -> {"frames", "free", "reserved", "clients"}
    client_gone {label}       -> frames freed: the client with gate label `label` died; its
                                 frames are unmapped everywhere and free again. Only through
                                 the launcher's gate, label ADMIN_LABEL (0).
    Proto.PAGE_FAULT          -> as a pager: maps the faulting page 1:1 (phys = fault address),
                                 if the frame is free or already the faulting client's
Errors: "QUOTA" (no free block of that order), "INVALID" (bad order/phys), "NO_RIGHTS"
(the frames belong to another client).
"""
from __future__ import annotations

import time
from typing import Any

from kernel.abi import PAGE_SHIFT, MemRights, Proto, pack, unpack
from kernel.user.vm import map_mem

from ..loop import serve

PROTOCOL = {
    "alloc": {"args": ("order",), "reply": "dict(phys, order) + map item", "errors": ("QUOTA", "INVALID")},
    "free": {"args": ("phys", "order"), "reply": "int", "errors": ("INVALID", "NO_RIGHTS")},
    "info": {"args": (), "reply": "dict(frames, free, reserved, clients)", "errors": ()},
    "client_gone": {"args": ("label",), "reply": "int", "errors": ("INVALID", "NO_RIGHTS")},
}
ADMIN_LABEL = 0         # the launcher's gate; client gates have labels >= 1
FREE = 0
RESERVED = -1           # owner of frames kept out of circulation (no label maps to it)


class Sigma0:
    def __init__(self, l4: Any, frames: int, reserved: int = 0) -> None:
        self.l4 = l4
        self.frames = frames
        self.reserved = min(reserved, frames)
        # client label (+1) per frame; FREE = unowned, RESERVED = never handed out
        self.owner = [RESERVED] * self.reserved + [FREE] * (frames - self.reserved)
        self.free = frames - self.reserved

    def _find(self, npages: int) -> int:
        for start in range(0, self.frames - npages + 1, npages):
            if all(o == FREE for o in self.owner[start:start + npages]):
                return start
        return -1

    def alloc(self, label: int, order: int) -> tuple[dict, list]:
        if not PAGE_SHIFT <= order <= PAGE_SHIFT + 20:
            raise _Err("INVALID", f"order {order} outside {PAGE_SHIFT}..{PAGE_SHIFT + 20}")
        n = 1 << (order - PAGE_SHIFT)
        start = self._find(n)
        if start < 0:
            raise _Err("QUOTA", f"no free block of 2**{order} bytes ({self.free} frames free)")
        self._own(start, n, label + 1)
        phys = start << PAGE_SHIFT
        return {"phys": phys, "order": order}, [map_mem(phys, order, MemRights.RWX)]

    def free_block(self, label: int, phys: int, order: int) -> int:
        start, n = phys >> PAGE_SHIFT, 1 << (order - PAGE_SHIFT)
        if order < PAGE_SHIFT or phys & ((1 << order) - 1) or start + n > self.frames:
            raise _Err("INVALID", f"[0x{phys:x}, order {order}] is not a block of RAM")
        if any(o != label + 1 for o in self.owner[start:start + n]):
            raise _Err("NO_RIGHTS", f"[0x{phys:x}, order {order}] is not all yours")
        removed = self.l4.mem_unmap(phys, order)
        self._own(start, n, FREE)
        return removed

    def client_gone(self, caller: int, label: int) -> int:
        """Free every frame of the (dead) client `label`; answers how many."""
        if caller != ADMIN_LABEL:
            raise _Err("NO_RIGHTS", "client_gone is for the launcher's gate only")
        if label == ADMIN_LABEL or label < 0:
            raise _Err("INVALID", f"label {label} is no client's")
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

    def fault(self, label: int, addr: int) -> list:
        frame = addr >> PAGE_SHIFT
        if frame >= self.frames:
            raise _Err("INVALID", f"0x{addr:x} is beyond RAM")
        if self.owner[frame] not in (FREE, label + 1):
            raise _Err("NO_RIGHTS", f"frame {frame} belongs to another client")
        self._own(frame, 1, label + 1)
        return [map_mem(frame << PAGE_SHIFT, PAGE_SHIFT, MemRights.RWX)]

    def _own(self, start: int, n: int, who: int) -> None:
        for f in range(start, start + n):
            if (self.owner[f] == FREE) != (who == FREE):
                self.free += -1 if who != FREE else 1
            self.owner[f] = who

    def handle(self, label: int, proto: int, body: Any) -> tuple[Any, list, int]:
        if proto == Proto.PAGE_FAULT:
            return None, self.fault(label, body["addr"]), 0
        op = body.get("op") if isinstance(body, dict) else None
        if op == "alloc":
            value, items = self.alloc(label, int(body["order"]))
            return value, items, 0
        if op == "free":
            return self.free_block(label, int(body["phys"]), int(body["order"])), [], 0
        if op == "client_gone":
            return self.client_gone(label, int(body["label"])), [], 0
        if op == "info":
            clients = len({o for o in self.owner if o not in (FREE, RESERVED)})
            return {"frames": self.frames, "free": self.free, "reserved": self.reserved,
                    "clients": clients}, [], 0
        raise _Err("INVALID", f"unknown op {op!r}")


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


class _Err(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def main(l4: Any, reserve: str = "0") -> int:
    # The launcher makes us sigma0 right after creating the task; wait until it has.
    deadline = time.monotonic() + 10
    while not l4.mem_query(0, PAGE_SHIFT):
        if time.monotonic() > deadline:
            raise SystemExit("sigma0: the kernel never made this task sigma0 (MEM_SIGMA0)")
        time.sleep(0.005)
    info = l4.mem_attach(False)
    s = Sigma0(l4, info["frames"], -(-int(reserve) >> PAGE_SHIFT))
    serve(l4, lambda msg, body: s.handle(msg.label, msg.proto, body), "sigma0")
    return 0


class Sigma0Client:
    """Client stub: `alloc` needs a memory receive window (where the block lands)."""

    def __init__(self, l4: Any, gate: int, timeout: float | None = None) -> None:
        self.l4, self.gate, self.timeout = l4, gate, timeout

    def _call(self, body: dict, window: tuple | None = None) -> Any:
        msg = self.l4.call(self.gate, pack(body), window=window, snd_timeout=self.timeout,
                           rcv_timeout=self.timeout)
        ans = unpack(msg.data)
        if "err" in ans:
            from kernel.user import errors
            from kernel.abi import Err
            raise errors.from_code(int(Err[ans["err"]]), f"sigma0: {ans['reason']}")
        return ans["ok"], msg.items

    def alloc(self, order: int, window: tuple) -> tuple[dict, list]:
        return self._call({"op": "alloc", "order": order}, window)

    def free(self, phys: int, order: int) -> int:
        return self._call({"op": "free", "phys": phys, "order": order})[0]

    def info(self) -> dict:
        return self._call({"op": "info"})[0]

    def client_gone(self, label: int) -> int:
        """Through the launcher's gate (label 0): free the dead client's frames."""
        return self._call({"op": "client_gone", "label": label})[0]


def boot(system: Any, name: str = "sigma0", **kw: Any) -> Any:
    """Start sigma0 in a `kernel.user.testing.System` (or anything with root + spawn)."""
    tp = system.spawn("servers.sigma0.server:main", name, **kw)
    system.root.mem_sigma0(tp.slot)
    return tp
