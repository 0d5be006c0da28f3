"""What every driver here needs: a device from io, physical RAM, a log line.

`open_device(l4, name)` asks io (capability "io") for a device; its I/O gate and IRQ object
land in free slots of ours and come back as a `hal.driver.DeviceHandle`. io refuses a device
the image's policy does not give this task (`RemoteFailure`, error "DENIED").

`PhysRam(l4)` maps the machine's physical RAM (the file io.ram() names: the kernel's RAM
memfd), so a driver can fill and read the DMA buffers whose physical addresses it writes
into device registers. Physical addresses are byte offsets in it.
"""
from __future__ import annotations

import mmap
import os
import sys
from typing import Any

from hal.driver import DeviceHandle, free_slots
from kernel.user.client import L4
from servers.io.protocol import IO

IO_CAP = "io"


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
    return DeviceHandle(l4, slots[0], slots[1] if len(slots) > 1 else None, info)


class PhysRam:
    """The machine's physical RAM, mapped read-write into this process."""

    def __init__(self, l4: L4) -> None:
        info = io_client(l4).ram()
        fd = os.open(info["path"], os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, info["size"])
        finally:
            os.close(fd)
        self.size: int = info["size"]

    def check(self, addr: int, length: int) -> None:
        if not (0 <= addr and addr + length <= self.size):
            raise ValueError(f"physical range {addr:#x}+{length:#x} outside RAM of {self.size:#x} bytes")

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        self.map[addr:addr + len(data)] = data

    def read(self, addr: int, length: int) -> bytes:
        self.check(addr, length)
        return self.map[addr:addr + length]

    def close(self) -> None:
        self.map.close()


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
