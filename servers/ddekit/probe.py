"""A probe task on DDEKit's bus: what the image's io policy lets a driver reach, and what not.

    run(l4, "timer0", "disk0", ...)      in an image: devices = ["timer0"] (its io policy)

It starts DDEKit, logs the devices the bus scan lists for it (io's answer for this task),
then `bus.request`s each device named on its command line and logs the outcome, one line
each, then `probe: done`:

    probe: the bus lists ['timer0'] for this task
    probe: timer0: granted (timer, vendor 0x4c34 device 0x54494d52, irq 1)
    probe: disk0: refused: DeviceDenied: io refuses device 'disk0' to this driver: ...
    probe: nic9: absent: DeviceNotFound: the machine has no device 'nic9'

A granted device is released again at once; the probe then stays up (restarts with io, as a
driver does) until the launcher stops it. It needs `devices = [...]` only: no DMA memory.
"""
from __future__ import annotations

from kernel.user.client import L4

from . import bus, start, stop


def log(text: str) -> None:
    print(text, flush=True)


def probe(name: str) -> str:
    """One request of `name` on the bus, as a log line (the device is released at once)."""
    try:
        dev = bus.request(name)
    except bus.DeviceDenied as e:
        return f"probe: {name}: refused: DeviceDenied: {e}"
    except bus.DeviceNotFound as e:
        return f"probe: {name}: absent: DeviceNotFound: {e}"
    i = dev.info
    bus.release(dev)
    return (f"probe: {name}: granted ({i.kind}, vendor {i.vendor:#x} device {i.device:#x}, "
            f"irq {i.irq})")


def run(l4: L4, *names: str) -> int:
    start(l4)
    try:
        log(f"probe: the bus lists {[d.name for d in bus.scan()]} for this task")
        for name in names:
            log(probe(name))
    finally:
        stop()
    log("probe: done")
    while True:                     # stay up, as a driver does; the launcher ends us
        try:
            l4.wait(timeout=None)
        except Exception:           # noqa: BLE001 - our connection went: the system is going
            return 0
