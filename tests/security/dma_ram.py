"""What the hostile DMA driver needs without a driver framework: io's stub and raw DMA memory.

`io_client(l4)` is the IO stub on the task's capability "io" (the image's `devices`).
`PhysRam(l4, size)` is one physically contiguous block from sigma0 (capability "sigma0"),
mapped into our address space and reached through our VM: exactly the frames this task was
given. Its physical addresses (`phys` .. `phys + size`) are what the driver writes into the
disk's registers; `read`/`write` take physical addresses in that range. The driver uses the
HAL's registers directly (not DDEKit), so that it can try what a well-behaved driver never
would: DMA before binding the device, and into frames that are not its own.
"""
from __future__ import annotations

from typing import Any

from kernel.abi import PAGE_SHIFT
from kernel.user.client import L4
from kernel.user.vm import VM, window
from servers.io.protocol import IO
from servers.sigma0.protocol import SIGMA0

DMA_VADDR = 0x10_0000_0000      # where the DMA buffer lands in the driver's address space


def io_client(l4: L4) -> Any:
    """The IO stub; typed Any because a stub's ops are attributes set at run time."""
    return IO.client(l4, l4.caps["io"], timeout=30_000)


class PhysRam:
    """A DMA buffer of ours: `size` bytes (rounded up to a power of two) at physical `phys`."""

    def __init__(self, l4: L4, size: int) -> None:
        order = max(PAGE_SHIFT, (max(1, size) - 1).bit_length())
        s0: Any = SIGMA0.client(l4, l4.caps["sigma0"], timeout=30_000)
        s0.alloc(order, _window=window(DMA_VADDR, order))
        self.vaddr: int = s0.last_items[0][1]
        self.vm = VM(l4)
        self.phys: int = self.vm.mapped(self.vaddr, order)[0][1] << PAGE_SHIFT
        self.size = 1 << order

    def check(self, addr: int, length: int) -> None:
        if not (self.phys <= addr and addr + length <= self.phys + self.size):
            raise ValueError(f"physical range {addr:#x}+{length:#x} outside our DMA buffer "
                             f"{self.phys:#x}+{self.size:#x}")

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        self.vm.write(self.vaddr + addr - self.phys, data)

    def read(self, addr: int, length: int) -> bytes:
        self.check(addr, length)
        return self.vm.read(self.vaddr + addr - self.phys, length)
