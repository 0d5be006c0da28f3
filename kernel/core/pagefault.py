"""Page faults: MEM_FAULT answered from the page table, or through the thread's pager.

Contract: a fault whose page is mapped with the rights asked is answered at once (a TLB
refill); otherwise it becomes a kernel call IPC (`abi.PageFaultMessage`) to the thread's
pager, whose reply may carry map items (they land around the fault address, `rec.mem`).
The continuations of that call (the pager answered / the pager failed) finish the
faulting thread's MEM_FAULT. Before a frame is answered, the task is sent its memfd if it
does not hold it yet (`Memory.deliver`): the answer never names a frame the task cannot
reach. A fault the pager cannot serve is reported to the thread's exception handler.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import ipc, trace
from .memory import Memory
from ..abi import (NEVER, PAGE_SHIFT, VA_BITS, AbiError, Err, FaultNotice, MemRights,
                   PageFaultMessage, encode_ok)

if TYPE_CHECKING:
    from .objects import Thread
    from .state import State

_RWX = int(MemRights.RWX)


def fault(k: "State", th: "Thread", vaddr: int, access: int, ip: int) -> list[int] | None:
    """MEM_FAULT: answer [frame, rights] now, or None: the answer comes after the pager's
    reply (a kernel call whose continuations `on_reply`/`on_error` are below; its record's
    `mem` names where the pager's map items land)."""
    mem: Memory = k.memory
    if not 0 <= vaddr < 1 << VA_BITS:
        raise AbiError(Err.INVALID, f"fault address 0x{vaddr:x} outside the address space")
    if access & ~_RWX or not access:
        raise AbiError(Err.INVALID, f"fault access {access:#x} is not a subset of r/w/x")
    a = mem.space(th.task)
    th.task.stats["faults"] += 1
    vp = vaddr >> PAGE_SHIFT
    n = a.node(vp)
    if n is not None and n.rights & access == access:
        mem.stats["refills"] += 1
        if trace.ON:
            trace.page_fault(th, vaddr, access, "refill")
        mem.deliver(a, n.frame, n.rights)
        return [n.frame, n.rights]
    pager = th.pager

    def what() -> str:
        return (f"page fault at 0x{vaddr:x} ({MemRights(access)!r}) in task '{th.task.name}' "
                f"thread {th.id}")
    if pager is None or not pager.alive:
        _exception(k, th, vaddr, access, ip, "the thread has no pager")
        raise AbiError(Err.NO_CAP, f"{what()}: the thread has no pager")
    mem.stats["faults"] += 1
    if trace.ON:
        trace.page_fault(th, vaddr, access, "pager", pager.thread)

    def on_reply(proto: int, payload: bytes | None) -> None:
        if not th.alive:
            return
        n = a.node(vp) if a.task.alive else None
        if n is not None and n.rights & access == access:
            try:
                mem.deliver(a, n.frame, n.rights)
            except AbiError:
                return                  # the task was faulted
            if trace.ON:
                trace.page_fault(th, vaddr, access, "mapped")
            k.finish(th, encode_ok([n.frame, n.rights]))
            return
        reason = f"the pager answered proto {proto} without mapping the page"
        _exception(k, th, vaddr, access, ip, reason)
        k.fail(th, Err.DENIED, f"{what()}: {reason}")

    def on_error(err: Err, reason: str) -> None:
        if th.alive:
            if trace.ON:
                trace.page_fault(th, vaddr, access, "failed")
            k.fail(th, err, f"{what()}: pager failed: {reason}")

    msg = PageFaultMessage(vaddr, access, ip, th.task.name, th.id)
    rec = ipc.kernel_record(pager, msg, th.priority, on_reply, on_error)
    rec.mem = (th.task, (0, VA_BITS), vaddr)
    ipc.send(k, rec, NEVER)
    return None


def _exception(k: "State", th: "Thread", vaddr: int, access: int, ip: int, reason: str) -> None:
    if trace.ON:
        trace.page_fault(th, vaddr, access, "exception")
    if th.handler is not None and th.handler.alive:
        ipc.kernel_send(k, th.handler, FaultNotice(th.task.name, th.task.id, th.id, vaddr,
                                                   access, ip, reason))
