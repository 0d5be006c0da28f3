"""IRQ objects: attach, trigger, deliver, mask/unmask, detach — the whole mechanism.

An `Irq` counts its triggers (`pending`) and, attached to a thread with a label, delivers
them as one Proto.IRQ message (`abi.IrqMessage`, reply 0, rights INVOKE) the next time that
thread is in an open wait; IRQs win over blocked senders there (`ipc.wait` asks `take`).

Invariants:
- `Irq.thread` and `Thread.attached_irqs` agree: `attach` keeps both in step, so a dying
  thread finds every IRQ attached to it, pending or not.
- `Thread.irqs` (the thread's pending list, in trigger order) holds an IRQ only while it is
  attached to that thread, unmasked and pending. `_unpend` is the one way out of it.
- A masked IRQ keeps counting; unmasking delivers what is pending.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..abi import IrqMessage, ObjType, Rights, encode_kernel_message, encode_receipt
from . import trace
from .objects import Factory, KObject, Thread, TState

if TYPE_CHECKING:
    from .state import State

_INVOKE = int(Rights.INVOKE)


class Irq(KObject):
    kind = ObjType.IRQ

    def __init__(self, factory: Factory | None) -> None:
        super().__init__(factory)
        self.label = 0
        self.thread: Thread | None = None      # change only through `attach`
        self.pending = 0
        self.masked = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "label": self.label, "pending": self.pending,
                "masked": self.masked, "thread": self.thread.id if self.thread else None}


def _unpend(irq: Irq) -> None:
    """Take `irq` off its thread's pending list (if it is there)."""
    if irq.thread is not None and irq in irq.thread.irqs:
        irq.thread.irqs.remove(irq)


def _bind(irq: Irq, thread: Thread | None) -> None:
    if irq.thread is not None:
        irq.thread.attached_irqs.discard(irq)
    irq.thread = thread
    if thread is not None:
        thread.attached_irqs.add(irq)


def attach(k: "State", irq: Irq, thread: Thread | None, label: int) -> None:
    """Attach to `thread` (None: detach) with `label`; what is pending is delivered to it."""
    _unpend(irq)
    _bind(irq, thread)
    irq.label = label
    if irq.pending and thread is not None and not irq.masked:
        irq.pending -= 1      # trigger() counts it again
        trigger(k, irq)


def trigger(k: "State", irq: Irq) -> None:
    irq.pending += 1
    thread = irq.thread
    if irq.masked or thread is None:
        return
    if thread.state == TState.RECEIVING:
        deliver(k, irq, thread)
    elif irq not in thread.irqs:
        thread.irqs.append(irq)


def take(thread: Thread) -> Irq:
    """The first pending IRQ of `thread` (it has one), taken off its list: an open wait
    delivers it."""
    return thread.irqs.pop(0)


def deliver(k: "State", irq: Irq, thread: Thread) -> None:
    count, irq.pending = irq.pending, 0
    if trace.ON:
        trace.irq(irq.id, thread, irq.label, count)
    proto, payload = encode_kernel_message(IrqMessage(irq.id, count))
    k.finish(thread, encode_receipt(irq.label, _INVOKE, 0, proto, []), payload)


def mask(k: "State", irq: Irq, masked: bool | None) -> None:
    """True masks (pending triggers are kept, not delivered), False unmasks, None asks."""
    if masked is True:
        irq.masked = True
        _unpend(irq)
    elif masked is False and irq.masked:
        irq.masked = False
        if irq.pending and irq.thread is not None:
            irq.pending -= 1    # trigger() counts it again
            trigger(k, irq)


def destroyed(irq: Irq) -> None:
    """The IRQ object is gone: it leaves its thread."""
    _unpend(irq)
    _bind(irq, None)


def thread_gone(thread: Thread) -> None:
    """`thread` is dying: every IRQ attached to it, pending or not, is detached."""
    for irq in list(thread.attached_irqs):
        _bind(irq, None)
    thread.irqs = []
