"""A driver that programs its disk to DMA where it should not (tests/security/test_dma.py).

Run as an image task with `devices = ["disk0"]` and a sigma0 capability. It reports one JSON
line, `DMA {...}`, with the disk's ERROR code of each attempt (0: done, 10: DMA_DENIED):
- `unbound`: a read into its own DMA buffer before it bound the disk to a DMA domain;
- `own`: the same after `dma_bind` (must work), and the bytes that arrived;
- `next_frame` / `other_frame`: a read into the frame just past / before its buffer;
- `leak`: a write to sector 1 from the frame past its buffer (another task's memory to disk);
- `ring`: a request queue placed in a frame not its own (Q_BASE);
- `after_unmap`: a read into its buffer after it gave the buffer's pages back (unmap).
"""
from __future__ import annotations

import json
from typing import Any

from hal.driver import DeviceHandle, free_slots
from kernel.abi import PAGE_SHIFT, Proto

from .dma_ram import PhysRam, io_client

IRQ_LABEL = 0xD3A
READ, WRITE = 1, 2


def _open_unbound(l4: Any, name: str) -> DeviceHandle:
    io = io_client(l4)
    base = free_slots(l4, 2, 200)
    info = io.open(name, _window=(base, 2))
    slots = [it[1] for it in io.last_items]
    return DeviceHandle(l4, slots[0], slots[1], info)


def _command(l4: Any, disk: DeviceHandle, **regs: int) -> int:
    disk.writes(**regs)
    while True:
        msg = l4.wait(timeout=30_000)
        if msg.proto == Proto.IRQ and msg.label == IRQ_LABEL:
            break
    status, error = disk.reads("STATUS", "ERROR")
    disk.write("ERROR", 0)
    disk.eoi()
    return int(error) if status & 4 else 0


def run(l4: Any, device: str = "disk0") -> int:
    disk = _open_unbound(l4, device)
    disk.attach_irq(label=IRQ_LABEL)
    buf = PhysRam(l4, 8192)
    res: dict[str, Any] = {"phys": buf.phys, "size": buf.size}
    read = lambda addr, lba=0: _command(l4, disk, LBA=lba, COUNT=1, DMA_ADDR=addr, CMD=READ)
    res["unbound"] = read(buf.phys)
    res["bind"] = disk.dma_bind()
    buf.write(buf.phys, b"\xee" * 512)
    res["own"] = read(buf.phys)
    res["own_data"] = buf.read(buf.phys, 16).hex()
    res["next_frame"] = read(buf.phys + buf.size)
    other = buf.phys - 4096 if buf.phys else 16 * 1024 * 1024 - 4096   # a frame not ours
    res["other_frame"] = read(other)
    res["leak"] = _command(l4, disk, LBA=1, COUNT=1, DMA_ADDR=buf.phys + buf.size, CMD=WRITE)
    st = disk.writes(Q_BASE=buf.phys + buf.size, Q_SIZE=4)
    res["ring"] = int(disk.read("ERROR")) if st & 4 else 0
    disk.write("ERROR", 0)
    order = (buf.size - 1).bit_length()
    l4.mem_unmap(buf.vaddr, max(order, PAGE_SHIFT), True)
    res["after_unmap"] = read(buf.phys)
    print("DMA " + json.dumps(res), flush=True)
    while True:
        l4.wait(timeout=None)
