"""Rendezvous IPC: send, wait, call, reply, reply-and-wait, IRQ delivery, kernel messages.

The mechanism (L4): a message moves only when sender and receiver meet. A sender whose
receiver is not waiting blocks (its `SendRecord` sits in the receiver thread's `queue`,
ordered by priority, then arrival) until the receiver waits or the send timeout ends. The
kernel keeps no other buffer: the blocked senders *are* the queue.

Contracts:
- The receiver learns the label of the gate the message came through and the rights of the
  capability the sender used; the sender cannot choose either.
- A call hands the receiver a one-shot reply capability (`reply` id). Using it a second time
  is NO_CAP; using it after the caller gave up (timeout, death) is PEER_DIED.
- IRQs win in an open wait: pending interrupts are delivered before blocked senders.
- Typed items (capability map/grant) are checked completely before anything moves: either
  every item lands in the receiver's window or none does and the sender gets the error.
- Kernel-originated messages (exceptions, alien reports, page faults) are SendRecords with
  `sender=None`; a kernel *call* carries `on_reply`/`on_error` continuations instead of a
  waiting thread.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import faults as _faults   # chaos: the fault table (empty: no cost but a test)
from . import memory
from ..abi import (CAP_ITEMS, NEVER, AbiError, Err, Item, Proto, Rights, encode_error,
                  encode_ok, encode_receipt, pack)
from .objects import Gate, Irq, Thread, TState

if TYPE_CHECKING:
    from .caps import CapSpace
    from .kernel import Kernel

_seq = itertools.count()

OnReply = Callable[[int, bytes | None], None]   # (proto, payload)
OnError = Callable[[Err, str], None]


class SendRecord:
    """One message in flight: a blocked sender, or a delivered call awaiting its reply."""
    __slots__ = ("sender", "gate", "label", "rights", "proto", "items", "payload", "call",
                 "window", "rcv_timeout", "key", "on_reply", "on_error", "live", "target", "mem")

    def __init__(self, sender: Thread | None, gate: Gate, rights: int, proto: int,
                 items: list[tuple[int, int, int]], payload: bytes | None, call: bool,
                 window: tuple[int, int] | None, rcv_timeout: int, prio: int,
                 on_reply: OnReply | None = None, on_error: OnError | None = None) -> None:
        self.sender = sender
        self.gate = gate
        self.label = gate.label
        self.rights = rights
        self.proto = proto
        self.items = items
        self.payload = payload
        self.call = call
        self.window = window
        self.rcv_timeout = rcv_timeout
        self.key = (-prio, next(_seq))
        self.on_reply = on_reply
        self.on_error = on_error
        self.live = True        # the caller still waits for the reply
        self.target: Thread | None = None
        # A kernel page-fault call: (faulting task, memory window, fault address) — the
        # pager's reply maps into that task (memory.fault).
        self.mem: tuple[Any, tuple[int, int], int] | None = None

    def __lt__(self, other: "SendRecord") -> bool:
        return self.key < other.key


# ---------------------------------------------------------------------------
# Typed items: check everything, then move.

def plan_items(src: "CapSpace | None", items: list[tuple[int, int, int]],
               dst: "CapSpace", window: tuple[int, int] | None) -> list[tuple[Any, ...]]:
    """Check that every item can move into `window` of `dst`. Raises AbiError, moves nothing."""
    items = [it for it in items if it[0] in CAP_ITEMS]     # memory items: memory.plan_items
    if not items:
        return []
    if src is None:
        raise AbiError(Err.INVALID, "kernel messages carry no items")
    base, count = window[:2] if window is not None else (0, 0)
    if len(items) > count:
        raise AbiError(Err.INVALID, f"the receiver's window takes {count} capabilities, "
                                    f"the message carries {len(items)}")
    plan = []
    seen: set[int] = set()
    for i, (kind, slot, mask) in enumerate(items):
        node = src.lookup(slot, need=Rights.GRANT)
        if slot in seen:
            raise AbiError(Err.INVALID, f"item {i}: slot {slot} is sent twice")
        seen.add(slot)
        dst_slot = base + i
        if dst_slot in dst.slots and not (kind == Item.GRANT_CAP and dst.slots[dst_slot] is node):
            raise AbiError(Err.BUSY, f"the receiver's window slot {dst_slot} is in use")
        plan.append((kind, node, dst_slot, mask))
    return plan


def do_items(plan: list[tuple[Any, ...]], dst: "CapSpace") -> list[list[int]]:
    out = []
    for kind, node, dst_slot, mask in plan:
        if kind == Item.MAP_CAP:
            new = dst.derive(node, dst_slot, mask)
        else:
            dst.move_in(node, dst_slot)
            node.rights &= mask
            new = node
        out.append([int(kind), dst_slot, int(new.rights)])
    return out


# ---------------------------------------------------------------------------
# Answers

def _plan_mem(k: "Kernel", src: Any, items: Sequence[tuple[int, ...]], dst: Any,
              window: tuple[int, ...] | None) -> list[Any]:
    """Check the memory items of a message (none: nothing to do, no cost)."""
    if not any(it[0] not in CAP_ITEMS for it in items):
        return []
    mwin = (window[2], window[3]) if window is not None and len(window) == 4 else None
    return k.memory.plan_items(src, items, dst, mwin)


def finish(k: "Kernel", thread: Thread, header: bytes, payload: bytes | None = None) -> None:
    """The thread's call is complete: leave any blocking state and send the answer."""
    thread.set_state(TState.IDLE)
    thread.sending = None
    k.answer(thread, header, payload)


def fail(k: "Kernel", thread: Thread, err: Err, reason: str) -> None:
    finish(k, thread, encode_error(err, reason))


def fail_record(k: "Kernel", rec: SendRecord, err: Err, reason: str) -> None:
    """The message in `rec` cannot be delivered (or its reply will never come)."""
    rec.live = False
    if rec.sender is not None:
        if rec.sender.sending is rec:
            fail(k, rec.sender, err, reason)
    elif rec.on_error is not None:
        rec.on_error(err, reason)


# ---------------------------------------------------------------------------
# Send side

def send(k: "Kernel", rec: SendRecord, timeout: int) -> None:
    """Deliver `rec` to its gate's thread now, or block the sender until `timeout`."""
    if rec.sender is not None:
        rec.sender.sending = rec
    target = rec.gate.thread
    if target is None or not target.alive:
        fail_record(k, rec, Err.PEER_DIED, f"gate {rec.gate.id} (label {rec.gate.label}) "
                                           f"is not bound to a live thread")
        return
    rec.target = target
    if _faults.ARMED and _faults.intercept(k, rec, timeout):
        return      # an injected fault took the message over (kernel/core/faults.py)
    if target.state == TState.RECEIVING and not target.irqs:
        err = deliver(k, rec, target)
        if err is None:
            return
        fail_record(k, rec, *err)
        return
    if timeout == 0:
        fail_record(k, rec, Err.TIMEOUT, "receiver not ready and send timeout is 0")
        return
    bisect.insort(target.queue, rec)
    if rec.sender is not None:
        rec.sender.sending = rec
        token = rec.sender.set_state(TState.SENDING)
        if timeout != NEVER:
            k.timers.add(timeout, rec.sender, token)


def deliver(k: "Kernel", rec: SendRecord, target: Thread) -> tuple[Err, str] | None:
    """Move `rec` into `target`, which is in an open wait. Answers an error or None."""
    received: list[list[int]] = []
    if rec.items:
        src_space = rec.sender.task.space if rec.sender is not None else None
        try:
            plan = plan_items(src_space, rec.items, target.task.space, target.window)
            mplan = _plan_mem(k, rec.sender.task if rec.sender is not None else None,
                              rec.items, target.task, target.window)
        except AbiError as e:
            return (e.err, e.reason)
        received = do_items(plan, target.task.space)
        if mplan:
            received += k.memory.do_items(mplan)
    reply = 0
    if rec.call:
        reply = target.next_reply
        target.next_reply += 1
        target.replies[reply] = rec
        if rec.sender is not None:
            rec.sender.sending = rec
            token = rec.sender.set_state(TState.AWAIT_REPLY)
            if rec.rcv_timeout != NEVER:
                k.timers.add(rec.rcv_timeout, rec.sender, token)
    k.count_ipc(rec.sender, target)
    finish(k, target, encode_receipt(rec.label, rec.rights, reply, rec.proto, received), rec.payload)
    if not rec.call and rec.sender is not None:
        finish(k, rec.sender, encode_ok())
    return None


# ---------------------------------------------------------------------------
# Receive side

def wait(k: "Kernel", thread: Thread, window: tuple[int, int] | None, timeout: int) -> None:
    """Open receive: a pending IRQ first, then the first blocked sender, else block."""
    thread.window = window
    thread.set_state(TState.RECEIVING)
    if thread.irqs:
        deliver_irq(k, thread.irqs.pop(0), thread)
        return
    while thread.queue:
        rec = thread.queue.pop(0)
        err = deliver(k, rec, thread)
        if err is None:
            return
        fail_record(k, rec, *err)
    if timeout == 0:
        fail(k, thread, Err.TIMEOUT, "no message waiting and receive timeout is 0")
        return
    if timeout != NEVER:
        k.timers.add(timeout, thread, thread.token)


def reply(k: "Kernel", thread: Thread, reply_id: int, proto: int,
          items: list[tuple[int, int, int]], payload: bytes | None) -> tuple[Err, str] | None:
    """Use reply capability `reply_id` once. Answers an error or None (the caller has it)."""
    rec = thread.replies.get(reply_id)
    if rec is None:
        return (Err.NO_CAP, f"reply capability {reply_id} is unknown or already used")
    if not rec.live:
        del thread.replies[reply_id]
        return (Err.PEER_DIED, f"the caller behind reply capability {reply_id} gave up or died")
    caller = rec.sender
    mplan: list[Any] = []
    if caller is not None:
        try:
            plan = plan_items(thread.task.space, items, caller.task.space, rec.window)
            mplan = _plan_mem(k, thread.task, items, caller.task, rec.window)
        except AbiError as e:
            return (e.err, e.reason)
    elif items and rec.mem is not None and all(it[0] not in CAP_ITEMS for it in items):
        try:        # a pager answers a page fault: map around the fault address
            mplan = k.memory.plan_items(thread.task, items, rec.mem[0], rec.mem[1], rec.mem[2])
        except AbiError as e:
            return (e.err, e.reason)
    elif items:
        return (Err.INVALID, "the kernel's own calls accept no items in the reply")
    del thread.replies[reply_id]
    rec.live = False
    if mplan:
        received_mem = k.memory.do_items(mplan)
    if caller is None:
        if rec.on_reply is not None:
            rec.on_reply(proto, payload)
        return None
    received = do_items(plan, caller.task.space)
    if mplan:
        received += received_mem
    k.count_ipc(thread, caller)
    finish(k, caller, encode_receipt(0, 0, 0, proto, received), payload)
    return None


# ---------------------------------------------------------------------------
# IRQs

def trigger(k: "Kernel", irq: Irq) -> None:
    irq.pending += 1
    thread = irq.thread
    if irq.masked or thread is None:
        return
    if thread.state == TState.RECEIVING:
        deliver_irq(k, irq, thread)
    elif irq not in thread.irqs:
        thread.irqs.append(irq)


def deliver_irq(k: "Kernel", irq: Irq, thread: Thread) -> None:
    count, irq.pending = irq.pending, 0
    finish(k, thread, encode_receipt(irq.label, int(Rights.INVOKE), 0, int(Proto.IRQ), []),
           pack({"irq": irq.id, "count": count}))


def unmask(k: "Kernel", irq: Irq) -> None:
    irq.masked = False
    if irq.pending and irq.thread is not None:
        irq.pending -= 1    # trigger() counts it again
        trigger(k, irq)


# ---------------------------------------------------------------------------
# Kernel-originated messages

def kernel_send(k: "Kernel", gate: Gate | None, proto: Proto, body: dict[str, Any],
                prio: int = 255, on_reply: OnReply | None = None,
                on_error: OnError | None = None) -> None:
    """Send (or, with `on_reply`, call) `gate` on the kernel's own behalf."""
    if gate is None or not gate.alive:
        if on_error is not None:
            on_error(Err.PEER_DIED, "no live handler gate")
        return
    rec = SendRecord(None, gate, int(Rights.ALL), int(proto), [], pack(body),
                     on_reply is not None, None, NEVER, prio, on_reply, on_error)
    send(k, rec, NEVER)


# ---------------------------------------------------------------------------
# Timeouts and teardown

def expire(k: "Kernel", thread: Thread) -> None:
    """`thread`'s timer ran out in its current state."""
    state = thread.state
    mem_wait = thread.mem_wait                     # an unmapper polling its shootdown
    if mem_wait is not None and state == TState.IDLE:
        mem_wait(k)
        return
    if state == TState.SENDING:
        if _faults.HELD and _faults.release(k, thread):
            return      # an injected delay ended: the held message goes on (kernel/core/faults.py)
        rec = thread.sending
        if rec is not None and rec.target is not None:
            _unqueue(rec)
        fail(k, thread, Err.TIMEOUT, "send timeout: the receiver did not wait in time")
    elif state == TState.RECEIVING:
        fail(k, thread, Err.TIMEOUT, "receive timeout: no message arrived in time")
    elif state == TState.AWAIT_REPLY:
        if thread.sending is not None:
            thread.sending.live = False
        fail(k, thread, Err.TIMEOUT, "receive timeout: the reply did not arrive in time")


def _unqueue(rec: SendRecord) -> None:
    if rec.target is not None:
        try:
            rec.target.queue.remove(rec)
        except ValueError:
            pass


def cancel_sender(rec: SendRecord) -> None:
    """Take a blocked sender's record off its queue (its thread is going away)."""
    rec.live = False
    _unqueue(rec)


def drop_gate_senders(k: "Kernel", gate: Gate, err: Err, reason: str) -> None:
    """Every sender blocked on `gate` gets `err`."""
    thread = gate.thread
    if thread is None:
        return
    mine = [r for r in thread.queue if r.gate is gate]
    if not mine:
        return
    thread.queue = [r for r in thread.queue if r.gate is not gate]
    for rec in mine:
        fail_record(k, rec, err, reason)


def release_receiver(k: "Kernel", thread: Thread, reason: str) -> None:
    """`thread` is going away: its blocked senders and its callers get PEER_DIED."""
    queue, thread.queue = thread.queue, []
    for rec in queue:
        fail_record(k, rec, Err.PEER_DIED, reason)
    replies, thread.replies = thread.replies, {}
    for rec in replies.values():
        if rec.live:
            fail_record(k, rec, Err.PEER_DIED, reason)

