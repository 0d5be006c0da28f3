"""DDE/Linux MMIO: a device's registers as an `__iomem` handle, readl/writel/readq/writeq.

    regs = ioremap(pdev)              # the register file of the platform device's BAR 0
    v = readq(regs, DISK_SECTORS)     # a 64-bit register by index (hal/DEVICES.md's idx)
    writeq(regs, DISK_Q_TAIL, tail)
    readl / writel                    # the low 32 bits (a write zero-extends)
    writeq_posted(regs, DISK_Q_TAIL, t)   # a posted write: sent, not waited for (doorbells)
    iowrite_batch(regs, [(reg, v), ...])   # several writes in one bus transaction
    iounmap(regs)

Why indices, not byte offsets: the HAL's registers are 64-bit words addressed by index (an
access is one IPC to the device's I/O gate, hal/protocol.py). A byte offset `8 * idx`, the
way a Linux driver writes `base + 0x40`, is accepted too (`offset=True` at ioremap): then
`readq(regs, 0x40)` is register 8. Named registers (`readq(regs, "SECTORS")`) work as well.

Posted writes: on PCI an MMIO write does not wait for the device; a driver orders it with
a later read. `writeq_posted` is that: the register write is *sent* to the device's gate
(one-way IPC: the device takes it in order with this thread's later accesses, and answers
nothing), so a doorbell costs no round trip while the device gets to work. Use it where
nothing needs the device's STATUS answer; errors still land in ERROR.

Contract: the handle goes through the calling DDEKit thread's own connection (DDEKit's bus
makes one per thread), so an interrupt handler and a submitting thread never share a call.
After `iounmap` every access raises `Released`. Register accesses never fail the call: a bad
index sets the device's ERROR register (hal/DEVICES.md), as a bad MMIO write would be
ignored by hardware.
"""
from __future__ import annotations

from typing import Any, Iterable

from hal.protocol import DEV
from servers.ddekit.bus import Released

from .device import Device

__all__ = ["IoMem", "Released", "ioremap", "iounmap", "readl", "readq", "writel", "writeq",
           "writeq_posted", "iowrite_batch"]

POSTED_TIMEOUT_MS = 30_000          # how long a posted write may wait for the device to take it


class IoMem:
    """An ioremapped register file: `dev` is the platform device, `hw` its DDEKit device."""

    def __init__(self, dev: Device, offsets: bool) -> None:
        if dev.hw is None:
            raise Released(f"device {dev.name} is not bound to a driver (no resources)")
        self.dev = dev
        self.hw = dev.hw
        self.offsets = offsets
        self.mapped = True

    def index(self, reg: int | str) -> int:
        if not self.mapped:
            raise Released(f"registers of {self.dev.name} were iounmapped")
        if isinstance(reg, str):
            return self.hw.info.regs[reg]
        if self.offsets:
            if reg % 8:
                raise ValueError(f"offset {reg:#x} is not 8-byte aligned")
            return reg // 8
        return reg

    def __repr__(self) -> str:
        return f"<__iomem {self.dev.name}>"


def ioremap(dev: Device, bar: int = 0, offset: bool = False) -> IoMem:
    if bar != 0:
        raise ValueError(f"{dev.name} has one register file (BAR 0), not BAR {bar}")
    return IoMem(dev, offset)


def iounmap(regs: IoMem) -> None:
    regs.mapped = False


def readq(regs: IoMem, reg: int | str) -> int:
    return regs.hw.read_at(regs.index(reg))


def writeq(regs: IoMem, reg: int | str, value: int) -> None:
    regs.hw.write_at(regs.index(reg), value & (2 ** 64 - 1))


def writeq_posted(regs: IoMem, reg: int | str, value: int) -> None:
    h: Any = regs.hw.handle()
    o = DEV.ops["write"]
    h.l4.send(h.gate, DEV.encode_request(o, [regs.index(reg), value & (2 ** 64 - 1)]),
              proto=DEV.tag, timeout=POSTED_TIMEOUT_MS)


def readl(regs: IoMem, reg: int | str) -> int:
    return readq(regs, reg) & 0xFFFF_FFFF


def writel(regs: IoMem, reg: int | str, value: int) -> None:
    writeq(regs, reg, value & 0xFFFF_FFFF)


def iowrite_batch(regs: IoMem, writes: Iterable[tuple[int | str, int]]) -> None:
    """Several register writes in order, in one transaction (one IPC): like a posted-write
    burst. The HAL applies them in the order given."""
    h: Any = regs.hw.handle()
    h.dev.writes([[regs.index(r), int(v)] for r, v in writes])
