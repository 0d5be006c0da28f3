"""Rendezvous IPC: send, wait, call, reply, reply-and-wait, kernel-originated messages.

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
- Kernel-originated messages (exceptions, alien reports, page faults; declared in `abi`) are
  SendRecords with `sender=None`; a kernel *call* carries `on_reply`/`on_error`
  continuations instead of a waiting thread.
- Errors: a record that cannot be delivered fails through `fail_record`, which answers the
  sender with `State.fail` (counted) or tells the kernel's continuation. Functions that
  check a request raise AbiError; the handler's wrapper (`syscalls.run`) answers it.
- Chaos faults are injected before `send` is reached (`syscalls._send`); this module does
  not know the fault table, except through the timer of a held sender (`transport`).

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING, Any, Callable

from . import irq as _irq
from . import trace as _trace
from ..abi import (CAP_ITEMS, NEVER, AbiError, Err, Item, Items, KernelMessage, Rights, Window,
                   encode_kernel_message, encode_ok, encode_receipt)
from .objects import Gate, Thread, TState

if TYPE_CHECKING:
    from .caps import CapSpace
    from .state import State

_seq = itertools.count()

OnReply = Callable[[int, bytes | None], None]   # (proto, payload)
OnError = Callable[[Err, str], None]


class SendRecord:
    """One message in flight: a blocked sender, or a delivered call awaiting its reply."""
    __slots__ = ("sender", "gate", "label", "rights", "proto", "items", "payload", "call",
                 "window", "rcv_timeout", "key", "on_reply", "on_error", "live", "target", "mem")

    def __init__(self, sender: Thread | None, gate: Gate, rights: int, proto: int,
                 items: Items, payload: bytes | None, call: bool,
                 window: Window, rcv_timeout: int, prio: int,
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

def plan_items(src: "CapSpace | None", items: Items, dst: "CapSpace",
               window: Window) -> list[tuple[Any, ...]]:
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
# Memory items, and a message that cannot be delivered

def _plan_mem(k: "State", src: Any, items: Items, dst: Any, window: Window) -> list[Any]:
    """Check the memory items of a message (none: nothing to do, no cost)."""
    if not any(it[0] not in CAP_ITEMS for it in items):
        return []
    mwin = (window[2], window[3]) if window is not None and len(window) == 4 else None
    return k.memory.plan_items(src, items, dst, mwin)


def fail_record(k: "State", rec: SendRecord, err: Err, reason: str) -> None:
    """The message in `rec` cannot be delivered (or its reply will never come)."""
    rec.live = False
    if rec.sender is not None:
        if rec.sender.sending is rec:
            k.fail(rec.sender, err, reason)
    elif rec.on_error is not None:
        rec.on_error(err, reason)


# ---------------------------------------------------------------------------
# Send side

def route(k: "State", rec: SendRecord) -> Thread | None:
    """Find the live thread `rec`'s gate is bound to (`rec.target`); None: `rec` failed."""
    if rec.sender is not None:
        rec.sender.sending = rec
    target = rec.gate.thread
    if target is None or not target.alive:
        fail_record(k, rec, Err.PEER_DIED, f"gate {rec.gate.id} (label {rec.gate.label}) "
                                           f"is not bound to a live thread")
        return None
    rec.target = target
    return target


def send(k: "State", rec: SendRecord, timeout: int) -> None:
    """Deliver `rec` to its gate's thread now, or block the sender until `timeout`."""
    if _trace.ON:
        _trace.send(rec.sender, rec.gate, rec.proto, rec.payload, rec.call, timeout)
    target = route(k, rec)
    if target is not None:
        send_to(k, rec, target, timeout)


def send_to(k: "State", rec: SendRecord, target: Thread, timeout: int) -> None:
    """`send`, once `route` found the target."""
    if target.state == TState.RECEIVING and not target.irqs:
        try:
            deliver(k, rec, target)
        except AbiError as e:
            fail_record(k, rec, e.err, e.reason)
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


def deliver(k: "State", rec: SendRecord, target: Thread) -> None:
    """Move `rec` into `target`, which is in an open wait. Raises AbiError (nothing moved)
    if its items cannot land; the caller fails the record."""
    received: list[list[int]] = []
    if rec.items:
        src_space = rec.sender.task.space if rec.sender is not None else None
        plan = plan_items(src_space, rec.items, target.task.space, target.window)
        mplan = _plan_mem(k, rec.sender.task if rec.sender is not None else None,
                          rec.items, target.task, target.window)
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
    if _trace.ON:
        _trace.recv(rec.sender, target, rec.label, rec.proto, rec.payload, rec.call, reply)
    k.finish(target, encode_receipt(rec.label, rec.rights, reply, rec.proto, received), rec.payload)
    if not rec.call and rec.sender is not None:
        k.finish(rec.sender, encode_ok())


# ---------------------------------------------------------------------------
# Receive side

def wait(k: "State", thread: Thread, window: Window, timeout: int) -> None:
    """Open receive: a pending IRQ first, then the first blocked sender, else block."""
    thread.window = window
    thread.set_state(TState.RECEIVING)
    if thread.irqs:                        # (tested inline: this is the server loop's path)
        _irq.deliver(k, _irq.take(thread), thread)
        return
    while thread.queue:
        rec = thread.queue.pop(0)
        try:
            deliver(k, rec, thread)
            return
        except AbiError as e:
            fail_record(k, rec, e.err, e.reason)
    if timeout == 0:
        k.fail(thread, Err.TIMEOUT, "no message waiting and receive timeout is 0")
        return
    if timeout != NEVER:
        k.timers.add(timeout, thread, thread.token)


def reply(k: "State", thread: Thread, reply_id: int, proto: int,
          items: Items, payload: bytes | None) -> None:
    """Use reply capability `reply_id` once; the caller gets the reply. Raises AbiError
    (the reply capability is kept unless its caller is gone)."""
    rec = thread.replies.get(reply_id)
    if rec is None:
        raise AbiError(Err.NO_CAP, f"reply capability {reply_id} is unknown or already used")
    if not rec.live:
        del thread.replies[reply_id]
        raise AbiError(Err.PEER_DIED, f"the caller behind reply capability {reply_id} gave up "
                                      f"or died")
    caller = rec.sender
    mplan: list[Any] = []
    if caller is not None:
        plan = plan_items(thread.task.space, items, caller.task.space, rec.window)
        mplan = _plan_mem(k, thread.task, items, caller.task, rec.window)
    elif items and rec.mem is not None and all(it[0] not in CAP_ITEMS for it in items):
        # a pager answers a page fault: map around the fault address
        mplan = k.memory.plan_items(thread.task, items, rec.mem[0], rec.mem[1], rec.mem[2])
    elif items:
        raise AbiError(Err.INVALID, "the kernel's own calls accept no items in the reply")
    del thread.replies[reply_id]
    rec.live = False
    if mplan:
        received_mem = k.memory.do_items(mplan)
    if _trace.ON:
        _trace.reply(thread, caller, reply_id, proto, payload)
    if caller is None:
        if rec.on_reply is not None:
            rec.on_reply(proto, payload)
        return
    received = do_items(plan, caller.task.space)
    if mplan:
        received += received_mem
    k.count_ipc(thread, caller)
    k.finish(caller, encode_receipt(0, 0, 0, proto, received), payload)


# ---------------------------------------------------------------------------
# Kernel-originated messages

def kernel_record(gate: Gate, msg: KernelMessage, prio: int, on_reply: OnReply | None = None,
                  on_error: OnError | None = None) -> SendRecord:
    """The record of a kernel message (a call when `on_reply` is given)."""
    proto, payload = encode_kernel_message(msg)
    return SendRecord(None, gate, int(Rights.ALL), proto, [], payload, on_reply is not None,
                      None, NEVER, prio, on_reply, on_error)


def kernel_send(k: "State", gate: Gate | None, msg: KernelMessage, prio: int = 255,
                on_reply: OnReply | None = None, on_error: OnError | None = None) -> None:
    """Send (or, with `on_reply`, call) `gate` on the kernel's own behalf."""
    if gate is None or not gate.alive:
        if on_error is not None:
            on_error(Err.PEER_DIED, "no live handler gate")
        return
    send(k, kernel_record(gate, msg, prio, on_reply, on_error), NEVER)


# ---------------------------------------------------------------------------
# Timeouts and teardown

def expire(k: "State", thread: Thread) -> None:
    """`thread`'s timer ran out in its current state."""
    state = thread.state
    mem_wait = thread.mem_wait                     # an unmapper polling its shootdown
    if mem_wait is not None and state == TState.IDLE:
        mem_wait(k)
        return
    if state == TState.SENDING:
        rec = thread.sending
        if rec is not None and rec.target is not None:
            _unqueue(rec)
        k.fail(thread, Err.TIMEOUT, "send timeout: the receiver did not wait in time")
    elif state == TState.RECEIVING:
        k.fail(thread, Err.TIMEOUT, "receive timeout: no message arrived in time")
    elif state == TState.AWAIT_REPLY:
        if thread.sending is not None:
            thread.sending.live = False
        k.fail(thread, Err.TIMEOUT, "receive timeout: the reply did not arrive in time")


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


def drop_gate_senders(k: "State", gate: Gate, err: Err, reason: str) -> None:
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


def release_receiver(k: "State", thread: Thread, reason: str) -> None:
    """`thread` is going away: its blocked senders and its callers get PEER_DIED."""
    queue, thread.queue = thread.queue, []
    for rec in queue:
        fail_record(k, rec, Err.PEER_DIED, reason)
    replies, thread.replies = thread.replies, {}
    for rec in replies.values():
        if rec.live:
            fail_record(k, rec, Err.PEER_DIED, reason)

