"""DDE/Linux driver model: platform devices from DDEKit's bus scan, platform drivers.

    drv = platform_driver(name="l4disk", probe=fn, remove=fn, id_table=[platform_device_id("disk")])
    platform_driver_register(drv) -> 0 | -ENODEV     # probes every matching device
    platform_driver_unregister(drv)                   # remove() each, resources released
    irq = platform_get_irq(pdev, 0)                   # -ENXIO if it has none
    res = platform_get_resource(pdev, IORESOURCE_MEM, 0)   # the register file; IRQ resource
    dev_set_drvdata(&pdev.dev, data); dev_get_drvdata(&pdev.dev)   # pdev.dev is pdev here
    dev_info(dev, fmt, ...); dev_err(...)

Devices are what DDEKit's bus scan lists for this driver (the io policy of its image entry:
`devices = [...]`). A driver's id_table names device kinds ("disk", "nic", ...) or device
names ("disk0"); match by name first, then by kind, as Linux matches a platform device by
name or id table. Probing a device first *requests* it from the bus (its register gate and
IRQ object are then this driver's, and a DMA master is bound to this task's DMA domain),
then calls `probe(pdev)`; a probe answering non-zero releases it again.

Resources, in Linux's shape: IORESOURCE_MEM the register file (start 0, end 8*regs - 1, by
byte offset: see io.py), IORESOURCE_IRQ the interrupt line (start = end = the line).

Contracts: `remove` runs before the device's resources go back; a device is bound to at most
one driver; `platform_driver_register` answers 0 when at least one device was bound, else the
first probe's error or -ENODEV when nothing matched.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from servers.ddekit import bus as _bus

from .kernel import ENODEV, ENXIO, KERN_ERR, KERN_INFO, printk

IORESOURCE_MEM, IORESOURCE_IRQ, IORESOURCE_DMA = 0x200, 0x400, 0x800


@dataclass
class resource:
    start: int
    end: int
    flags: int
    name: str


@dataclass
class platform_device_id:
    name: str                     # a device kind ("disk") or a device name ("disk0")
    driver_data: Any = None


@dataclass
class Device:
    """`struct platform_device` with its `struct device` folded in (pdev.dev is pdev)."""
    name: str
    kind: str
    info: _bus.DeviceInfo
    resources: list[resource]
    irq: int | None
    hw: _bus.Device | None = None           # the requested DDEKit device while bound
    driver: "platform_driver | None" = None
    id_entry: platform_device_id | None = None
    driver_data: Any = None
    dma_mask: int = 2 ** 64 - 1

    @property
    def dev(self) -> "Device":
        return self


platform_device = Device


@dataclass
class platform_driver:
    name: str
    probe: Callable[[Device], int]
    remove: Callable[[Device], Any] | None = None
    id_table: list[platform_device_id] = field(default_factory=list)
    bound: list[Device] = field(default_factory=list)


def dev_set_drvdata(dev: Device, data: Any) -> None:
    dev.driver_data = data


def dev_get_drvdata(dev: Device) -> Any:
    return dev.driver_data


platform_set_drvdata, platform_get_drvdata = dev_set_drvdata, dev_get_drvdata


def dev_name(dev: Device) -> str:
    return dev.name


def dev_info(dev: Device, fmt: str, *args: Any) -> None:
    printk(KERN_INFO + f"{dev.name}: " + fmt, *args)


def dev_err(dev: Device, fmt: str, *args: Any) -> None:
    printk(KERN_ERR + f"{dev.name}: " + fmt, *args)


def _device_of(info: _bus.DeviceInfo) -> Device:
    res = [resource(0, 8 * max(info.regs.values(), default=0) + 7, IORESOURCE_MEM, info.name)]
    if info.irq is not None:
        res.append(resource(info.irq, info.irq, IORESOURCE_IRQ, info.name))
    return Device(info.name, info.kind, info, res, info.irq)


_lock = threading.Lock()
_bound: dict[str, Device] = {}             # device name -> bound device; _lock


def _match(drv: platform_driver, info: _bus.DeviceInfo) -> platform_device_id | None:
    table = drv.id_table or [platform_device_id(drv.name)]
    for want in ("name", "kind"):
        for ent in table:
            if ent.name == getattr(info, want):
                return ent
    return None


def platform_driver_register(drv: platform_driver) -> int:
    first_err = 0
    for info in _bus.scan():
        ent = _match(drv, info)
        with _lock:
            if ent is None or info.name in _bound:
                continue
        ret = _probe(drv, _device_of(info), ent)
        first_err = first_err or ret
    if drv.bound:
        return 0
    return first_err or -ENODEV


def _probe(drv: platform_driver, pdev: Device, ent: platform_device_id) -> int:
    pdev.hw = _bus.request(pdev.name)
    pdev.driver, pdev.id_entry = drv, ent
    try:
        ret = drv.probe(pdev)
    except Exception as e:                  # noqa: BLE001 - a broken probe fails like -EIO
        printk(KERN_ERR + "%s: probe of %s raised %r", drv.name, pdev.name, e)
        ret = -5
    if ret:
        printk(KERN_ERR + "%s: probe of %s failed: %d", drv.name, pdev.name, ret)
        _release(pdev)
        return int(ret)
    with _lock:
        _bound[pdev.name] = pdev
    drv.bound.append(pdev)
    return 0


def _release(pdev: Device) -> None:
    hw, pdev.hw, pdev.driver = pdev.hw, None, None
    if hw is not None and not hw.released:
        _bus.release(hw)


def platform_driver_unregister(drv: platform_driver) -> None:
    for pdev in list(reversed(drv.bound)):
        try:
            if drv.remove is not None:
                drv.remove(pdev)
        finally:
            drv.bound.remove(pdev)
            with _lock:
                _bound.pop(pdev.name, None)
            _release(pdev)


def platform_get_irq(pdev: Device, num: int = 0) -> int:
    irqs = [r for r in pdev.resources if r.flags & IORESOURCE_IRQ]
    return irqs[num].start if num < len(irqs) else -ENXIO


def platform_get_resource(pdev: Device, flags: int, num: int = 0) -> resource | None:
    found = [r for r in pdev.resources if r.flags & flags]
    return found[num] if num < len(found) else None


def resource_size(r: resource) -> int:
    return r.end - r.start + 1


def bound_devices() -> list[Device]:
    with _lock:
        return list(_bound.values())
