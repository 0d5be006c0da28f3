"""Session blocks: the shared memory of ORe's sessions, straight from sigma0.

    blocks = Blocks(l4, vm)          needs capability "sigma0" (a label of ORe's own)
    b = blocks.alloc()               one zeroed block of SESSION_SIZE bytes: b.va, b.view
    blocks.free(b)                   back to sigma0: unmapped from every task it was mapped to

Contract: a block lies at a virtual address of ours never used before (addresses go up from
VBASE), so a stale view can never reach another session's block; `free` releases our view
first, then sigma0's free unmaps the block recursively (the client loses it too: its next
access is a PageFault, which NicSession turns into SessionLost). ORe holds nothing of RAM but
its sessions' blocks; a dead ORe's blocks go back with it (the launcher's sigma0
client_gone).
Ownership: ORe's main thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kernel.user.errors import InvalidArgument
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM, window
from servers.nic import stream as ps
from servers.sigma0.protocol import SIGMA0

SIGMA0_CAP = "sigma0"
VIEW_TRIES = 5
VBASE = 0x70_0000_0000            # ORe's session blocks (NicSession's windows are at 0x60_...)


class OutOfMemory(MemoryError):
    """sigma0 had no block for a session (its quota for us, or fragmentation)."""


@dataclass
class Block:
    va: int
    phys: int
    view: memoryview


class Blocks:
    def __init__(self, l4: Any, vm: VM) -> None:
        if SIGMA0_CAP not in l4.caps:
            raise SystemExit("ore: no 'sigma0' capability for session memory (give the task "
                             "caps = { sigma0 = { service = \"sigma0\", label = N } })")
        self.vm = vm
        self.s0: Any = SIGMA0.client(l4, l4.caps[SIGMA0_CAP], timeout=30_000)
        self.next_va = VBASE
        self.live = 0

    def alloc(self) -> Block:
        va = self.next_va
        self.next_va += ps.SESSION_SIZE
        try:
            got = self.s0.alloc(ps.SESSION_ORDER, _window=window(va, ps.SESSION_ORDER))
        except RemoteFailure as e:
            raise OutOfMemory(f"sigma0 gave no session block: {e}") from None
        phys = int(got["phys"])
        try:
            view = self._view(va)
        except Exception:
            self.s0.free(phys, ps.SESSION_ORDER)
            raise
        self.live += 1
        return Block(va, phys, view)

    def _view(self, va: int) -> memoryview:
        """The block zeroed, then one view of it. A view needs every page of the block in
        our TLB at once; a shootdown of anything of ours (the uplink's block going away)
        empties the TLB, so between the fill and the view it may be gone: fill again."""
        for attempt in range(VIEW_TRIES):
            self.vm.fill(va, ps.SESSION_SIZE, 0)
            try:
                return self.vm.view(va, ps.SESSION_SIZE, writable=True)
            except InvalidArgument:
                if attempt == VIEW_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def free(self, b: Block) -> None:
        try:
            b.view.release()
        except BufferError:                  # a slice still alive: the block goes all the same
            pass
        self.s0.free(b.phys, ps.SESSION_ORDER)
        self.live -= 1
