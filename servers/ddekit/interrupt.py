"""DDEKit interrupts: a handler thread per IRQ line, fed by the kernel's IRQ objects.

    h = interrupt.attach(line, handler, arg=None, shared=False, thread_init=None)
    interrupt.disable(line); interrupt.enable(line)
    interrupt.detach(line, h)        # one handler; detach(line) removes them all
    interrupt.count(line) -> int     # interrupts handled on the line so far

The line must belong to a device this driver requested (servers/ddekit/bus.py): its IRQ
object, which io granted with WRITE, is attached (IRQ_ATTACH) to the line's handler thread,
a DDEKit thread "irq-N" with an L4 thread of its own, under the label IRQ_LABEL_BASE + N.
Interrupts arrive there as `Proto.IRQ` IPC; the thread calls every handler of the line in
the order attached (`handler(arg)`), then writes EOI to the device's IRQ_CTRL (hal/DEVICES.md:
the line stays in service, delivering nothing more, until EOI). `thread_init(arg)` runs in
the handler thread before its first interrupt. A stop gate bound to the thread (label
STOP_LABEL) ends it.

Contracts:
- A line is attached `shared` or not: a second attach to a line attached unshared (or an
  unshared attach to a busy line) raises `LineBusy`.
- `attach` unmasks the line at the controller (lines are masked at reset). `disable` masks
  it and returns once no interrupt of the line is in service, so no handler of the line runs
  after it returns until `enable`; raises meanwhile are held by the controller (coalesced)
  and delivered on `enable`.
- `detach` of the last handler masks the line, detaches the IRQ objects and ends the thread
  (its kernel thread and stop gate are destroyed: quota goes back). From inside a handler it
  takes effect when the handlers of that interrupt return.
- An exception in a handler is printed; the other handlers still run and EOI is still sent.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from hal.device import IrqCtrl
from kernel.abi import Proto

from . import bus as _bus
from . import env as _env
from . import thread as _thread

IRQ_LABEL_BASE = 0x1E000
STOP_LABEL = 0x1DFFF
IN_SERVICE = 0x4                 # IRQ_CTRL read: bit2, delivered and not yet EOI'd
DISABLE_WAIT_S = 5.0
STOP_TIMEOUT_MS = 10_000


class LineBusy(RuntimeError):
    """The line is attached unshared (or attached shared and asked for unshared)."""


class NoSuchLine(LookupError):
    """No requested device has that interrupt line, or nothing is attached to it."""


@dataclass
class _Line:
    line: int
    shared: bool
    devices: list[_bus.Device]
    handlers: list[tuple[int, Callable[[Any], Any], Any]] = field(default_factory=list)
    thread: _thread.Thread | None = None
    gate: int | None = None
    handled: int = 0
    stopping: bool = False


_lock = threading.Lock()
_lines: dict[int, _Line] = {}          # guarded by _lock
_ids = itertools.count(1)


def _devices_on(line: int) -> list[_bus.Device]:
    devs = [d for d in _bus.requested() if d.info.irq == line and d.irq_cap is not None]
    if not devs:
        raise NoSuchLine(f"no requested device has interrupt line {line} "
                         f"(request the device through ddekit.bus first)")
    return devs


def attach(line: int, handler: Callable[[Any], Any], arg: Any = None, shared: bool = False,
           thread_init: Callable[[Any], Any] | None = None) -> int:
    """Add `handler(arg)` to `line`; answers a handle for `detach`."""
    hid = next(_ids)
    with _lock:
        ln = _lines.get(line)
        if ln is not None:
            if not (shared and ln.shared):
                raise LineBusy(f"interrupt line {line} is attached "
                               f"{'shared' if ln.shared else 'unshared'}; this attach is "
                               f"{'shared' if shared else 'unshared'}")
            ln.handlers.append((hid, handler, arg))
            return hid
        ln = _lines[line] = _Line(line, shared, _devices_on(line), [(hid, handler, arg)])
    try:
        _start(ln, thread_init, arg)
    except BaseException:
        with _lock:
            _lines.pop(line, None)
        raise
    return hid


def _start(ln: _Line, thread_init: Callable[[Any], Any] | None, arg: Any) -> None:
    env = _env.get()
    ln.thread = t = _thread.create(f"irq-{ln.line}", _serve, (ln, thread_init, arg))
    ln.gate = env.kcall(lambda svc: svc.create_gate(STOP_LABEL, thread=t.slot))
    for d in ln.devices:
        env.kcall(lambda svc: svc.irq_attach(d.irq_cap, t.slot, IRQ_LABEL_BASE + ln.line))
    # A driver that died inside its handler left the line in service: nothing would ever be
    # delivered to its successor. EOI first (harmless on a line not in service), then unmask.
    ln.devices[0].write("IRQ_CTRL", int(IrqCtrl.EOI))
    ln.devices[0].write("IRQ_CTRL", int(IrqCtrl.UNMASK))


def _serve(state: tuple[_Line, Callable[[Any], Any] | None, Any]) -> None:
    ln, thread_init, arg = state
    l4 = _thread.my_l4()
    if thread_init is not None:
        thread_init(arg)
    while not ln.stopping:
        msg = l4.wait(timeout=None)
        if msg.proto != Proto.IRQ:
            if msg.label == STOP_LABEL:
                if msg.reply:
                    l4.reply(msg.reply)
                return
            continue
        with _lock:
            handlers = list(ln.handlers)
        for _, fn, harg in handlers:
            try:
                fn(harg)
            except Exception:           # noqa: BLE001 - one handler must not stop the line
                print(f"ddekit: handler of interrupt line {ln.line} failed", flush=True)
                traceback.print_exc()
        ln.handled += 1
        ln.devices[0].write("IRQ_CTRL", int(IrqCtrl.EOI))
        l4.rt_try()       # the kernel's real-time port, once the CPU manager boosts this thread


def _line(line: int) -> _Line:
    with _lock:
        ln = _lines.get(line)
    if ln is None:
        raise NoSuchLine(f"nothing is attached to interrupt line {line}")
    return ln


def _in_handler(ln: _Line) -> bool:
    try:
        return _thread.current() is ln.thread
    except RuntimeError:
        return False


def disable(line: int) -> None:
    ln = _line(line)
    ln.devices[0].write("IRQ_CTRL", int(IrqCtrl.MASK))
    if _in_handler(ln):
        return                          # our own EOI comes after the handlers return
    deadline = time.monotonic() + DISABLE_WAIT_S
    while ln.devices[0].read("IRQ_CTRL") & IN_SERVICE:
        if time.monotonic() > deadline:
            raise TimeoutError(f"interrupt line {line} stays in service (a handler hangs?)")
        time.sleep(0.001)


def enable(line: int) -> None:
    _line(line).devices[0].write("IRQ_CTRL", int(IrqCtrl.UNMASK))


def count(line: int) -> int:
    return _line(line).handled


def detach(line: int, handle: int | None = None) -> None:
    """Remove handler `handle` (None: all) from `line`; the last one ends the line's thread."""
    with _lock:
        ln = _lines.get(line)
        if ln is None:
            raise NoSuchLine(f"nothing is attached to interrupt line {line}")
        if handle is not None and all(h != handle for h, _, _ in ln.handlers):
            raise NoSuchLine(f"no handler {handle} on interrupt line {line}")
        ln.handlers = [h for h in ln.handlers if handle is not None and h[0] != handle]
        if ln.handlers:
            return
        del _lines[line]
    _stop(ln)


def _stop(ln: _Line) -> None:
    env = _env.get()
    try:
        ln.devices[0].write("IRQ_CTRL", int(IrqCtrl.MASK))
    except Exception:                   # noqa: BLE001 - the device may be gone (HAL restart)
        pass
    t = ln.thread
    assert t is not None
    for d in ln.devices:
        try:
            env.kcall(lambda svc: svc.irq_attach(d.irq_cap, None, 0))
        except Exception:               # noqa: BLE001 - a revoked IRQ is detached already
            pass
    ln.stopping = True
    if not _in_handler(ln) and ln.gate is not None:
        try:
            _thread.my_l4().call(ln.gate, b"", snd_timeout=STOP_TIMEOUT_MS,
                                 rcv_timeout=STOP_TIMEOUT_MS)
        except Exception:               # noqa: BLE001 - it ended already
            pass
        t.join(STOP_TIMEOUT_MS / 1e3)
    env.cap_delete(ln.gate)


def device_gone(dev: _bus.Device) -> None:
    """bus.release: detach every line that uses the device's IRQ object."""
    with _lock:
        lines = [n for n, ln in _lines.items() if any(d is dev for d in ln.devices)]
    for n in lines:
        detach(n)


def detach_all() -> None:
    with _lock:
        lines = list(_lines)
    for n in lines:
        try:
            detach(n)
        except Exception as e:          # noqa: BLE001 - stop goes on
            print(f"ddekit: could not detach interrupt line {n}: {e}", flush=True)
