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

from typing import Any, cast

from kernel.abi import SLOT_TASK, SLOT_THREAD, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import NoCapability

from .device import IrqCtrl
from .protocol import BUS, DEV


class DeviceHandle:
    def __init__(self, l4: Any, gate: int, irq: int | None = None, info: dict | None = None) -> None:
        self.l4 = l4
        self.gate = gate
        self.irq = irq
        # A stub's ops are attributes set at run time from the protocol declaration, so the
        # checker can see them only through Any (a plain `: Any` is narrowed back to Stub).
        self.dev = cast(Any, DEV.client(l4, gate, timeout=30_000))
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

    def dma_bind(self, task: int = SLOT_TASK) -> dict:
        """Make task `task` (our slot; default our own task) the device's DMA domain: it may
        then DMA only into memory that task maps (hal/iommu.py). Answers the IOMMU's status."""
        return dict(self.dev.dma_bind(_items=[map_cap(task, Rights.INVOKE)]))

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
    stub = cast(Any, BUS.client(l4, bus, timeout=30_000))   # ops are run-time attributes
    info = stub.open(name, _window=(base, 2))
    slots = [it[1] for it in stub.last_items]
    return DeviceHandle(l4, slots[0], slots[1] if len(slots) > 1 else None, info)


def open_devices(l4: L4, bus: int, start: int = 1024) -> dict[str, DeviceHandle]:
    """Open every device on the bus."""
    out: dict[str, DeviceHandle] = {}
    bus_stub = cast(Any, BUS.client(l4, bus, timeout=30_000))   # ops are run-time attributes
    for d in bus_stub.devices():
        h = open_device(l4, bus, d["name"], free_slots(l4, 2, start))
        out[d["name"]] = h
    return out


class NicRings:
    """A minimal polling driver for the NIC's rings (tests and benchmarks).

    Layout from `base` in RAM: RX ring, TX ring, then `ring` RX buffers and `ring` TX
    buffers of `buf` bytes each. `send()` queues frames and rings the doorbell once;
    `recv()` takes every finished RX descriptor, re-posts the buffers and moves RX_TAIL once.
    Descriptors are read and written in RAM directly (no IPC); only doorbells are IPC.
    """

    DESC = "<QHHI"

    def __init__(self, dev: DeviceHandle, mem: Any, base: int, ring: int = 256, buf: int = 2048) -> None:
        import struct
        self.dev, self.mem, self.ring, self.buf = dev, mem, ring, buf
        self.rx_ring, self.tx_ring = base, base + ring * 16
        self.rx_bufs = base + 2 * ring * 16
        self.tx_bufs = self.rx_bufs + ring * buf
        self.end = self.tx_bufs + ring * buf
        self._desc = struct.Struct(self.DESC)
        for i in range(ring):
            self._desc.pack_into(mem, self.rx_ring + i * 16, self.rx_bufs + i * buf, buf, 0, 0)
            self._desc.pack_into(mem, self.tx_ring + i * 16, self.tx_bufs + i * buf, 0, 1, 0)
        self.rx_next = 0
        self.tx_tail = self.tx_clean = 0
        self.status = dev.writes(RX_BASE=self.rx_ring, RX_SIZE=ring, TX_BASE=self.tx_ring, TX_SIZE=ring,
                                 CTRL=3, RX_TAIL=ring - 1)

    def tx_free(self) -> int:
        mem, d, mask = self.mem, self._desc, self.ring - 1
        while self.tx_clean != self.tx_tail and d.unpack_from(mem, self.tx_ring + self.tx_clean * 16)[2] & 1:
            self.tx_clean = (self.tx_clean + 1) & mask
        return self.ring - 1 - ((self.tx_tail - self.tx_clean) & mask)

    def send(self, frames: list[bytes]) -> int:
        """Queue as many frames as fit, one doorbell; answers how many were queued."""
        n = min(len(frames), self.tx_free())
        if not n:
            return 0
        mem, d, mask, buf = self.mem, self._desc, self.ring - 1, self.buf
        t = self.tx_tail
        for f in frames[:n]:
            addr = self.tx_bufs + t * buf
            mem[addr:addr + len(f)] = f
            d.pack_into(mem, self.tx_ring + t * 16, addr, len(f), 0, 0)
            t = (t + 1) & mask
        self.tx_tail = t
        self.dev.write("TX_TAIL", t)
        return n

    def recv(self, limit: int | None = None) -> list[bytes]:
        import struct
        mem, d, mask, buf = self.mem, self._desc, self.ring - 1, self.buf
        unpack_flags = struct.Struct("<H").unpack_from
        out: list[bytes] = []
        i = self.rx_next
        while limit is None or len(out) < limit:
            off = self.rx_ring + i * 16
            flags = unpack_flags(mem, off + 10)[0]      # flags first: the device writes them last
            if not flags & 1:
                break
            addr, ln, _, _ = d.unpack_from(mem, off)
            if not flags & 2:
                out.append(mem[addr:addr + ln])
            d.pack_into(mem, off, addr, buf, 0, 0)
            i = (i + 1) & mask
        if i != self.rx_next:
            self.rx_next = i
            self.dev.write("RX_TAIL", (i - 1) & mask)
        return out
