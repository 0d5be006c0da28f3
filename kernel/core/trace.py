"""The IPC trace: a bounded ring of what the kernel did, for `l4run trace` (TRACE).

While `ON`, the mechanisms append one event per thing that happened — a message sent
(`send`), delivered (`recv`), replied to (`reply`), an error answered (`error`: timeouts and
every other code, from `State.fail`), a page fault and how it was resolved (`pf`: one event
when it is taken, one more when a pager's answer resolves it), an alien
thread's report (`alien`) and a trapped Linux system call (`linux`), an IRQ delivered
(`irq`), a task's death (`death`), a chaos injection (`chaos`). Each event is a dict with
`seq`, `ts` (time.monotonic_ns), `ev`, and the ids and names of the threads and tasks in it,
so a drained trace needs nothing else to be read (tasks may be gone by then).

The ring holds each event as a flat tuple `(seq, ts, ev, values)`, `values` in the order of
`FIELDS[ev]`; the dicts are made when the ring is drained, so recording costs a tuple and
an append (the hot path's price while on; `l4run bench ipc` reports it as trace_overhead).

Contracts:
- Off by default. When off the hot paths pay one flag test each: the hooks are written
  `if _trace.ON: _trace.recv(...)` at the call site, never a call that tests inside.
- Bounded: the ring holds at most `capacity` events (collections.deque(maxlen)); the oldest
  go first and are counted in `dropped` (recorded − drained − held: the deque drops them by
  itself, nothing is counted per event). Draining removes what it answers, oldest first.
  `seq` starts at 1 with each `on`.
- A message is paired by its sender thread: a thread has at most one call in flight, so
  its `send`, the `recv` that hands it over (with the server's reply id) and the `reply`
  (naming that caller) or the `error` that ends it belong together.
- Recording never changes what the kernel answers.

Ownership: the kernel's event-loop thread only (module state, like `faults`).
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objects import Task, Thread

DEFAULT_CAPACITY = 65536
MAX_CAPACITY = 1 << 20
MAX_DRAIN = 4096            # events one TRACE drain answers at most (the answer stays small)

_WHO = ("th", "task", "name")
_TO = ("to_th", "to_task", "to_name")
FIELDS: dict[str, tuple[str, ...]] = {       # the names of each event's values, in order
    "send": _WHO + ("gate", "label", "proto", "size", "call", "timeout"),
    "recv": _WHO + _TO + ("label", "proto", "size", "call", "reply"),
    "reply": _WHO + _TO + ("reply", "proto", "size"),
    "error": _WHO + ("err", "reason"),
    "pf": _WHO + ("vaddr", "access", "how") + _TO,     # _TO only when sent to a pager
    "alien": _WHO + ("sysno", "call", "phase"),
    "linux": _WHO + ("pid", "nr"),
    "irq": _WHO + ("irq", "label", "count"),
    "death": _WHO + ("reason", "status"),
    "chaos": _WHO + ("kind",),                         # + the injection's own fields
}
_KERNEL = (0, 0, "kernel")

ON = False                  # the flag every hook tests first
_ring: deque[tuple[int, int, str, tuple[Any, ...]]] = deque(maxlen=DEFAULT_CAPACITY)
_append = _ring.append      # the ring's append, bound once per `start`
_seq = itertools.count(1)
_counts = {"drained": 0, "last": 0}    # events drained; the seq of the newest one drained
_now = time.monotonic_ns


def _who(th: "Thread | None") -> tuple[int, int, str]:
    """The ids and name of thread `th` (None: the kernel itself)."""
    return _KERNEL if th is None else (th.id, th.task.id, th.task.name)


# -- the hooks (each called only when ON) ----------------------------------------------------

def send(sender: "Thread | None", gate: Any, proto: int, payload: bytes | None, call: bool,
         timeout: int) -> None:
    """A message leaves its sender for `gate` (a kernel message when `sender` is None)."""
    # The three message hooks spell _who out: they run for every call while on.
    _append((next(_seq), _now(), "send", (
        *((sender.id, sender.task.id, sender.task.name) if sender is not None else _KERNEL),
        gate.id, gate.label, proto, 0 if payload is None else len(payload), call, timeout)))


def recv(sender: "Thread | None", receiver: "Thread", label: int, proto: int,
         payload: bytes | None, call: bool, reply: int) -> None:
    """`receiver` got the message of `sender`; `reply` is its reply id (0: not a call)."""
    rt = receiver.task
    _append((next(_seq), _now(), "recv", (
        *((sender.id, sender.task.id, sender.task.name) if sender is not None else _KERNEL),
        receiver.id, rt.id, rt.name, label, proto, 0 if payload is None else len(payload),
        call, reply)))


def reply(server: "Thread", caller: "Thread | None", reply_id: int, proto: int,
          payload: bytes | None) -> None:
    """`server` answered `caller`'s call (None: a kernel call, e.g. a page fault) through
    reply capability `reply_id` (the `reply` of the `recv` that handed the call over)."""
    st = server.task
    _append((next(_seq), _now(), "reply", (
        server.id, st.id, st.name,
        *((caller.id, caller.task.id, caller.task.name) if caller is not None else _KERNEL),
        reply_id, proto, 0 if payload is None else len(payload))))


def error(th: "Thread", err: Any, reason: str) -> None:
    """`th`'s call ended in error `err` (TIMEOUT included)."""
    _append((next(_seq), _now(), "error", _who(th) + (err.name, reason[:200])))


def page_fault(th: "Thread", vaddr: int, access: int, how: str,
               pager: "Thread | None" = None) -> None:
    """A page fault of `th` and what became of it, `how`: `refill` (answered at once from the
    page table), `pager` (sent to the pager's thread `pager`, named as `to_*`), then one of
    `mapped` (the pager's reply mapped the page: the fault is answered), `failed` (the pager's
    call ended in error) or `exception` (reported to the exception handler: no pager, or the
    pager answered without mapping the page)."""
    values = _who(th) + (vaddr, access, how)
    _append((next(_seq), _now(), "pf", values if pager is None else values + _who(pager)))


def alien(th: "Thread", sysno: int, name: str, phase: str) -> None:
    _append((next(_seq), _now(), "alien", _who(th) + (sysno, name, phase)))


def linux(task: "Task", pid: int, nr: int) -> None:
    _append((next(_seq), _now(), "linux", (0, task.id, task.name, pid, nr)))


def irq(irq_id: int, th: "Thread", label: int, count: int) -> None:
    _append((next(_seq), _now(), "irq", _who(th) + (irq_id, label, count)))


def death(task: "Task", reason: str, status: int | None) -> None:
    _append((next(_seq), _now(), "death", (0, task.id, task.name, reason[:200], status)))


def chaos(kind: str, detail: dict[str, Any]) -> None:
    extra = {k: v for k, v in detail.items() if isinstance(v, (int, str, float))}
    _append((next(_seq), _now(), "chaos", (0, detail.get("sender") or 0, "chaos", kind, extra)))


# -- control (TRACE) ----------------------------------------------------------------------

def start(capacity: int) -> dict[str, Any]:
    """Record from now on into a fresh ring of `capacity` events (0: the default)."""
    global ON, _ring, _append, _seq
    _ring = deque(maxlen=capacity or DEFAULT_CAPACITY)
    _append = _ring.append
    _seq = itertools.count(1)
    _counts.update(drained=0, last=0)
    ON = True
    return status()


def stop() -> dict[str, Any]:
    """Stop recording; what the ring holds stays until drained."""
    global ON
    ON = False
    return status()


def _event(seq: int, ts: int, ev: str, values: tuple[Any, ...]) -> dict[str, Any]:
    e = dict(zip(FIELDS[ev], values))
    if ev == "chaos":
        e.update(values[-1])
    e.update(seq=seq, ts=ts, ev=ev)
    return e


def drain(limit: int) -> list[dict[str, Any]]:
    """Up to `limit` (0: MAX_DRAIN) events, oldest first, taken off the ring."""
    n = min(limit or MAX_DRAIN, MAX_DRAIN, len(_ring))
    out = [_event(*_ring.popleft()) for _ in range(n)]
    if out:
        _counts["drained"] += n
        _counts["last"] = out[-1]["seq"]
    return out


def status() -> dict[str, Any]:
    recorded = _ring[-1][0] if _ring else _counts["last"]
    return {"on": ON, "capacity": _ring.maxlen, "held": len(_ring), "recorded": recorded,
            "dropped": recorded - _counts["drained"] - len(_ring)}
