"""Hybrid Linux processes: L4 calls made by a trapped Linux process, as its own L4 thread.

Mechanism (paper §4.1; docs/L4LINUX.md "Hybrid processes"). A Linux process's thread is
alien: its system calls are first reported to its handler, the personality. A *hybrid* call
is a trapped system call with a `abi.LinuxL4` number; the personality checks it (the
capability handle is one its policy grants the program), marks the process UNINTERRUPTIBLE
and answers the LINUX call with `LinuxVerdict.L4`. Then (`start`) the kernel, which holds
the process's trap and can reach its memory, reads the message descriptor
(`abi.LINUX_L4_MSG`) and the data to send from the process, and runs the L4 call through
the ordinary system-call path (`syscalls.run`) as the main thread of the process's L4 task,
in that task's capability space. The answer is caught (`Thread.on_answer`, as for any alien
call): the received data, label and proto are written back into the process (`_complete`),
and the handler gets a completion call (`abi.LinuxL4Done`); its RETURN answers the trapped
system call, and the process runs again.

Calls: CALL (send + receive the reply), WAIT (bind the gate to the thread, receive),
REPLY_WAIT (answer the last caller, receive), REPLY (answer the last caller). The reply
capability of the last message received is kept here (`Hybrid.reply`), not given to the
program: a program cannot forge or reuse one.

Contracts:
- Everything the process names is checked before the call runs (the descriptor's fields,
  its lengths, the argument record by `abi.decode_request`, as any task's request); a bad
  pointer or argument ends in the completion with -EFAULT / -EINVAL, never a kernel error.
- One hybrid call per process at a time (a second one, from another host thread, is BUSY).
- A process killed during its call: its task dies, so its thread's partners are released
  by `lifecycle.kill_thread` — a server holding its call gets PEER_DIED at its reply, a
  client calling its gate gets PEER_DIED; nothing here answers the gone process.
- The personality never blocks: it answers the LINUX call at once; the completion is a new
  call to its gate.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from . import ipc, linux, syscalls
from ..abi import (LINUX_L4_MSG, MAX_PAYLOAD, SLOT_THREAD, AbiError, CallArgs, Err,
                   GateBindArgs, LinuxL4, LinuxL4Done, LinuxVerdict, ObjType, ReplyArgs,
                   ReplyWaitArgs, Rights, Sys, WaitArgs, decode_answer, decode_request,
                   encode_args, unpack)
from .objects import Thread, TState

if TYPE_CHECKING:
    from .linux import Proc
    from .state import State

# The -errno a hybrid call answers for each L4 error (the exact code is in `msg.err`).
ERRNO = {Err.NO_CAP: errno.EBADF, Err.NO_RIGHTS: errno.EACCES, Err.TIMEOUT: errno.ETIMEDOUT,
         Err.PEER_DIED: errno.ECONNRESET, Err.INVALID: errno.EINVAL, Err.QUOTA: errno.ENOSPC,
         Err.TOO_BIG: errno.E2BIG, Err.BUSY: errno.EBUSY, Err.DENIED: errno.EPERM,
         Err.CANCELED: errno.ECANCELED}
_CALLS = {LinuxL4.CALL: Sys.CALL, LinuxL4.WAIT: Sys.WAIT, LinuxL4.REPLY_WAIT: Sys.REPLY_WAIT,
          LinuxL4.REPLY: Sys.REPLY}


class Hybrid:
    """A Linux process's hybrid state: the reply capability of the last message received."""

    def __init__(self) -> None:
        self.reply = 0
        self.busy = False


def _state(proc: "Proc") -> Hybrid:
    if proc.hybrid is None:
        proc.hybrid = Hybrid()
    return proc.hybrid


def start(k: "State", proc: "Proc", nid: int, tid: int, nr: int, args: tuple[int, ...]) -> None:
    """The handler allowed trapped call `nid` (a `LinuxL4` number) of `proc`: make it."""
    hy = _state(proc)
    th = proc.task.threads[0] if proc.task.threads else None
    sysno = _CALLS.get(LinuxL4(nr)) if nr in _CALLS else None
    if th is None or not th.alive or sysno is None:
        _done(k, proc, nid, tid, nr, Err.INVALID, -errno.ENOSYS)
        return
    if hy.busy or th.busy or th.state != TState.IDLE:
        _done(k, proc, nid, tid, nr, Err.BUSY, -errno.EBUSY)
        return
    try:
        fd = linux._mem_fd(proc)
        desc = _read(fd, args[1], LINUX_L4_MSG.size)
        snd, snd_len, rcv, rcv_max, proto, timeout, *_ = LINUX_L4_MSG.unpack(desc)
        if snd_len > MAX_PAYLOAD:
            raise AbiError(Err.TOO_BIG, f"{snd_len} bytes to send, at most {MAX_PAYLOAD}")
        data = _read(fd, snd, snd_len) if snd_len and sysno != Sys.WAIT else b""
        record = _record(sysno, int(args[0]), hy.reply, proto, timeout)
        decode_request(encode_args(record))           # checked as any task's request
        serve = sysno in (Sys.WAIT, Sys.REPLY_WAIT)
        if serve:                                    # GATE_BIND's own checks, first
            th.task.space.lookup(int(args[0]), ObjType.GATE, Rights.WRITE)
    except AbiError as e:
        _done(k, proc, nid, tid, nr, e.err, _errno(e))
        return
    # -- checked: act ---------------------------------------------------------------
    if serve:                                        # the gate is served by this thread
        syscalls.TABLE[Sys.GATE_BIND](k, th, GateBindArgs(int(args[0]), SLOT_THREAD), None)
    if sysno in (Sys.REPLY, Sys.REPLY_WAIT):
        hy.reply = 0                                 # used (or gone) either way
    hy.busy = th.busy = True
    th.on_answer = lambda header, payload: _answered(k, proc, nid, tid, nr, th, sysno,
                                                      (args[1], rcv, rcv_max), header, payload)
    syscalls.run(k, th, sysno, record, data or None)


def _record(sysno: Sys, handle: int, reply: int, proto: int, timeout: int) -> Any:
    if sysno == Sys.CALL:
        return CallArgs(handle, proto, [], timeout, timeout, None)   # each way
    if sysno == Sys.WAIT:
        return WaitArgs(None, timeout)
    if sysno == Sys.REPLY_WAIT:
        return ReplyWaitArgs(reply, proto, [], None, timeout)
    return ReplyArgs(reply, proto, [])


def _read(fd: int, addr: int, n: int) -> bytes:
    try:
        data = os.pread(fd, n, addr) if 0 <= addr < 1 << 47 else b""
    except OSError:
        data = b""
    if len(data) != n:
        raise AbiError(Err.INVALID, f"EFAULT: 0x{addr:x}+{n} is not readable")
    return data


def _errno(e: AbiError) -> int:
    if e.reason.startswith("EFAULT"):
        return -errno.EFAULT
    return -ERRNO.get(e.err, errno.EIO)


def _answered(k: "State", proc: "Proc", nid: int, tid: int, nr: int, th: Thread, sysno: Sys,
              where: tuple[int, int, int], header: bytes, payload: bytes | None) -> None:
    """The L4 call's answer (caught before the wire): back into the process's memory."""
    th.busy = False
    hy = _state(proc)
    hy.busy = False
    desc, rcv, rcv_max = where
    try:
        code, value = decode_answer(header, sysno != Sys.REPLY)
        err = Err(code)
    except (AbiError, ValueError):
        err, value = Err.PROTOCOL, None
    label = rproto = 0
    data = payload or b""
    if err == Err.OK and sysno != Sys.REPLY:
        label, rproto, hy.reply = value.label, value.proto, value.reply
    result = 0 if err == Err.OK else -ERRNO.get(err, errno.EIO)
    try:
        fd = linux._mem_fd(proc)
        if data and rcv_max:
            os.pwrite(fd, data[:rcv_max], rcv)
        out = LINUX_L4_MSG.pack(0, 0, 0, 0, rproto, 0, len(data), label, int(err))
        os.pwrite(fd, out[32:40], desc + 32)                 # proto (timeout_ms is kept)
        os.pwrite(fd, out[48:], desc + 48)                   # rcv_len, label, err
    except (AbiError, OSError):
        result = -errno.EFAULT if result == 0 else result
    _done(k, proc, nid, tid, nr, err, result)


def _done(k: "State", proc: "Proc", nid: int, tid: int, nr: int, err: Err, value: int) -> None:
    """Tell the handler the call is complete; its RETURN answers the trapped call."""
    task = proc.task
    handler = task.threads[0].handler if task.threads else None

    def answer(v: int) -> None:
        if nid in proc.pending:
            proc.pending.discard(nid)
            k.linux.stats["linux_answers"] += 1
            linux._send(proc.listener.fd, nid, v, 0)

    def verdict(proto: int, payload: bytes | None) -> None:
        try:
            v = unpack(payload) if payload and proto == LinuxVerdict.RETURN else value
        except Exception:
            v = value
        answer(v if type(v) is int and -(2 ** 63) <= v < 2 ** 63 else value)

    if not task.alive:
        return
    msg = LinuxL4Done(task.name, task.id, proc.slot, proc.pid, tid, nr, int(err), value)
    prio = task.threads[0].priority if task.threads else 100
    ipc.kernel_send(k, handler, msg, prio, verdict, lambda _e, _r: answer(value))


linux.L4_START = start
