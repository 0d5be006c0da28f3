"""The IOMMU: a device reaches only the memory its driver's task maps.

Contract. When the machine's RAM is the kernel's (the HAL is the DMA engine, `MEM_DMA`), every
device starts with no DMA domain and may not touch memory: a DMA range of an unbound device
is refused with the error status DMA_DENIED. A driver binds its device to a domain by sending
a task capability (normally its own) with the DEV op `dma_bind`; from then on every DMA range
the device is about to access — a command's buffer, a queue or descriptor ring, a frame
buffer — is first checked by the kernel (`MEM_DMA_CHECK`) against that task's page table: the
pages must be mapped there, writable where the device writes memory. So a driver can program
its device to reach only frames io and sigma0 gave it, and a frame it gave back (unmapped) is
refused from the next command on. The checks are per command, or per queue batch (one kernel
call for all the ranges of a batch); nothing is cached across commands, so no invalidation is
needed. The remaining window is the one an IOMMU without a drain has: a command checked and
running while the driver's unmap returns still completes.

A bound domain stays until the next `dma_bind` (a restarted driver binds again) or until its
task dies (the kernel then answers PEER_DIED/NO_CAP and DMA is refused).

The launcher starts the HAL with `--no-iommu` only for the attack suite's control
(`L4PY_SANDBOX_OFF=iommu`), which shows the same attempts succeed without it.

When the RAM is not the kernel's (`hal.testing.HalRig`'s private memfd, for tests of the
devices alone), there are no page tables to check against: `enforcing` is False and only the
bounds of RAM are checked, as before.

Ownership: `bind` runs on the HAL's main thread; `allowed` on whichever thread runs the
device's work (the register thread or a worker), each with its own L4 thread (`l4()`).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from kernel.abi import MAX_DMA_RANGES
from kernel.user.errors import L4Error

Range = tuple[int, int, bool]      # physical address, length, the device writes memory


class Iommu:
    """One device's DMA domain."""

    def __init__(self, ram: Any, enforcing: bool, l4: Callable[[], Any]) -> None:
        self.ram = ram
        self.enforcing = enforcing
        self.l4 = l4                  # the calling thread's L4 connection
        self.slot: int | None = None  # our capability to the domain's task
        self.lock = threading.Lock()
        self.checks = 0
        self.refused = 0
        self.why = "" if not enforcing else "no DMA domain bound (DEV dma_bind)"

    def bind(self, slot: int) -> int | None:
        """The domain is now the task `slot` names; answers the slot it replaces (to delete)."""
        with self.lock:
            old, self.slot = self.slot, slot
            self.why = ""
            return old

    def allowed(self, ranges: Sequence[Range]) -> bool:
        """May the device access all of `ranges` now? False names why in `self.why`."""
        for addr, length, _ in ranges:
            if not self.ram.check(addr, length):
                self.refused += 1
                self.why = f"range {addr:#x}+{length:#x} outside RAM"
                return False
        if not self.enforcing or not ranges:
            return True
        with self.lock:
            slot = self.slot
        self.checks += 1
        if slot is None:
            self.refused += 1
            self.why = "no DMA domain bound (DEV dma_bind)"
            return False
        try:
            for i in range(0, len(ranges), MAX_DMA_RANGES):     # one call per payload's worth
                self.l4().mem_dma_check(slot, list(ranges[i:i + MAX_DMA_RANGES]))
        except L4Error as e:
            self.refused += 1
            self.why = str(e)
            return False
        return True

    def check(self, addr: int, length: int, write: bool = True) -> bool:
        return self.allowed([(addr, length, write)])

    def status(self) -> dict[str, Any]:
        return {"enforcing": self.enforcing, "bound": self.slot is not None,
                "checks": self.checks, "refused": self.refused, "last_refusal": self.why}
