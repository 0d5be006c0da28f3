"""The machine: builds the devices, wires them to kernel objects, serves their registers.

Ownership: the HAL process owns all device state and physical RAM (`Ram`). Its main L4
thread receives the bus requests (BUS protocol, gate label BUS_LABEL) and the interrupt
controller's registers. Every other device's registers (DEV protocol, one gate per device,
the gate's label names the device) are served by a register thread of that device's own
(`RegisterThread`, an L4 thread and a host thread named "regs-<name>", e.g.
"regs-disk0"), as a bus serves each device apart: one device's register accesses
never queue behind another's. Why: the disk's doorbell is a rendezvous send that returns
only when its receiver takes it, and with one thread for all devices it waited behind a
network flood's NIC register accesses (measured in DROPS: 1.7-2.2 ms of a late period's
disk read). The register threads keep the class the CPU reservation manager gives the
HAL's main thread (a real-time one in DROPS): a register thread in the ordinary class would
hold the interpreter's lock while preempted, and the disk's threads would wait for it.
Each device worker thread and the control-socket thread get an L4 thread of their own
(`bind_thread`), created up front, so that any thread can raise an interrupt: the
controller's `trigger` calls irq_trigger on the calling thread's own kernel connection.

Kernel objects the HAL creates for itself at start: one gate per device (label
DEVICE_LABEL_BASE + index, bound to its register thread, the pic's to the main thread)
and one IRQ object per used line.
`BUS.open` hands a device's gate and IRQ object to whoever holds the bus gate (the root task
or the io server), who passes them on to the driver the policy names.
"""
from __future__ import annotations

import ctypes
import signal
import sys
import threading
import traceback
from typing import Any

from kernel.abi import Rights
from kernel.user.client import L4, Message, map_cap
from kernel.user.errors import KernelGone, L4Error
from kernel.user.rpc import Call, Reply, Route, RpcError, serve

from .device import Device
from .driver import free_slots
from .iommu import Iommu
from .pic import Pic
from .protocol import BUS, BUS_LABEL, DEV, DEVICE_LABEL_BASE
from .ram import Ram

PIC_LINES = 32
POLL_MS = 300          # how often the main loop looks at the stop flag
RECV_SLOTS = 3000      # capabilities drivers send us (dma_bind) land from here on


def _name_host_thread(name: str) -> None:
    """The calling host thread's name (its /proc comm, 15 bytes at most): prctl PR_SET_NAME."""
    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass                          # not Linux: the name is only a label


class DevImpl:
    """DEV protocol: the device is named by the gate's label (the kernel's word). `loop`
    is the serving loop's receive window (the Machine's or a RegisterThread's)."""

    def __init__(self, machine: "Machine", loop: Any = None) -> None:
        self.m = machine
        self.loop = machine if loop is None else loop

    def _dev(self, call: Call) -> Device:
        return self.m.by_label[call.label]

    def read(self, call: Call, reg: int) -> int:
        return self._dev(call).read(reg)

    def reads(self, call: Call, regs: list) -> list[int]:
        d = self._dev(call)
        return [d.read(r) if type(r) is int else d.read(-1) for r in regs]

    def write(self, call: Call, reg: int, value: int) -> int:
        return self._dev(call).write(reg, value)

    def writes(self, call: Call, pairs: list) -> int:
        d = self._dev(call)
        status = 0
        for p in pairs:
            ok = isinstance(p, list) and len(p) == 2 and type(p[0]) is int and type(p[1]) is int
            status = d.write(p[0], p[1]) if ok else d.write(-1, 0)
        return status

    def info(self, call: Call) -> dict:
        return self._dev(call).info()

    def dma_bind(self, call: Call) -> dict:
        """The capability that came (a task) is the device's DMA domain from now on."""
        d = self._dev(call)
        old = d.iommu.bind(call.items[0][1])
        self.loop.recv_slot = self.loop.free_recv_slot()
        self.loop.rewindow = True       # the serve loop takes the next slot as its window
        if old is not None:
            try:
                self.loop.l4.cap_delete(old)    # on the serving thread's own connection
            except L4Error:
                pass
        return d.iommu.status()


class BusImpl:
    def __init__(self, machine: "Machine") -> None:
        self.m = machine

    def devices(self, call: Call) -> list[dict]:
        return [{"name": d.name, "kind": d.kind, "line": d.line} for d in self.m.devices.values()]

    def open(self, call: Call, name: str) -> Reply:
        d = self.m.devices.get(name)
        if d is None:
            raise RpcError("NOT_FOUND", f"no device {name!r} (devices: {', '.join(self.m.devices)})")
        items = [map_cap(self.m.gate_of[name], Rights.INVOKE | Rights.GRANT)]
        if d.line is not None:
            items.append(map_cap(self.m.irq_slots[d.line], Rights.INVOKE | Rights.WRITE | Rights.GRANT))
        return Reply(d.info(), items)

    def ram(self, call: Call) -> dict:
        return {"path": self.m.ram.path, "size": self.m.ram.size}


class RegisterThread:
    """One device's register server: an L4 thread of its own bound to the device's gate,
    served by a host thread named "regs-<name>" until the machine stops."""

    def __init__(self, machine: "Machine", device: Device, label: int, index: int) -> None:
        self.m, self.device, self.label = machine, device, label
        new = machine.l4.create_thread()
        self.slot = int(new.slot)
        self.l4 = L4(machine.l4.kernel_sock, new.secret, machine.l4.caps, machine.l4.ctx,
                     machine.l4.server_key)
        self.first_slot = RECV_SLOTS + 64 * (index + 1)   # apart from the other loops' windows
        self.recv_slot = self.free_recv_slot()
        self.rewindow = False
        self.impl = DevImpl(machine, self)
        self.thread = threading.Thread(target=self._run, name=f"regs-{device.name}",
                                       daemon=True)

    def free_recv_slot(self) -> int:
        return free_slots(self.l4, 1, self.first_slot)

    def route(self, msg: Message) -> Route | None:
        return (DEV, self.impl) if msg.label == self.label else None

    def _run(self) -> None:
        _name_host_thread(threading.current_thread().name)
        self.m._tls.l4 = self.l4          # this thread's IOMMU checks and interrupts
        stop = self.m.stopping
        while not stop.is_set():
            self.rewindow = False
            try:
                serve(self.l4, self.route, name=f"{self.m.name}/{self.device.name}",
                      until=lambda: stop.is_set() or self.rewindow, timeout=POLL_MS,
                      window=(self.recv_slot, 1))
            except KernelGone:
                return
            except L4Error as e:
                print(f"[{self.m.name}] {self.device.name} registers: {e}", file=sys.stderr,
                      flush=True)


class Machine:
    def __init__(self, l4: L4, ram: Ram, devices: list[Device], pic: Pic, name: str = "hal",
                 iommu: bool = True) -> None:
        self.l4 = l4
        self.ram = ram
        self.name = name
        self.pic = pic
        self.devices: dict[str, Device] = {pic.name: pic}
        for d in devices:
            if d.name in self.devices:
                raise ValueError(f"two devices named {d.name!r}")
            self.devices[d.name] = d
        self.stopping = threading.Event()
        self.iommu = iommu and ram.att is not None    # enforcing only on the kernel's RAM
        self._tls = threading.local()
        self._tls.l4 = l4
        self._pool: list[L4] = []
        self._pool_lock = threading.Lock()
        self.by_label: dict[int, Device] = {}
        self.gate_of: dict[str, int] = {}
        self.reg_threads: list[RegisterThread] = []
        self.irq_slots: dict[int, int] = {}
        self.dev_impl = DevImpl(self)
        self.bus_impl = BusImpl(self)
        pic.trigger = self._trigger

    # -- kernel objects ---------------------------------------------------------------
    def wire(self, extra_threads: int = 1) -> None:
        """Create our gates, IRQ objects and the L4 threads of the worker threads."""
        for i, d in enumerate(self.devices.values()):
            label = DEVICE_LABEL_BASE + i
            if d is self.pic:
                self.gate_of[d.name] = self.l4.create_gate(label)
            else:
                rt = RegisterThread(self, d, label, i)
                self.reg_threads.append(rt)
                self.gate_of[d.name] = self.l4.create_gate(label, thread=rt.slot)
            self.by_label[label] = d
            if d.line is not None:
                self.irq_slots[d.line] = self.l4.create_irq()
            d.bind_thread = self.bind_thread
            d.iommu = Iommu(self.ram, self.iommu, lambda: self._tls.l4)
        self.recv_slot = self.free_recv_slot()
        self.rewindow = False
        workers = sum(getattr(d, "WORKERS", 0) for d in self.devices.values()) + extra_threads
        self._pool = [self.l4.spawn_thread() for _ in range(workers)]

    def free_recv_slot(self) -> int:
        """An empty slot of ours for the next capability a driver sends (dma_bind)."""
        return free_slots(self.l4, 1, RECV_SLOTS)

    def bind_thread(self) -> None:
        """Called first by every worker thread: take an L4 thread of our own, and give its
        host thread its Python name ("disk-disk0", "nic-tx-nic0"): the CPU reservation
        manager tells the disk's worker from the NIC's by it (servers/rt/server.py)."""
        _name_host_thread(threading.current_thread().name)
        with self._pool_lock:
            if not self._pool:
                raise RuntimeError(f"HAL {self.name}: no L4 thread left for {threading.current_thread().name}")
            self._tls.l4 = self._pool.pop()

    def _trigger(self, line: int) -> None:
        l4 = getattr(self._tls, "l4", None)
        if l4 is None:
            print(f"[{self.name}] line {line} raised on a thread without L4", file=sys.stderr)
            return
        try:
            l4.rt_try()          # the kernel's real-time port once the HAL is boosted
            l4.irq_trigger(self.irq_slots[line])
        except (L4Error, KeyError) as e:
            print(f"[{self.name}] irq_trigger line {line}: {e}", file=sys.stderr, flush=True)

    # -- the register server (main thread) ---------------------------------------------
    def route(self, msg: Message) -> Route | None:
        """The gate's label picks the protocol: the bus gate, or one device's gate."""
        if msg.label == BUS_LABEL:
            return BUS, self.bus_impl
        if msg.label in self.by_label:
            return DEV, self.dev_impl
        return None

    def serve(self) -> None:
        """Serve until `stopping` (looked at after each message and every POLL_MS)."""
        while not self.stopping.is_set():
            self.rewindow = False
            try:
                serve(self.l4, self.route, name=self.name,
                      until=lambda: self.stopping.is_set() or self.rewindow,
                      timeout=POLL_MS, window=(self.recv_slot, 1))
            except KernelGone as e:
                print(f"[{self.name}] the kernel is gone: {e}", file=sys.stderr, flush=True)
                return
            except L4Error as e:
                print(f"[{self.name}] main loop: {e}", file=sys.stderr, flush=True)

    # -- life cycle ----------------------------------------------------------------------
    def run(self, control: Any = None) -> int:
        for d in self.devices.values():
            d.start()
        for rt in self.reg_threads:
            rt.thread.start()
        if control is not None:
            control.start()
        old = signal.signal(signal.SIGTERM, lambda *a: self.stopping.set()) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            self.serve()
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
            self.shutdown(control)
        return 0

    def shutdown(self, control: Any = None) -> None:
        self.stopping.set()
        if control is not None:
            control.stop()
        for rt in self.reg_threads:            # no register access during the devices' stop
            if rt.thread.is_alive():
                rt.thread.join(POLL_MS / 1e3 * 3)
        for d in self.devices.values():
            try:
                d.stop()
            except Exception:
                traceback.print_exc()
        for rt in self.reg_threads:
            rt.l4.close()
        for t in self._pool:
            t.close()
        self.ram.close()

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "ram": {"path": self.ram.path, "size": self.ram.size},
                "devices": {n: {**d.stats(), "iommu": d.iommu.status()}
                            for n, d in self.devices.items()}}
