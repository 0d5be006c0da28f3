"""The DDEKit bus: a PCI-like scan of the devices io offers this driver, and their resources.

    for d in bus.scan(): d.name, d.kind, d.vendor, d.device, d.class_code, d.irq, d.regs, d.dma
    dev = bus.request("disk0")       # the device's resources are ours: dev.read("SECTORS")...
    dev.write("LBA", 1); dev.writes(COUNT=1, CMD=1); dev.reads("STATUS", "ERROR")
    dev.read_at(8); dev.write_at(9, 1)   # by register index, for readq/writeq-style glue
    bus.release(dev)                  # its IRQ handlers detached, its capabilities deleted
    bus.requested() -> [Device]

Ids as PCI has them: `vendor` is L4Py's (VENDOR), `device` the device's ID register
(hal/DEVICES.md: 0x4449534B for a disk...), `class_code` the PCI base class and subclass of
the kind (0x0180 storage, 0x0200 network, 0x0300 display, 0x0900 input, 0x0800 system).
Resources: the register file (`regs`, name -> index, reached through the device's I/O gate),
the interrupt line (`irq`, None if it has none) and whether it masters DMA (`dma`).

DMA: a bus master is bound to this task's DMA domain on `request` where the HAL has an IOMMU
(`DeviceHandle.dma_bind`, hal/iommu.py; `dev.iommu` is its status): the device may then
DMA only into frames this task maps, which are the blocks DDEKit's memory allocated.

How: io (capability "io") is the only way to devices. `scan` asks io for the names this
task's policy grants, opens each (the grant is io's "configuration space": info and the ID
register) and deletes the capabilities again; `request` opens the device and keeps them.
io refuses a device the image's policy does not give this task: `request` raises
`DeviceDenied` naming the device (`DeviceNotFound` for a name the machine lacks).

Contracts: register access goes through the calling DDEKit thread's own L4 thread (one
`hal.driver.DeviceHandle` per thread and device, made on first use), so threads never
share a connection. After `release` every access raises `Released`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from hal.driver import DeviceHandle
from kernel.user.errors import L4Error
from kernel.user.rpc import RemoteFailure
from servers.io.protocol import IO

from . import env as _env
from . import thread as _thread

VENDOR = 0x4C34                     # "L4": the vendor id of every device of the machine
CLASS_CODES = {"disk": 0x0180, "nic": 0x0200, "fb": 0x0300, "input": 0x0900,
               "pic": 0x0800, "timer": 0x0802}
DMA_KINDS = {"disk", "nic", "fb"}   # bus masters (hal/DEVICES.md: addresses are physical)
NO_LINE = 2 ** 64 - 1


class DeviceDenied(PermissionError):
    """io refused the device: the image's policy does not give it to this task."""


class DeviceNotFound(LookupError):
    """The machine has no device of that name."""


class Released(RuntimeError):
    """A device used after `bus.release` (the caller's bug)."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    kind: str
    vendor: int
    device: int
    class_code: int
    irq: int | None
    regs: dict[str, int] = field(hash=False)
    dma: bool = False


@dataclass
class Device:
    """A requested device: its resources are this driver's until `release`."""
    info: DeviceInfo
    gate: int                      # our slot of its I/O gate
    irq_cap: int | None            # our slot of its IRQ object (INVOKE|WRITE)
    raw_info: dict[str, Any]
    iommu: dict[str, Any] | None = None     # the DMA domain's status, if the HAL has an IOMMU
    released: bool = False
    _handles: dict[Any, DeviceHandle] = field(default_factory=dict)   # L4 thread -> handle
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.info.name

    def handle(self) -> DeviceHandle:
        """The register handle for the calling DDEKit thread."""
        if self.released:
            raise Released(f"device {self.name} was released")
        l4 = _thread.my_l4()
        with self._lock:
            h = self._handles.get(l4)
            if h is None:
                h = self._handles[l4] = DeviceHandle(l4, self.gate, self.irq_cap, self.raw_info)
            return h

    def read(self, reg: str) -> int:
        return self.handle().read(reg)

    def reads(self, *regs: str) -> list[int]:
        return self.handle().reads(*regs)

    def write(self, reg: str, value: int) -> int:
        return self.handle().write(reg, value)

    def writes(self, **values: int) -> int:
        return self.handle().writes(**values)

    def read_at(self, index: int) -> int:
        """Register by index (hal/DEVICES.md's idx column: readq/writeq at offset 8*idx)."""
        return int(self.handle().dev.read(int(index)))

    def write_at(self, index: int, value: int) -> int:
        return int(self.handle().dev.write(int(index), int(value)))


_lock = threading.Lock()
_requested: dict[str, Device] = {}      # guarded by _lock


def _io() -> Any:
    env = _env.get()
    return env.stub(IO, env.cap(_env.IO_CAP), _thread.my_l4())


def _open(name: str) -> tuple[dict[str, Any], int, int | None]:
    env = _env.get()
    io = _io()
    base = env.slots(2)
    try:
        info = io.open(name, _window=(base, 2))
    except RemoteFailure as e:
        if e.error == "DENIED":
            raise DeviceDenied(f"io refuses device {name!r} to this driver: {e}") from None
        if e.error == "NOT_FOUND":
            raise DeviceNotFound(f"the machine has no device {name!r}") from None
        raise
    slots = [it[1] for it in io.last_items]
    return info, slots[0], slots[1] if len(slots) > 1 else None


def _describe(raw: dict[str, Any], ident: int) -> DeviceInfo:
    line = raw.get("line")
    return DeviceInfo(raw["name"], raw["kind"], VENDOR, ident, CLASS_CODES.get(raw["kind"], 0xFF00),
                      None if line is None or line == NO_LINE else int(line), dict(raw["regs"]),
                      raw["kind"] in DMA_KINDS)


def scan() -> list[DeviceInfo]:
    """Every device io lists for this task, with its ids and resources, in io's order."""
    env = _env.get()
    out = []
    for name in _io().devices():
        with _lock:
            held = _requested.get(name)
        if held is not None:
            out.append(held.info)
            continue
        raw, gate, irq = _open(name)
        try:
            ident = DeviceHandle(_thread.my_l4(), gate, irq, raw).read("ID")
        finally:
            env.cap_delete(gate, irq)
        out.append(_describe(raw, ident))
    return out


def request(name: str) -> Device:
    """Claim `name`'s resources through io (DeviceDenied if the policy does not allow it)."""
    with _lock:
        if name in _requested:
            raise RuntimeError(f"device {name} is requested already")
    raw, gate, irq = _open(name)
    try:
        h = DeviceHandle(_thread.my_l4(), gate, irq, raw)
        info = _describe(raw, h.read("ID"))
        iommu = _bind_dma(h) if info.dma else None
    except L4Error:
        _env.get().cap_delete(gate, irq)
        raise
    dev = Device(info, gate, irq, raw, iommu)
    with _lock:
        _requested[name] = dev
    return dev


def _bind_dma(h: DeviceHandle) -> dict[str, Any] | None:
    """Make our task the bus master's DMA domain, where the HAL has an IOMMU (hal/iommu.py):
    the device then reaches only frames this task maps, i.e. the memory DDEKit allocated."""
    bind = getattr(h, "dma_bind", None)
    return None if bind is None else dict(bind())


def release(dev: Device) -> None:
    """Give the device's resources back: detach its IRQ handlers, delete its capabilities."""
    from . import interrupt                 # interrupt imports bus: resolve at call time
    with _lock:
        if _requested.get(dev.name) is not dev:
            raise Released(f"device {dev.name} is not requested")
        del _requested[dev.name]
    interrupt.device_gone(dev)
    dev.released = True
    _env.get().cap_delete(dev.gate, dev.irq_cap)


def requested() -> list[Device]:
    with _lock:
        return list(_requested.values())


def release_all() -> None:
    for dev in requested():
        try:
            release(dev)
        except Exception as e:              # noqa: BLE001 - stop goes on
            print(f"ddekit: could not release {dev.name}: {e}", flush=True)
