"""The driver side of the HAL: open devices through the bus, touch registers, take interrupts.

    devs = open_devices(l4, bus_slot)          # {name: DeviceHandle}, via BUS.open
    d = devs["disk0"]
    d.write("LBA", 0); d.writes(COUNT=8, DMA_ADDR=0x1000); d.write("CMD", 2)
    d.attach_irq(label=77)                      # to the calling thread, and unmask the line
    msg = l4.wait()                             # Proto.IRQ, label 77
    d.eoi()

`DeviceHandle` names registers by name (from the device's `info`); every access is one IPC
(`writes`/`reads` batch several into one). A driver that got its capabilities from the io
server builds the handle with `DeviceHandle(l4, gate, irq)` directly.
"""
from __future__ import annotations

from typing import Any

from kernel.abi import SLOT_THREAD
from kernel.client import L4
from kernel.errors import NoCapability

from .device import IrqCtrl
from .protocol import BUS, DEV


class DeviceHandle:
    def __init__(self, l4: Any, gate: int, irq: int | None = None, info: dict | None = None) -> None:
        self.l4 = l4
        self.gate = gate
        self.irq = irq
        self.dev = DEV.client(l4, gate, timeout=30_000)
        self.info = info or self.dev.info()
        self.name: str = self.info["name"]
        self.kind: str = self.info["kind"]
        self.regs: dict[str, int] = self.info["regs"]

    def read(self, reg: str) -> int:
        return self.dev.read(self.regs[reg])

    def reads(self, *regs: str) -> list[int]:
        return self.dev.reads([self.regs[r] for r in regs])

    def write(self, reg: str, value: int) -> int:
        """Write one register; answers STATUS afterwards."""
        return self.dev.write(self.regs[reg], int(value))

    def writes(self, **values: int) -> int:
        """Write several registers in the order given, in one IPC; answers STATUS."""
        return self.dev.writes([[self.regs[k], int(v)] for k, v in values.items()])

    def attach_irq(self, thread: int = SLOT_THREAD, label: int = 0, unmask: bool = True) -> None:
        """Attach the device's IRQ object to `thread` (our slot), then unmask the line."""
        if self.irq is None:
            raise ValueError(f"device {self.name} has no interrupt line")
        self.l4.irq_attach(self.irq, thread, label)
        if unmask:
            self.write("IRQ_CTRL", int(IrqCtrl.UNMASK))

    def eoi(self) -> int:
        return self.write("IRQ_CTRL", int(IrqCtrl.EOI))

    def mask(self) -> int:
        return self.write("IRQ_CTRL", int(IrqCtrl.MASK))

    def unmask(self) -> int:
        return self.write("IRQ_CTRL", int(IrqCtrl.UNMASK))


def free_slots(l4: L4, count: int, start: int = 1024) -> int:
    """The first of `count` consecutive empty slots of ours at or after `start`."""
    base = start
    while True:
        for i in range(count):
            try:
                l4.cap_inspect(base + i)
            except NoCapability:
                continue
            base = base + i + 1
            break
        else:
            return base


def open_device(l4: L4, bus: int, name: str, window: int | None = None) -> DeviceHandle:
    """Open one device through the bus gate; its gate and IRQ land in our slots."""
    base = free_slots(l4, 2) if window is None else window
    stub = BUS.client(l4, bus, timeout=30_000)
    info = stub.open(name, _window=(base, 2))
    slots = [it[1] for it in stub.last_items]
    return DeviceHandle(l4, slots[0], slots[1] if len(slots) > 1 else None, info)


def open_devices(l4: L4, bus: int, start: int = 1024) -> dict[str, DeviceHandle]:
    """Open every device on the bus."""
    out = {}
    for d in BUS.client(l4, bus, timeout=30_000).devices():
        h = open_device(l4, bus, d["name"], free_slots(l4, 2, start))
        out[d["name"]] = h
    return out
