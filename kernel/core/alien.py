"""Alien threads (paper §4.1): every system call is first shown to the exception handler.

A thread marked alien (THREAD_CONTROL) does not run its calls directly. The transport hands
each decoded call to `before`: the thread is held (ALIEN_HOLD) and the kernel *calls* its
exception handler gate with an `abi.AlienBefore` report. The handler's reply is the verdict:
proto AlienVerdict.ALLOW runs the call (`syscalls.run`), anything else answers it DENIED.
An allowed call's answer is not sent at once: `Thread.on_answer` catches it (see
`State.answer`) and `after` calls the handler again with an `abi.AlienAfter` report; the
thread gets its answer when the handler replies, with anything.

Contracts:
- No handler, a handler gate that is gone, or a handler that dies before its verdict: the
  call is answered DENIED (counted like every error answer, `State.fail`).
- The held call was checked completely before it was reported; the handler cannot change it.
- A thread that dies while held is simply gone: the late verdict finds it dead and does
  nothing (`lifecycle.kill_thread` answers it CANCELED, unreported).

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ipc, syscalls, trace
from ..abi import AlienAfter, AlienBefore, AlienVerdict, Err, Sys, unpack
from .objects import Thread, TState

if TYPE_CHECKING:
    from .state import State


def before(k: "State", th: Thread, sysno: Sys, args: tuple[Any, ...], payload: bytes | None) -> None:
    """Hold `th`'s call and ask its handler whether it may run."""
    th.set_state(TState.ALIEN_HOLD)
    if trace.ON:
        trace.alien(th, int(sysno), sysno.name, "before")
    report = AlienBefore(th.task.name, th.id, int(sysno), sysno.name, args,
                         len(payload) if payload is not None else 0)

    def verdict(proto: int, _payload: bytes | None) -> None:
        if not th.alive or th.state != TState.ALIEN_HOLD:
            return
        th.set_state(TState.IDLE)
        if proto == AlienVerdict.ALLOW:
            th.on_answer = lambda header, answer_payload: after(k, th, sysno, header,
                                                                answer_payload)
            syscalls.run(k, th, sysno, args, payload)
        else:
            k.fail(th, Err.DENIED, f"the exception handler denied {sysno.name}")

    def handler_gone(err: Err, reason: str) -> None:
        if th.alive and th.state == TState.ALIEN_HOLD:
            k.fail(th, Err.DENIED, f"no exception handler answered ({reason})")

    ipc.kernel_send(k, th.handler, report, th.priority, verdict, handler_gone)


def after(k: "State", th: Thread, sysno: Sys, header: bytes, payload: bytes | None) -> None:
    """The allowed call is complete: report its outcome, answer the thread once the handler
    replied (or is gone)."""
    try:
        err = unpack(header)[0]
    except Exception:
        err = int(Err.PROTOCOL)
    if trace.ON:
        trace.alien(th, int(sysno), sysno.name, "after")
    report = AlienAfter(th.task.name, th.id, int(sysno), sysno.name, err)

    def release(*_: Any) -> None:
        if th.alive:
            k.answer_now(th, header, payload)

    ipc.kernel_send(k, th.handler, report, th.priority, release, release)
