"""The system-call dispatch table: one thin handler per `Sys` number.

Every handler gets arguments that `abi.decode_request` already type-checked, looks up and
checks every capability it needs (raising AbiError: the wrapper in `server` turns that into
an error answer), and only then acts. A handler returns the plain result value, or `LATER`
when the answer is sent by the IPC machinery (blocking calls).
"""
from __future__ import annotations


from typing import TYPE_CHECKING, Any, Callable

from . import caps, faults, ipc, lifecycle, memory
from ..abi import (FIRST_FREE_SLOT, MAX_SLOTS, NEVER, SLOT_FACTORY, SLOT_TASK, SLOT_THREAD,
                  AbiError, Err, ObjType, Rights, Sys)
from ..abi import CAP_ITEMS
from .caps import CapSpace
from .objects import Factory, Gate, Irq, Task, Thread

if TYPE_CHECKING:
    from .kernel import Kernel

LATER = object()      # the handler's answer comes later, from the IPC machinery
Handler = Callable[["Kernel", Thread, list[Any], "bytes | None"], Any]
TABLE: dict[Sys, Handler] = {}


def handles(sysno: Sys) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        TABLE[sysno] = fn
        return fn
    return register


def _gate_for_send(th: Thread, slot: int, proto: int, items: list) -> tuple[Gate, int]:
    node = th.task.space.lookup(slot, ObjType.GATE, Rights.INVOKE)
    if proto < 0:
        raise AbiError(Err.INVALID, f"proto {proto} is reserved for kernel messages (use ≥ 0)")
    for it in items:            # fail early; delivery checks again
        if it[0] in CAP_ITEMS:
            th.task.space.lookup(it[1], need=Rights.GRANT)
    return node.obj, node.rights          # type: ignore[return-value]


# -- IPC ----------------------------------------------------------------------

@handles(Sys.SEND)
def sys_send(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    cap, proto, items, timeout = a
    gate, rights = _gate_for_send(th, cap, proto, items)
    ipc.send(k, ipc.SendRecord(th, gate, rights, proto, items, payload, False, None, NEVER,
                               th.priority), timeout)
    return LATER


@handles(Sys.CALL)
def sys_call(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    cap, proto, items, snd_timeout, rcv_timeout, window = a
    gate, rights = _gate_for_send(th, cap, proto, items)
    ipc.send(k, ipc.SendRecord(th, gate, rights, proto, items, payload, True, window,
                               rcv_timeout, th.priority), snd_timeout)
    return LATER


@handles(Sys.WAIT)
def sys_wait(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    window, timeout = a
    ipc.wait(k, th, window, timeout)
    return LATER


@handles(Sys.REPLY)
def sys_reply(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    reply, proto, items = a
    err = ipc.reply(k, th, reply, proto, items, payload)
    if err is not None:
        raise AbiError(*err)
    return None


@handles(Sys.REPLY_WAIT)
def sys_reply_wait(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    reply, proto, items, window, timeout = a
    if reply:
        err = ipc.reply(k, th, reply, proto, items, payload)
        # A caller that gave up is no reason to stop serving; anything else is our fault.
        if err is not None and err[0] != Err.PEER_DIED:
            raise AbiError(*err)
    ipc.wait(k, th, window, timeout)
    return LATER


# -- capabilities ---------------------------------------------------------------

def _slot(th: Thread, slot: int) -> caps.CapNode:
    node = th.task.space.slots.get(slot)
    if node is None:
        raise AbiError(Err.NO_CAP, f"task '{th.task.name}' holds nothing in slot {slot}")
    return node


@handles(Sys.CAP_DELETE)
def sys_cap_delete(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    return caps.delete(_slot(th, a[0]))


@handles(Sys.CAP_REVOKE)
def sys_cap_revoke(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    return caps.revoke(_slot(th, a[0]))


@handles(Sys.CAP_INSPECT)
def sys_cap_inspect(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    node = _slot(th, a[0])
    return {**node.obj.describe(), "slot": node.slot, "rights": int(node.rights),
            "derived": len(node.children), "is_root": node.parent is None}


@handles(Sys.CAP_DERIVE)
def sys_cap_derive(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    src, dst, mask = a
    space = th.task.space
    node = space.lookup(src)
    slot = space.pick_slot(dst)
    space.derive(node, slot, mask)
    return slot


@handles(Sys.OBJ_DESTROY)
def sys_obj_destroy(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    node = th.task.space.lookup(a[0], need=Rights.DELETE)
    lifecycle.destroy(k, node.obj, f"destroyed by task '{th.task.name}'")
    return None


# -- factories ------------------------------------------------------------------

def _factory(th: Thread, slot: int) -> Factory:
    return th.task.space.lookup(slot, ObjType.FACTORY, Rights.INVOKE).obj  # type: ignore[return-value]


def _thread(th: Thread, slot: int) -> Thread:
    return th.task.space.lookup(slot, ObjType.THREAD, Rights.WRITE).obj  # type: ignore[return-value]


@handles(Sys.GATE_CREATE)
def sys_gate_create(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    factory_slot, thread_slot, label, dst = a
    factory = _factory(th, factory_slot)
    bound = _thread(th, thread_slot) if thread_slot is not None else None
    slot = th.task.space.pick_slot(dst)
    lifecycle.charge(factory)
    gate = Gate(factory, label, bound)
    k.gates.add(gate)
    th.task.space.insert(slot, gate, Rights.ALL)
    return slot


@handles(Sys.IRQ_CREATE)
def sys_irq_create(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    factory = _factory(th, a[0])
    slot = th.task.space.pick_slot(a[1])
    lifecycle.charge(factory)
    th.task.space.insert(slot, Irq(factory), Rights.ALL)
    return slot


@handles(Sys.THREAD_CREATE)
def sys_thread_create(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    factory_slot, task_slot, dst = a
    factory = _factory(th, factory_slot)
    task: Task = th.task.space.lookup(task_slot, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    slot = th.task.space.pick_slot(dst)
    lifecycle.charge(factory)
    new = Thread(factory, task)
    task.threads.append(new)
    th.task.space.insert(slot, new, Rights.ALL)
    return [slot, k.new_secret(new), new.id]


@handles(Sys.TASK_CREATE)
def sys_task_create(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    factory_slot, name, quota, dst = a
    factory = _factory(th, factory_slot)
    if not 0 <= quota <= 1_000_000:
        raise AbiError(Err.INVALID, f"quota {quota} outside 0..1000000")
    if not name or not name.isprintable():
        raise AbiError(Err.INVALID, "a task name must be a non-empty printable string")
    space = th.task.space
    slot = space.pick_slot(dst)
    thread_slot = space.pick_slot(dst + 1 if dst is not None else None, exclude=slot)
    lifecycle.charge(factory, quota + 2)          # the task, its main thread, its quota
    task, main = k.make_task(name, factory, quota)
    space.insert(slot, task, Rights.ALL)
    space.insert(thread_slot, main, Rights.ALL)
    return [slot, thread_slot, k.new_secret(main), task.id, main.id]


@handles(Sys.FACTORY_INFO)
def sys_factory_info(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    return _factory(th, a[0]).describe()


# -- binding and control -----------------------------------------------------------

@handles(Sys.GATE_BIND)
def sys_gate_bind(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    gate: Gate = th.task.space.lookup(a[0], ObjType.GATE, Rights.WRITE).obj  # type: ignore[assignment]
    target = _thread(th, a[1])
    if gate.thread is not target:
        ipc.drop_gate_senders(k, gate, Err.PEER_DIED, f"gate {gate.id} was rebound to a new thread")
        gate.thread = target
        gate.generation += 1
    return gate.generation


@handles(Sys.IRQ_ATTACH)
def sys_irq_attach(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    irq: Irq = th.task.space.lookup(a[0], ObjType.IRQ, Rights.WRITE).obj  # type: ignore[assignment]
    target = _thread(th, a[1]) if a[1] is not None else None
    if irq.thread is not None and irq in irq.thread.irqs:
        irq.thread.irqs.remove(irq)
    irq.thread, irq.label = target, a[2]
    if irq.pending and target is not None and not irq.masked:
        irq.pending -= 1
        ipc.trigger(k, irq)
    return None


@handles(Sys.IRQ_TRIGGER)
def sys_irq_trigger(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    ipc.trigger(k, th.task.space.lookup(a[0], ObjType.IRQ, Rights.INVOKE).obj)  # type: ignore[arg-type]
    return None


@handles(Sys.IRQ_MASK)
def sys_irq_mask(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    irq: Irq = th.task.space.lookup(a[0], ObjType.IRQ, Rights.WRITE).obj  # type: ignore[assignment]
    if a[1] is True:
        irq.masked = True
        if irq.thread is not None and irq in irq.thread.irqs:
            irq.thread.irqs.remove(irq)
    elif a[1] is False and irq.masked:
        ipc.unmask(k, irq)
    return {"masked": irq.masked, "pending": irq.pending}


def _gate_or_clear(th: Thread, slot: int | None, current: Gate | None) -> Gate | None:
    if slot is None:
        return current
    if slot == 0:
        return None
    return th.task.space.lookup(slot, ObjType.GATE, Rights.INVOKE).obj  # type: ignore[return-value]


@handles(Sys.THREAD_CONTROL)
def sys_thread_control(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    thread_slot, pager, handler, alien, priority = a
    target = _thread(th, thread_slot)
    new_pager = _gate_or_clear(th, pager, target.pager)
    new_handler = _gate_or_clear(th, handler, target.handler)
    if priority is not None and not 0 <= priority <= 255:
        raise AbiError(Err.INVALID, f"priority {priority} outside 0..255")
    if alien and new_handler is None:
        raise AbiError(Err.INVALID, "an alien thread needs an exception handler")
    target.pager, target.handler = new_pager, new_handler
    if alien is not None:
        target.alien = alien
    if priority is not None:
        target.priority = priority
    return target.describe()


@handles(Sys.TASK_MAP)
def sys_task_map(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    task_slot, src, dst, mask = a
    task: Task = th.task.space.lookup(task_slot, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    node = th.task.space.lookup(src, need=Rights.GRANT)
    task.space.check_free(dst)
    task.space.derive(node, dst, mask)
    return dst


@handles(Sys.TASK_WATCH)
def sys_task_watch(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    task: Task = th.task.space.lookup(a[0], ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    if a[1] <= 0:
        raise AbiError(Err.INVALID, f"pid {a[1]} is not a process id")
    k.watch(task, a[1])
    return None


@handles(Sys.KERNEL_INFO)
def sys_kernel_info(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    th.task.space.lookup(a[0], ObjType.KERNEL, Rights.INVOKE)
    return {**k.info(), "faults": faults.summary()}


@handles(Sys.EXIT)
def sys_exit(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    k.answer(th, ipc.encode_ok(), None)
    lifecycle.kill_task(k, th.task, f"exited with status {a[0]}", a[0])
    return LATER


# -- memory (kernel/core/memory.py, docs/MEMORY.md) ----------------------------------------

@handles(Sys.MEM_ATTACH)
def sys_mem_attach(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    mem: memory.Memory = k.memory
    space = mem.space(th.task)
    space.signal = bool(a[0])
    ram = mem.ram
    return {"fd": ram.fd, "kernel_pid": k.pid, "size": ram.size, "frames": ram.frames,
            "ctl_offset": ram.ctl_offset, "slot": space.slot, "epoch": space.epoch}


@handles(Sys.MEM_FAULT)
def sys_mem_fault(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    result = memory.fault(k, th, *a)
    return LATER if result is memory.LATER_MARK else result


@handles(Sys.MEM_UNMAP)
def sys_mem_unmap(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    vaddr, order, self_too = a
    mem: memory.Memory = k.memory
    count, affected = mem.unmap(th.task, vaddr, order, bool(self_too))
    mem.stats["shootdowns"] += bool(affected)
    if memory.Shootdown(mem, th, count, affected).start():
        return count
    return LATER


@handles(Sys.MEM_SIGMA0)
def sys_mem_sigma0(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    th.task.space.lookup(a[0], ObjType.KERNEL, Rights.INVOKE)
    task: Task = th.task.space.lookup(a[1], ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    mem: memory.Memory = k.memory
    if any(s.identity for s in mem.spaces.values() if s.task.alive and s.task is not task):
        raise AbiError(Err.BUSY, "another live task is already sigma0")
    space = mem.space(task)
    if space.pages:
        raise AbiError(Err.BUSY, f"task '{task.name}' already has mappings; sigma0 starts empty")
    space.identity = mem.ram.frames
    return {"frames": mem.ram.frames, "size": mem.ram.size}


@handles(Sys.MEM_QUERY)
def sys_mem_query(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    task_slot, vaddr, order = a
    task = th.task
    if task_slot is not None:
        task = th.task.space.lookup(task_slot, ObjType.TASK, Rights.INVOKE).obj  # type: ignore[assignment]
    return k.memory.query(task, vaddr, order)


# -- chaos (kernel/core/faults.py, docs/CHAOS.md) ---------------------------------------------

@handles(Sys.FAULT)
def sys_fault(k: "Kernel", th: Thread, a: list, payload: bytes | None) -> Any:
    th.task.space.lookup(a[0], ObjType.KERNEL, Rights.INVOKE)
    return faults.control(k, th, a[1], a[2])


def new_space(k: "Kernel", name: str) -> CapSpace:
    return CapSpace(name, lambda obj: lifecycle.on_last_cap(k, obj))


def initial_caps(space: CapSpace, task: Task, main: Thread, factory: Factory) -> None:
    space.insert(SLOT_TASK, task, Rights.ALL)
    space.insert(SLOT_THREAD, main, Rights.ALL)
    space.insert(SLOT_FACTORY, factory, Rights.INVOKE | Rights.GRANT)


assert set(TABLE) | {Sys.HELLO} == set(Sys), "every system call has a handler"
assert FIRST_FREE_SLOT < MAX_SLOTS

