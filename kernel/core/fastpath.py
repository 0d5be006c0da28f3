"""The IPC fast path: the two calls every client/server exchange is made of, done inline.

A `call` (delivered to a receiver that waits, or blocked in its queue) and a
`reply_and_wait` that answers a live caller and then receives make up nearly all IPC.
Through the generic path each costs about ten Python calls (decode, dispatch table,
handler, SendRecord checks, item planning, delivery, finish, answer); here the same steps
are written out once.

Contract: `try_fast` either does the whole call with exactly the semantics of the generic
path (`ipc.send`/`ipc.deliver`/`ipc.reply`/`ipc.wait`: same checks, same state changes,
same answers, same counters) and returns True, or changes nothing and returns False, and
the generic path runs. It declines everything uncommon: typed items, receive windows, alien
threads, armed chaos faults, a send timeout of 0 to a receiver that is not waiting, errors
of any kind (so every error answer keeps coming from one place, `State.fail`).
`tests/kernel/test_fastpath.py` runs the same exchanges with the fast path on and off and
compares every answer.

Two implementations, one semantics:
- **compiled** (`_fastpath.pyx`, built by `pip install -e .` when Cython and a C compiler are
  there): the event loop waits through `compiled.poll` (the waitset's epoll wait, in C),
  which drains ready ports itself and waits again until something else is ready or a timer
  is due; `compiled.drain` receives each
  message through libzmq's C API, reads the request header with an inline msgpack reader,
  and serves a call to a waiting receiver (or blocks it in the receiver's queue), a
  reply_and_wait answering a live caller, and the receive that follows (a queued sender
  without items is delivered, or the thread waits) — no Python bytecode runs for such a
  message. It declines more than this module does: tracing on, and every request that
  would set a timer (a finite timeout that is reached); such a message, and every other,
  goes unchanged to `transport._handle`, i.e. to `try_fast` below and the generic path.
- **python** (`try_fast` here): the reference the differential test holds the compiled
  path to; what runs when the extension is not built, or with `L4PY_FASTPATH=python`.

State: one owner, one representation. The compiled code keeps no state of its own; it
reads and writes the Python kernel's objects (Thread, Gate, CapNode, SendRecord, State's
counters) through the C API — attribute and dict operations, no bytecode. So nothing is
synced by hand, and a state change made by either path is the other's input. The price is
that C reads attributes by name rather than typed fields, which is still far below the cost
of the interpreter; the records it builds must have the slots it knows (`_fastpath.ERROR`
says when `ipc.SendRecord` changed, and the Python path runs). `KIND` says which path runs;
`python -m kernel` logs it, KERNEL_INFO and `l4run bench ipc` report it (`fast_path`).

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

from bisect import insort
from typing import TYPE_CHECKING, Any

import msgpack

from . import faults as _faults
from . import trace as _trace
from ..abi import (FAST_SHAPES, MAX_HEADER, MAX_PAYLOAD, NEVER, CallArgs, ReplyWaitArgs, Rights,
                   Sys, encode_receipt, offset)
from ..osutil import load_compiled
from .ipc import SendRecord, wait
from .objects import Gate, Thread, TState

if TYPE_CHECKING:
    from .state import State

_CALL = int(Sys.CALL)
_REPLY_WAIT = int(Sys.REPLY_WAIT)
# the shapes abi.decode_request checks inline (no items, no window; ints in range)
_CALL_SHAPE, _RW_SHAPE = FAST_SHAPES[Sys.CALL], FAST_SHAPES[Sys.REPLY_WAIT]
# The checked request array is read at the offsets of the records' fields: building the
# record itself (slice + tuple) cost ~0.3 µs a request when measured, some 7% of this path's
# time; the generic path builds it.
_CAP, _PROTO, _SND_TIMEOUT, _RCV_TIMEOUT = (
    offset(CallArgs, f) for f in ("cap", "proto", "snd_timeout", "rcv_timeout"))
_REPLY, _RW_PROTO, _TIMEOUT = (offset(ReplyWaitArgs, f) for f in ("reply", "proto", "timeout"))
_INVOKE = int(Rights.INVOKE)
_RECEIVING, _IDLE, _AWAIT, _SENDING = (TState.RECEIVING, TState.IDLE, TState.AWAIT_REPLY,
                                       TState.SENDING)
_unpackb = msgpack.unpackb
_NO_ITEMS: list = []

# kernel.core._fastpath, when built and usable; WHY_PYTHON says why not, if it is not.
# (imported by name: the compiled module is no .py of the layer map; it imports only modules
# listed before this one)
compiled, WHY_PYTHON = load_compiled("kernel.core._fastpath", "L4PY_FASTPATH",
                                     "the compiled fast path")
if compiled is not None:
    compiled.init(_NO_ITEMS)
KIND = "compiled" if compiled is not None else "python"


def try_fast(k: "State", thread: Thread | None, header: bytes, payload: bytes | None) -> bool:
    """Serve a CALL or REPLY_WAIT request of `thread` (the connection's thread, if it is
    one) inline; False: nothing was done."""
    if (thread is None or thread.busy or thread.alien or len(header) > MAX_HEADER
            or _faults.ARMED or (payload is not None and len(payload) > MAX_PAYLOAD)):
        return False
    try:
        r = _unpackb(header, raw=False, strict_map_key=True)
    except Exception:
        return False
    if type(r) is not list or not r:
        return False
    op = r[0]
    if op == _CALL:
        return _CALL_SHAPE(r) and _call(k, thread, r[_CAP], r[_PROTO], r[_SND_TIMEOUT],
                                        r[_RCV_TIMEOUT], payload)
    if op == _REPLY_WAIT:
        return _RW_SHAPE(r) and _reply_wait(k, thread, r[_REPLY], r[_RW_PROTO], r[_TIMEOUT],
                                            payload)
    return False


def _call(k: "State", th: Thread, cap: int, proto: int, snd_timeout: int, rcv_timeout: int,
          payload: bytes | None) -> bool:
    node = th.task.space.slots.get(cap)
    if node is None or proto < 0 or not node.rights & _INVOKE:
        return False
    gate = node.obj
    if type(gate) is not Gate:
        return False
    target = gate.thread
    if target is None or not target.alive:
        return False
    waiting = target.state == _RECEIVING and not target.irqs
    if not waiting and snd_timeout == 0:
        return False                       # the generic path answers TIMEOUT
    # Accepted: ipc.send for a message without items, then ipc.deliver or blocking.
    th.busy = True
    th.task.stats["calls"] += 1
    handled = k.handled
    handled[_CALL] = handled.get(_CALL, 0) + 1     # as syscalls.run counts it
    rec = SendRecord(th, gate, node.rights, proto, _NO_ITEMS, payload, True, None,
                     rcv_timeout, th.priority)
    rec.target = target
    th.sending = rec
    if not waiting:                        # blocked in the receiver's queue
        insort(target.queue, rec)
        if _trace.ON:
            _trace.send(th, gate, proto, payload, True, snd_timeout)
        token = th.set_state(_SENDING)
        if snd_timeout != NEVER:
            k.timers.add(snd_timeout, th, token)
        return True
    reply = target.next_reply
    target.next_reply = reply + 1
    target.replies[reply] = rec
    token = th.set_state(_AWAIT)
    if rcv_timeout != NEVER:
        k.timers.add(rcv_timeout, th, token)
    k.count_ipc(th, target)
    if _trace.ON:                          # the one flag test of this path
        _trace.send(th, gate, proto, payload, True, snd_timeout)
        _trace.recv(th, target, rec.label, proto, payload, True, reply)
    _finish(k, target, encode_receipt(rec.label, rec.rights, reply, proto, _NO_ITEMS), payload)
    return True


def _reply_wait(k: "State", th: Thread, reply_id: int, proto: int, timeout: int,
                payload: bytes | None) -> bool:
    rec = th.replies.get(reply_id)
    if rec is None or not rec.live:
        return False
    caller = rec.sender
    if caller is None:           # the answer to a kernel call (page fault, alien report)
        return False
    # Accepted: ipc.reply for a reply without items, then ipc.wait without a window.
    th.busy = True
    th.task.stats["calls"] += 1
    handled = k.handled
    handled[_REPLY_WAIT] = handled.get(_REPLY_WAIT, 0) + 1
    del th.replies[reply_id]
    rec.live = False
    k.count_ipc(th, caller)
    if _trace.ON:
        _trace.reply(th, caller, reply_id, proto, payload)
    _finish(k, caller, encode_receipt(0, 0, 0, proto, _NO_ITEMS), payload)
    wait(k, th, None, timeout)
    return True


def _finish(k: "State", th: Thread, header: bytes, payload: bytes | None) -> None:
    """`State.finish` and `State.answer` in one call: straight to the wire, unless an alien
    report takes the answer first."""
    th.set_state(_IDLE)
    th.sending = None
    if th.on_answer is None:
        th.busy = False
        k.wire.answer(th, header, payload)
    else:
        k.answer(th, header, payload)
