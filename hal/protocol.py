"""The HAL's two wire protocols, declared once (kernel.user.rpc): device registers and the bus.

hal/machine.py serves both on the HAL's main thread (the gate's label picks the protocol);
hal/driver.py and servers/io are their clients (`DEV.client`, `BUS.client`).

DEV — spoken on a device's I/O capability (an IPC gate whose label the HAL chose and the
kernel vouches for, so the label *is* the device; nobody can reach a device without a
capability to its gate):

    read(reg) -> value            one register
    reads(regs) -> [values]       several, in order (a burst)
    write(reg, value) -> status   one register; answers the device's STATUS afterwards
    writes(pairs) -> status       [[reg, value], ...] in order; answers STATUS afterwards
    info() -> {name, kind, line, regs}
    dma_bind() -> iommu           with a task capability: the device's DMA domain from now on
                                  (hal/iommu.py); answers {enforcing, bound, checks, refused}

A bad register or value never fails the call: the device sets STATUS.ERROR and its ERROR
register, as hardware would (see hal/DEVICES.md). Only a malformed request is refused.

BUS — spoken on the bus gate, the HAL's admin gate (label BUS_LABEL = ADMIN_LABEL (0),
created by whoever wires the system and bound to the HAL's main thread; held by the launcher
and the io server only):

    devices() -> [{name, kind, line}]
    open(name) -> info            with two capabilities mapped into the caller's window:
                                  [0] the device's I/O gate, [1] its IRQ object (or only the
                                  gate for a device without an interrupt line);
                                  errors NOT_FOUND
    ram() -> {path, size}         where physical RAM is (until the kernel owns it)

A gate with any other label is answered UNKNOWN_OP; kernel messages (the HAL is no one's
pager or exception handler) likewise.
"""
from __future__ import annotations

from kernel.user.rpc import ADMIN_LABEL, Protocol, op

BUS_LABEL = ADMIN_LABEL    # the label the wirer gives the bus gate: the HAL's admin gate
DEVICE_LABEL_BASE = 0x100  # the HAL labels its device gates DEVICE_LABEL_BASE + index

DEV = Protocol("hal.dev", [
    op("read", 1, ["reg:int"], "value"),
    op("reads", 2, ["regs:list"], "values"),
    op("write", 3, ["reg:int", "value:int"], "status"),
    op("writes", 4, ["pairs:list"], "status"),
    op("info", 5, [], "info"),
    op("dma_bind", 6, [], "iommu", caps_in=1),
], tag=0x4844)

BUS = Protocol("hal.bus", [
    op("devices", 1, [], "devices"),
    op("open", 2, ["name:str"], "info", errors=["NOT_FOUND"], caps_out=2),
    op("ram", 3, [], "ram"),
], tag=0x4842)
