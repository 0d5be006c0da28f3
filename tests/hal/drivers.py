"""Driver tasks for tests/hal/test_io.py, run as real task processes (kernel.user.task)."""
from __future__ import annotations

import mmap
import os

from hal.device import Status
from hal.driver import DeviceHandle
from kernel.abi import Proto
from kernel.user.rpc import RemoteFailure
from servers.io.protocol import IO


def disk_driver(l4, lba: str, text: str) -> int:
    """Open disk0 through io, DMA-write `text` to sector `lba`, and check that timer0 is denied."""
    io = IO.client(l4, l4.caps["io"], timeout=30_000)
    try:
        io.open("timer0", _window=(200, 2))
        return 10                                   # the policy should not allow it
    except RemoteFailure as e:
        if e.error != "DENIED":
            return 11
    info = io.open("disk0", _window=(200, 2))
    disk = DeviceHandle(l4, 200, 201, info)
    ram = io.ram()
    fd = os.open(ram["path"], os.O_RDWR)
    mem = mmap.mmap(fd, ram["size"])
    os.close(fd)
    data = text.encode().ljust(512, b".")
    mem[0x9000:0x9000 + 512] = data
    disk.attach_irq(label=5)
    disk.writes(LBA=int(lba), COUNT=1, DMA_ADDR=0x9000, CMD=2)
    msg = l4.wait(timeout=30_000)
    ok = msg.proto == Proto.IRQ and msg.label == 5 and not disk.read("STATUS") & Status.ERROR
    disk.eoi()
    mem.close()
    return 0 if ok else 12
