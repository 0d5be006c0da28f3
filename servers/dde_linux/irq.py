"""DDE/Linux interrupts: request_irq/free_irq over DDEKit's handler threads.

    ret = request_irq(irq, handler, IRQF_SHARED, "l4disk", dev_id)   # 0 or -errno
    handler(irq, dev_id) -> IRQ_HANDLED | IRQ_NONE
    disable_irq(irq); enable_irq(irq); free_irq(irq, dev_id)

Interrupt context is the line's DDEKit handler thread (servers/ddekit/interrupt.py): handlers
of a line run there one after the other, then DDEKit sends EOI. So a handler may sleep-free
lock a spinlock that process context also takes (spin_lock_irqsave is spin_lock here: the
"interrupt" is another thread, and the lock alone excludes it).

Contracts:
- request_irq answers -EBUSY if the line is attached unshared (or this request is unshared
  and the line busy), -EINVAL if no device of this driver has the line; (irq, dev_id) names
  one handler, as in Linux; a second request with the same pair is -EBUSY.
- disable_irq returns once no handler of the line runs (Linux's synchronous disable);
  from inside a handler of the line it does not wait.
- free_irq of the last handler masks the line and ends its thread. An exception escaping a
  handler is printed and counts as IRQ_NONE; the other handlers still run.
"""
from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

from servers.ddekit import interrupt as _int

from .kernel import EBUSY, EINVAL

IRQ_NONE, IRQ_HANDLED, IRQ_WAKE_THREAD = 0, 1, 2
IRQF_SHARED, IRQF_ONESHOT = 0x80, 0x2000

Handler = Callable[[int, Any], int]

_lock = threading.Lock()
_handlers: dict[tuple[int, int], tuple[int, Handler, str]] = {}   # (irq, id(dev_id)); _lock
_stats: dict[int, dict[str, int]] = {}                           # irq -> counts; _lock


def request_irq(irq: int, handler: Handler, flags: int, name: str, dev_id: Any) -> int:
    key = (irq, id(dev_id))
    with _lock:
        if key in _handlers:
            return -EBUSY

    def call(_: Any) -> None:
        try:
            ret = handler(irq, dev_id)
        except Exception:           # noqa: BLE001 - one handler must not stop the line
            traceback.print_exc()
            ret = IRQ_NONE
        with _lock:
            s = _stats.setdefault(irq, {"handled": 0, "none": 0})
            s["handled" if ret == IRQ_HANDLED else "none"] += 1
    try:
        h = _int.attach(irq, call, None, shared=bool(flags & IRQF_SHARED))
    except _int.LineBusy:
        return -EBUSY
    except _int.NoSuchLine:
        return -EINVAL
    with _lock:
        _handlers[key] = (h, handler, name)
    return 0


def free_irq(irq: int, dev_id: Any) -> None:
    with _lock:
        found = _handlers.pop((irq, id(dev_id)), None)
    if found is None:
        print(f"dde_linux: free_irq({irq}): no handler for that dev_id", flush=True)
        return
    _int.detach(irq, found[0])


def disable_irq(irq: int) -> None:
    _int.disable(irq)


def enable_irq(irq: int) -> None:
    _int.enable(irq)


def irq_stats(irq: int) -> dict[str, int]:
    with _lock:
        return dict(_stats.get(irq, {"handled": 0, "none": 0}))
