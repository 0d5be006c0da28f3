"""The IPC trace: a bounded ring of what the kernel did, for `l4run trace` (TRACE).

While `ON`, the mechanisms append one event per thing that happened — a message sent
(`send`), delivered (`recv`), replied to (`reply`), an error answered (`error`: timeouts and
every other code, from `State.fail`), a page fault and how it was resolved (`pf`: one event
when it is taken, one more when a pager's answer resolves it), an alien
thread's report (`alien`) and a trapped Linux system call (`linux`), an IRQ delivered
(`irq`), a task's death (`death`), a chaos injection (`chaos`). Each event is a dict with
`seq`, `ts` (time.monotonic_ns), `ev`, and the ids and names of the threads and tasks in it,
so a drained trace needs nothing else to be read (tasks may be gone by then).

Contracts:
- Off by default. When off the hot paths pay one flag test each: the hooks are written
  `if _trace.ON: _trace.recv(...)` at the call site, never a call that tests inside.
- Bounded: the ring holds at most `capacity` events (collections.deque(maxlen)); the oldest
  go first and are counted in `dropped`. Draining removes what it answers, oldest first.
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

ON = False                  # the flag every hook tests first
_ring: deque[dict[str, Any]] = deque(maxlen=DEFAULT_CAPACITY)
_seq = itertools.count(1)
_counts = {"recorded": 0, "dropped": 0}
_now = time.monotonic_ns


def _put(ev: str, fields: dict[str, Any]) -> None:
    if len(_ring) == _ring.maxlen:
        _counts["dropped"] += 1
    _counts["recorded"] += 1
    fields["seq"] = next(_seq)
    fields["ts"] = _now()
    fields["ev"] = ev
    _ring.append(fields)


def _who(th: "Thread | None", prefix: str = "") -> dict[str, Any]:
    """The ids and names of thread `th` (None: the kernel itself)."""
    if th is None:
        return {prefix + "th": 0, prefix + "task": 0, prefix + "name": "kernel"}
    return {prefix + "th": th.id, prefix + "task": th.task.id, prefix + "name": th.task.name}


def _size(payload: bytes | None) -> int:
    return len(payload) if payload is not None else 0


# -- the hooks (each called only when ON) ----------------------------------------------------

def send(sender: "Thread | None", gate: Any, proto: int, payload: bytes | None, call: bool,
         timeout: int) -> None:
    """A message leaves its sender for `gate` (a kernel message when `sender` is None)."""
    _put("send", {**_who(sender), "gate": gate.id, "label": gate.label, "proto": proto,
                  "size": _size(payload), "call": call, "timeout": timeout})


def recv(sender: "Thread | None", receiver: "Thread", label: int, proto: int,
         payload: bytes | None, call: bool, reply: int) -> None:
    """`receiver` got the message of `sender`; `reply` is its reply id (0: not a call)."""
    _put("recv", {**_who(sender), **_who(receiver, "to_"), "label": label, "proto": proto,
                  "size": _size(payload), "call": call, "reply": reply})


def reply(server: "Thread", caller: "Thread | None", reply_id: int, proto: int,
          payload: bytes | None) -> None:
    """`server` answered `caller`'s call (None: a kernel call, e.g. a page fault) through
    reply capability `reply_id` (the `reply` of the `recv` that handed the call over)."""
    _put("reply", {**_who(server), **_who(caller, "to_"), "reply": reply_id, "proto": proto,
                   "size": _size(payload)})


def error(th: "Thread", err: Any, reason: str) -> None:
    """`th`'s call ended in error `err` (TIMEOUT included)."""
    _put("error", {**_who(th), "err": err.name, "reason": reason[:200]})


def page_fault(th: "Thread", vaddr: int, access: int, how: str,
               pager: "Thread | None" = None) -> None:
    """A page fault of `th` and what became of it, `how`: `refill` (answered at once from the
    page table), `pager` (sent to the pager's thread `pager`, named as `to_*`), then one of
    `mapped` (the pager's reply mapped the page: the fault is answered), `failed` (the pager's
    call ended in error) or `exception` (reported to the exception handler: no pager, or the
    pager answered without mapping the page)."""
    fields = {**_who(th), "vaddr": vaddr, "access": access, "how": how}
    if pager is not None:
        fields.update(_who(pager, "to_"))
    _put("pf", fields)


def alien(th: "Thread", sysno: int, name: str, phase: str) -> None:
    _put("alien", {**_who(th), "sysno": sysno, "call": name, "phase": phase})


def linux(task: "Task", pid: int, nr: int) -> None:
    _put("linux", {"th": 0, "task": task.id, "name": task.name, "pid": pid, "nr": nr})


def irq(irq_id: int, th: "Thread", label: int, count: int) -> None:
    _put("irq", {**_who(th), "irq": irq_id, "label": label, "count": count})


def death(task: "Task", reason: str, status: int | None) -> None:
    _put("death", {"th": 0, "task": task.id, "name": task.name, "reason": reason[:200],
                   "status": status})


def chaos(kind: str, detail: dict[str, Any]) -> None:
    _put("chaos", {"th": 0, "task": detail.get("sender") or 0, "name": "chaos", "kind": kind,
                   **{k: v for k, v in detail.items() if isinstance(v, (int, str, float))}})


# -- control (TRACE) ----------------------------------------------------------------------

def start(capacity: int) -> dict[str, Any]:
    """Record from now on into a fresh ring of `capacity` events (0: the default)."""
    global ON, _ring
    cap = capacity or DEFAULT_CAPACITY
    _ring = deque(maxlen=cap)
    _counts.update(recorded=0, dropped=0)
    ON = True
    return status()


def stop() -> dict[str, Any]:
    """Stop recording; what the ring holds stays until drained."""
    global ON
    ON = False
    return status()


def drain(limit: int) -> list[dict[str, Any]]:
    """Up to `limit` (0: MAX_DRAIN) events, oldest first, taken off the ring."""
    n = min(limit or MAX_DRAIN, MAX_DRAIN, len(_ring))
    return [_ring.popleft() for _ in range(n)]


def status() -> dict[str, Any]:
    return {"on": ON, "capacity": _ring.maxlen, "held": len(_ring), **_counts}
