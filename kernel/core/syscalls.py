"""The system-call dispatch table: one thin, check-first handler per `Sys` number.

`run` is the one wrapper every decoded call goes through (the transport calls it, and
`alien` once a handler allowed the call): it dispatches on `TABLE` and turns an AbiError
a handler raises into the thread's error answer (`State.fail`: counted, answered).

Every handler gets the argument record of its call (`abi.ARGS`), already type-checked by
`abi.decode_request`, looks up and checks every capability it needs (raising AbiError), and
only then acts. A handler returns the plain result value, or `LATER` when the answer is
sent by the IPC machinery (blocking calls).

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import caps, faults, ipc, irq, lifecycle, linux, memory, pagefault, trace
from ..abi import (CAP_ITEMS, DMA_RANGE, DMA_WRITE, FIRST_FREE_SLOT, MAX_DMA_RANGES, MAX_SLOTS, NEVER, AbiError, CallArgs,
                   CapDeriveArgs, Err, ExitArgs, FactoryInfoArgs, FaultArgs, GateBindArgs,
                   GateCreateArgs, IrqAttachArgs, IrqCreateArgs, IrqMaskArgs, IrqTriggerArgs,
                   KernelInfoArgs, LinuxAttachArgs, LinuxMemReadArgs, LinuxMemWriteArgs, LinuxAddfdArgs,
                   MemAttachArgs, MemDmaArgs, MemDmaCheckArgs, MemFaultArgs, MemQueryArgs, MemSigma0Args,
                   MemUnmapArgs, CapDeleteArgs, CapInspectArgs, CapRevokeArgs, ObjDestroyArgs, ObjType, ReplyArgs, ReplyWaitArgs, Rights, SendArgs,
                   Sys, TaskCreateArgs, TaskMapArgs, TaskWatchArgs, ThreadControlArgs,
                   ThreadCreateArgs, TraceArgs, WaitArgs, encode_ok)
from ..abi import PAGE_SHIFT, MemRights
from .irq import Irq
from .objects import Factory, Gate, Task, Thread

if TYPE_CHECKING:
    from .state import State

LATER = object()      # the handler's answer comes later, from the IPC machinery
Handler = Callable[["State", Thread, Any, "bytes | None"], Any]
TABLE: dict[Sys, Handler] = {}


def handles(sysno: Sys) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        TABLE[sysno] = fn
        return fn
    return register


def run(k: "State", thread: Thread, sysno: Sys, args: Any, payload: bytes | None) -> None:
    """Perform one checked call; an AbiError becomes the thread's (counted) error answer."""
    handled = k.handled
    handled[sysno] = handled.get(sysno, 0) + 1     # the fuzz's proof that a handler ran
    try:
        result = TABLE[sysno](k, thread, args, payload)
    except AbiError as e:
        k.fail(thread, e.err, e.reason)
        return
    if result is not LATER:
        k.finish(thread, encode_ok(result))


def _gate_for_send(th: Thread, slot: int, proto: int, items: Any) -> tuple[Gate, int]:
    node = th.task.space.lookup(slot, ObjType.GATE, Rights.INVOKE)
    if proto < 0:
        raise AbiError(Err.INVALID, f"proto {proto} is reserved for kernel messages (use ≥ 0)")
    for it in items:            # fail early; delivery checks again
        if it[0] in CAP_ITEMS:
            th.task.space.lookup(it[1], need=Rights.GRANT)
    return node.obj, node.rights          # type: ignore[return-value]


def _send(k: "State", rec: ipc.SendRecord, timeout: int) -> None:
    """A task's message: routed, offered to the chaos fault table, then sent."""
    if trace.ON:
        trace.send(rec.sender, rec.gate, rec.proto, rec.payload, rec.call, timeout)
    target = ipc.route(k, rec)
    if target is None:
        return
    if faults.ARMED and faults.intercept(k, rec, timeout):
        return      # an injected fault took the message over (kernel/core/faults.py)
    ipc.send_to(k, rec, target, timeout)


# -- IPC ----------------------------------------------------------------------

@handles(Sys.SEND)
def sys_send(k: "State", th: Thread, a: SendArgs, payload: bytes | None) -> Any:
    gate, rights = _gate_for_send(th, a.cap, a.proto, a.items)
    _send(k, ipc.SendRecord(th, gate, rights, a.proto, a.items, payload, False, None, NEVER,
                            th.priority), a.timeout)
    return LATER


@handles(Sys.CALL)
def sys_call(k: "State", th: Thread, a: CallArgs, payload: bytes | None) -> Any:
    gate, rights = _gate_for_send(th, a.cap, a.proto, a.items)
    _send(k, ipc.SendRecord(th, gate, rights, a.proto, a.items, payload, True, a.window,
                            a.rcv_timeout, th.priority), a.snd_timeout)
    return LATER


@handles(Sys.WAIT)
def sys_wait(k: "State", th: Thread, a: WaitArgs, payload: bytes | None) -> Any:
    ipc.wait(k, th, a.window, a.timeout)
    return LATER


@handles(Sys.REPLY)
def sys_reply(k: "State", th: Thread, a: ReplyArgs, payload: bytes | None) -> Any:
    ipc.reply(k, th, a.reply, a.proto, a.items, payload)
    return None


@handles(Sys.REPLY_WAIT)
def sys_reply_wait(k: "State", th: Thread, a: ReplyWaitArgs, payload: bytes | None) -> Any:
    if a.reply:
        try:
            ipc.reply(k, th, a.reply, a.proto, a.items, payload)
        except AbiError as e:
            # A caller that gave up is no reason to stop serving; anything else is our fault.
            if e.err != Err.PEER_DIED:
                raise
    ipc.wait(k, th, a.window, a.timeout)
    return LATER


# -- capabilities ---------------------------------------------------------------

def _slot(th: Thread, slot: int) -> caps.CapNode:
    node = th.task.space.slots.get(slot)
    if node is None:
        raise AbiError(Err.NO_CAP, f"task '{th.task.name}' holds nothing in slot {slot}")
    return node


@handles(Sys.CAP_DELETE)
def sys_cap_delete(k: "State", th: Thread, a: CapDeleteArgs, payload: bytes | None) -> Any:
    return caps.delete(_slot(th, a.slot))


@handles(Sys.CAP_REVOKE)
def sys_cap_revoke(k: "State", th: Thread, a: CapRevokeArgs, payload: bytes | None) -> Any:
    return caps.revoke(_slot(th, a.slot))


@handles(Sys.CAP_INSPECT)
def sys_cap_inspect(k: "State", th: Thread, a: CapInspectArgs, payload: bytes | None) -> Any:
    node = _slot(th, a.slot)
    return {**node.obj.describe(), "slot": node.slot, "rights": int(node.rights),
            "derived": len(node.children), "is_root": node.parent is None}


@handles(Sys.CAP_DERIVE)
def sys_cap_derive(k: "State", th: Thread, a: CapDeriveArgs, payload: bytes | None) -> Any:
    space = th.task.space
    node = space.lookup(a.src)
    slot = space.pick_slot(a.dst)
    space.derive(node, slot, a.mask)
    return slot


@handles(Sys.OBJ_DESTROY)
def sys_obj_destroy(k: "State", th: Thread, a: ObjDestroyArgs, payload: bytes | None) -> Any:
    node = th.task.space.lookup(a.slot, need=Rights.DELETE)
    lifecycle.destroy(k, node.obj, f"destroyed by task '{th.task.name}'")
    return None


# -- factories ------------------------------------------------------------------

def _factory(th: Thread, slot: int) -> Factory:
    return th.task.space.lookup(slot, ObjType.FACTORY, Rights.INVOKE).obj  # type: ignore[return-value]


def _thread(th: Thread, slot: int) -> Thread:
    return th.task.space.lookup(slot, ObjType.THREAD, Rights.WRITE).obj  # type: ignore[return-value]


@handles(Sys.GATE_CREATE)
def sys_gate_create(k: "State", th: Thread, a: GateCreateArgs, payload: bytes | None) -> Any:
    factory = _factory(th, a.factory)
    bound = _thread(th, a.thread) if a.thread is not None else None
    slot = th.task.space.pick_slot(a.dst)
    lifecycle.charge(factory)
    gate = Gate(factory, a.label, bound)
    k.gates.add(gate)
    th.task.space.insert(slot, gate, Rights.ALL)
    return slot


@handles(Sys.IRQ_CREATE)
def sys_irq_create(k: "State", th: Thread, a: IrqCreateArgs, payload: bytes | None) -> Any:
    factory = _factory(th, a.factory)
    slot = th.task.space.pick_slot(a.dst)
    lifecycle.charge(factory)
    th.task.space.insert(slot, Irq(factory), Rights.ALL)
    return slot


@handles(Sys.THREAD_CREATE)
def sys_thread_create(k: "State", th: Thread, a: ThreadCreateArgs, payload: bytes | None) -> Any:
    factory = _factory(th, a.factory)
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    slot = th.task.space.pick_slot(a.dst)
    lifecycle.charge(factory)
    new = Thread(factory, task)
    task.threads.append(new)
    th.task.space.insert(slot, new, Rights.ALL)
    return [slot, k.new_secret(new), new.id]


@handles(Sys.TASK_CREATE)
def sys_task_create(k: "State", th: Thread, a: TaskCreateArgs, payload: bytes | None) -> Any:
    name, quota, dst = a.name, a.quota, a.dst
    factory = _factory(th, a.factory)
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
def sys_factory_info(k: "State", th: Thread, a: FactoryInfoArgs, payload: bytes | None) -> Any:
    return _factory(th, a.factory).describe()


# -- binding and control -----------------------------------------------------------

@handles(Sys.GATE_BIND)
def sys_gate_bind(k: "State", th: Thread, a: GateBindArgs, payload: bytes | None) -> Any:
    gate: Gate = th.task.space.lookup(a.gate, ObjType.GATE, Rights.WRITE).obj  # type: ignore[assignment]
    target = _thread(th, a.thread)
    if gate.thread is not target:
        ipc.drop_gate_senders(k, gate, Err.PEER_DIED, f"gate {gate.id} was rebound to a new thread")
        gate.thread = target
        gate.generation += 1
    return gate.generation


def _irq(th: Thread, slot: int, need: Rights) -> Irq:
    return th.task.space.lookup(slot, ObjType.IRQ, need).obj  # type: ignore[return-value]


@handles(Sys.IRQ_ATTACH)
def sys_irq_attach(k: "State", th: Thread, a: IrqAttachArgs, payload: bytes | None) -> Any:
    obj = _irq(th, a.irq, Rights.WRITE)
    target = _thread(th, a.thread) if a.thread is not None else None
    irq.attach(k, obj, target, a.label)
    return None


@handles(Sys.IRQ_TRIGGER)
def sys_irq_trigger(k: "State", th: Thread, a: IrqTriggerArgs, payload: bytes | None) -> Any:
    irq.trigger(k, _irq(th, a.irq, Rights.INVOKE))
    return None


@handles(Sys.IRQ_MASK)
def sys_irq_mask(k: "State", th: Thread, a: IrqMaskArgs, payload: bytes | None) -> Any:
    obj = _irq(th, a.irq, Rights.WRITE)
    irq.mask(k, obj, a.masked)
    return {"masked": obj.masked, "pending": obj.pending}


def _gate_or_clear(th: Thread, slot: int | None, current: Gate | None) -> Gate | None:
    if slot is None:
        return current
    if slot == 0:
        return None
    return th.task.space.lookup(slot, ObjType.GATE, Rights.INVOKE).obj  # type: ignore[return-value]


@handles(Sys.THREAD_CONTROL)
def sys_thread_control(k: "State", th: Thread, a: ThreadControlArgs, payload: bytes | None) -> Any:
    target = _thread(th, a.thread)
    new_pager = _gate_or_clear(th, a.pager, target.pager)
    new_handler = _gate_or_clear(th, a.handler, target.handler)
    if a.priority is not None and not 0 <= a.priority <= 255:
        raise AbiError(Err.INVALID, f"priority {a.priority} outside 0..255")
    if a.alien and new_handler is None:
        raise AbiError(Err.INVALID, "an alien thread needs an exception handler")
    target.pager, target.handler = new_pager, new_handler
    if a.alien is not None:
        target.alien = a.alien
    if a.priority is not None:
        target.priority = a.priority
    return target.describe()


@handles(Sys.TASK_MAP)
def sys_task_map(k: "State", th: Thread, a: TaskMapArgs, payload: bytes | None) -> Any:
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    node = th.task.space.lookup(a.src, need=Rights.GRANT)
    task.space.check_free(a.dst)
    task.space.derive(node, a.dst, a.mask)
    return a.dst


@handles(Sys.TASK_WATCH)
def sys_task_watch(k: "State", th: Thread, a: TaskWatchArgs, payload: bytes | None) -> Any:
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    if not 0 < a.pid < 2 ** 31:
        raise AbiError(Err.INVALID, f"pid {a.pid} is outside 1..2**31-1")
    if task.peer_pid is not None and task.peer_pid != a.pid:
        # A thread said HELLO before we were told the task's process, and from another
        # process: someone spent a secret that was not theirs. The task cannot be trusted
        # (its process's own HELLO was refused, or will be): it ends, its handler is told.
        k.stats["wrong_process"] += 1
        task.pid = a.pid
        lifecycle.kill_task(k, task, f"a thread of it was bound from process {task.peer_pid}, "
                                     f"not from its own process {a.pid}", None)
        return None
    k.wire.watch(task, a.pid)
    return None


@handles(Sys.KERNEL_INFO)
def sys_kernel_info(k: "State", th: Thread, a: KernelInfoArgs, payload: bytes | None) -> Any:
    th.task.space.lookup(a.kernel, ObjType.KERNEL, Rights.INVOKE)
    info = {**k.info(), "faults": faults.summary()}
    info["stats"]["handled"] = {Sys(n).name: c for n, c in sorted(k.handled.items())}
    if k.linux is not None:
        info["stats"].update(k.linux.stats)      # trapped Linux system calls (kernel/core/linux.py)
    _cap_graph(k, info["tasks"])
    return info


def _cap_graph(k: "State", rows: list[dict[str, Any]]) -> None:
    """Each task row gets `caps`: [slot, type, object id, rights, label, parent task id,
    parent slot] per slot (label: a gate's, else None; parent: where it was derived from)."""
    owner = {id(t.space): t.id for t in k.tasks.values()}
    for row in rows:
        task = k.tasks[row["id"]]
        out = []
        for slot, node in sorted(task.space.slots.items()):
            p = node.parent
            out.append([slot, node.obj.kind.name.lower(), node.obj.id, int(node.rights),
                        getattr(node.obj, "label", None) if isinstance(node.obj, Gate) else None,
                        owner.get(id(p.space)) if p is not None else None,
                        p.slot if p is not None else None])
        row["caps"] = out
    _links(k, rows)


def _links(k: "State", rows: list[dict[str, Any]]) -> None:
    """Each task row gets what the graph needs beyond capabilities: `links` [thread, pager
    gate, handler gate, alien] per live thread; `served` [gate, label, thread] per gate bound
    to one of its threads (any gate some task holds or some thread has as pager or handler);
    `irqs` [irq, label, thread] per IRQ attached to one of its threads; `maps` [vaddr, pages,
    rights, from task] per run of consecutive pages mapped with the same rights from the same
    task (from: the task of the mapping it was derived from, None for an original)."""
    gates: dict[int, Gate] = {}
    for t in k.tasks.values():
        gates.update((n.obj.id, n.obj) for n in t.space.slots.values() if isinstance(n.obj, Gate))
        gates.update((g.id, g) for th in t.threads for g in (th.pager, th.handler) if g is not None)
    served: dict[int, list[list[int]]] = {}
    for g in gates.values():
        if g.alive and g.thread is not None and g.thread.alive:
            served.setdefault(g.thread.task.id, []).append([g.id, g.label, g.thread.id])
    for row in rows:
        task = k.tasks[row["id"]]
        live = [th for th in task.threads if th.alive]
        row["links"] = [[th.id, th.pager.id if th.pager else None,
                         th.handler.id if th.handler else None, th.alien] for th in live]
        row["served"] = sorted(served.get(task.id, []))
        row["irqs"] = sorted([i.id, i.label, th.id] for th in live for i in th.attached_irqs)
        row["maps"] = _map_runs(k.memory.spaces.get(task.id) if k.memory else None)


def _map_runs(a: "memory.AddressSpace | None") -> list[list[Any]]:
    if a is None:
        return []
    runs: list[list[Any]] = [[0, a.identity, int(MemRights.RWX), None]] if a.identity else []
    last = -2
    for vp in sorted(v for v in a.pages if v >= a.identity):
        n = a.pages[vp]
        src = n.parent.aspace.task.id if n.parent is not None else None
        if runs and vp == last + 1 and runs[-1][2] == n.rights and runs[-1][3] == src:
            runs[-1][1] += 1
        else:
            runs.append([vp << PAGE_SHIFT, 1, n.rights, src])
        last = vp
    return runs


@handles(Sys.TRACE)
def sys_trace(k: "State", th: Thread, a: TraceArgs, payload: bytes | None) -> Any:
    th.task.space.lookup(a.kernel, ObjType.KERNEL, Rights.INVOKE)
    if not 0 <= a.limit <= trace.MAX_CAPACITY:
        raise AbiError(Err.INVALID, f"limit {a.limit} outside 0..{trace.MAX_CAPACITY}")
    if a.action == "on":
        return trace.start(a.limit)
    if a.action == "off":
        return trace.stop()
    if a.action == "status":
        return trace.status()
    if a.action == "drain":
        events = trace.drain(a.limit)
        return {**trace.status(), "events": events}
    raise AbiError(Err.INVALID, f"unknown trace action {a.action!r} (on, off, status, drain)")


@handles(Sys.EXIT)
def sys_exit(k: "State", th: Thread, a: ExitArgs, payload: bytes | None) -> Any:
    k.answer(th, encode_ok())
    lifecycle.kill_task(k, th.task, f"exited with status {a.status}", a.status)
    return LATER


# -- memory (kernel/core/memory.py, docs/MEMORY.md) ----------------------------------------

@handles(Sys.MEM_ATTACH)
def sys_mem_attach(k: "State", th: Thread, a: MemAttachArgs, payload: bytes | None) -> Any:
    # Memory is a right over one's own task: a task whose own capability lacks WRITE (or
    # who names another task) gets no RAM at all.
    task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj
    if task is not th.task:
        raise AbiError(Err.INVALID, "MEM_ATTACH joins the caller's own address space only")
    return k.memory.attach(th.task, bool(a.signal))


@handles(Sys.MEM_FAULT)
def sys_mem_fault(k: "State", th: Thread, a: MemFaultArgs, payload: bytes | None) -> Any:
    result = pagefault.fault(k, th, a.vaddr, a.access, a.ip)
    return LATER if result is None else result


@handles(Sys.MEM_UNMAP)
def sys_mem_unmap(k: "State", th: Thread, a: MemUnmapArgs, payload: bytes | None) -> Any:
    mem = k.memory
    count, affected = mem.unmap(th.task, a.vaddr, a.order, bool(a.self))
    mem.stats["shootdowns"] += bool(affected)
    if memory.Shootdown(mem, th, count, affected).start():
        return count
    return LATER


@handles(Sys.MEM_SIGMA0)
def sys_mem_sigma0(k: "State", th: Thread, a: MemSigma0Args, payload: bytes | None) -> Any:
    th.task.space.lookup(a.kernel, ObjType.KERNEL, Rights.INVOKE)
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    mem = k.memory
    if any(s.identity for s in mem.spaces.values() if s.task.alive and s.task is not task):
        raise AbiError(Err.BUSY, "another live task is already sigma0")
    space = mem.space(task)
    if space.pages:
        raise AbiError(Err.BUSY, f"task '{task.name}' already has mappings; sigma0 starts empty")
    space.identity = mem.ram.frames
    return {"frames": mem.ram.frames, "size": mem.ram.size}


@handles(Sys.MEM_DMA)
def sys_mem_dma(k: "State", th: Thread, a: MemDmaArgs, payload: bytes | None) -> Any:
    th.task.space.lookup(a.kernel, ObjType.KERNEL, Rights.INVOKE)
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    space = k.memory.space(task)
    if space.chan is not None:
        raise AbiError(Err.BUSY, f"task '{task.name}' attached already; MEM_DMA comes first")
    space.dma = True
    return {"frames": k.memory.ram.frames, "size": k.memory.ram.size}


@handles(Sys.MEM_DMA_CHECK)
def sys_mem_dma_check(k: "State", th: Thread, a: MemDmaCheckArgs, payload: bytes | None) -> Any:
    if not k.memory.space(th.task).dma:
        raise AbiError(Err.NO_RIGHTS, f"task '{th.task.name}' is not the machine's DMA engine "
                                      "(MEM_DMA); only the DMA engine checks DMA ranges")
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.INVOKE).obj  # type: ignore[assignment]
    return k.memory.dma_check(task, _dma_ranges(payload))


def _dma_ranges(raw: bytes | None) -> list[tuple[int, int, bool]]:
    if not raw:
        raise AbiError(Err.INVALID, "no DMA ranges: the payload holds DMA_RANGE records")
    if len(raw) % DMA_RANGE.size:
        raise AbiError(Err.INVALID, f"ranges: {len(raw)} bytes is not a whole number of "
                                    f"{DMA_RANGE.size}-byte records")
    if len(raw) // DMA_RANGE.size > MAX_DMA_RANGES:
        raise AbiError(Err.TOO_BIG, f"at most {MAX_DMA_RANGES} ranges at once")
    return [(addr, length, bool(flags & DMA_WRITE))
            for addr, length, flags in DMA_RANGE.iter_unpack(raw)]


@handles(Sys.MEM_QUERY)
def sys_mem_query(k: "State", th: Thread, a: MemQueryArgs, payload: bytes | None) -> Any:
    task = th.task
    if a.task is not None:
        task = th.task.space.lookup(a.task, ObjType.TASK, Rights.INVOKE).obj  # type: ignore[assignment]
    return k.memory.query(task, a.vaddr, a.order)


# -- chaos (kernel/core/faults.py, docs/CHAOS.md) ---------------------------------------------

@handles(Sys.FAULT)
def sys_fault(k: "State", th: Thread, a: FaultArgs, payload: bytes | None) -> Any:
    th.task.space.lookup(a.kernel, ObjType.KERNEL, Rights.INVOKE)
    return faults.control(k, th, a.op, a.spec)


# -- L⁴Linux (kernel/core/linux.py, docs/L4LINUX.md) ----------------------------------------

@handles(Sys.LINUX_ATTACH)
def sys_linux_attach(k: "State", th: Thread, a: LinuxAttachArgs, payload: bytes | None) -> Any:
    task: Task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj  # type: ignore[assignment]
    handler: Gate = th.task.space.lookup(a.handler, ObjType.GATE, Rights.INVOKE).obj  # type: ignore[assignment]
    linux.attach(k, th.task, a.task, task, handler, a.pid, a.fd)
    return None


@handles(Sys.LINUX_MEM_READ)
def sys_linux_mem_read(k: "State", th: Thread, a: LinuxMemReadArgs, payload: bytes | None) -> Any:
    return linux.mem_read(k, th.task, a.task, a.addr, a.length)


@handles(Sys.LINUX_MEM_WRITE)
def sys_linux_mem_write(k: "State", th: Thread, a: LinuxMemWriteArgs,
                        payload: bytes | None) -> Any:
    return linux.mem_write(k, th.task, a.task, a.addr, payload or b"")


@handles(Sys.LINUX_ADDFD)
def sys_linux_addfd(k: "State", th: Thread, a: LinuxAddfdArgs, payload: bytes | None) -> Any:
    return linux.addfd(k, th.task, a.task, a.fd, a.target)


assert set(TABLE) | {Sys.HELLO} == set(Sys), "every system call has a handler"
assert FIRST_FREE_SLOT < MAX_SLOTS
