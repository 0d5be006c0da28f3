"""What every driver here needs: a device from io, DMA memory, a log line.

`open_device(l4, name)` asks io (capability "io") for a device; its I/O gate and IRQ object
land in free slots of ours and come back as a `hal.driver.DeviceHandle`. io refuses a device
the image's policy does not give this task (`RemoteFailure`, error "DENIED").

`PhysRam(l4, size)` is the DMA memory this driver was given, and nothing else of RAM: one
physically contiguous block from sigma0 (capability "sigma0", `[memory]` in the image),
mapped into our address space and reached through our VM (kernel.user.vm: this process
holds exactly those frames). Its physical addresses (`phys` .. `phys + size`) are what the
driver writes into device registers; `read`/`write` take physical addresses in that range.
"""
from __future__ import annotations

import sys
from typing import Any

from hal.driver import DeviceHandle, free_slots
from kernel.abi import PAGE_SHIFT
from kernel.user.client import L4
from kernel.user.vm import VM, window
from servers.io.protocol import IO
from servers.sigma0.protocol import SIGMA0

IO_CAP = "io"
SIGMA0_CAP = "sigma0"
DMA_VADDR = 0x10_0000_0000      # where a driver's DMA buffer lands in its address space


def log(text: str) -> None:
    print(text, flush=True)


def io_client(l4: L4) -> Any:
    """The IO stub; typed Any because a stub's ops are attributes set at run time."""
    if IO_CAP not in l4.caps:
        print(f"driver: no '{IO_CAP}' capability (give the task devices = [...] in the image)",
              file=sys.stderr, flush=True)
        raise SystemExit(2)
    return IO.client(l4, l4.caps[IO_CAP], timeout=30_000)


def open_device(l4: L4, name: str) -> DeviceHandle:
    io = io_client(l4)
    base = free_slots(l4, 2, 200)
    info = io.open(name, _window=(base, 2))
    slots = [it[1] for it in io.last_items]
    dev = DeviceHandle(l4, slots[0], slots[1] if len(slots) > 1 else None, info)
    dev.dma_bind()          # the device may DMA only into memory this task maps (the IOMMU)
    return dev


class PhysRam:
    """A DMA buffer of ours: `size` bytes at physical `phys`, physically contiguous."""

    def __init__(self, l4: L4, size: int) -> None:
        if SIGMA0_CAP not in l4.caps:
            print(f"driver: no '{SIGMA0_CAP}' capability for DMA memory (give the task "
                  f"caps = {{ sigma0 = {{ service = \"sigma0\", label = N }} }})",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)
        order = max(PAGE_SHIFT, (max(1, size) - 1).bit_length())
        s0: Any = SIGMA0.client(l4, l4.caps[SIGMA0_CAP], timeout=30_000)
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

    def close(self) -> None:
        self.vm.close()


def number(text: str) -> int:
    """An integer argument: decimal or 0x hex."""
    return int(str(text), 0)


def idle(l4: L4) -> int:
    """Stay up (a driver's life is long); the launcher stops us with SIGTERM."""
    while True:
        try:
            l4.wait(timeout=None)
        except Exception:
            return 0
