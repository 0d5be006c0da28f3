"""Object creation against quotas, object destruction, and task death.

Contracts:
- Every object is charged to a Factory; creation beyond its limit is QUOTA. A task's own
  factory is carved out of its creator's (limit + 1 for the task itself), so quotas nest
  and no task can exhaust kernel memory.
- An object is destroyed when its last capability goes (or by OBJ_DESTROY with the DELETE
  right, which first deletes every capability to it). A task holds a capability to itself
  (SLOT_TASK), so a task ends only by OBJ_DESTROY, EXIT or the death of its process — or
  when the last capability to it held elsewhere goes while no process runs it and no
  thread of it is connected (`Task.unreachable`: a sub-task orphaned by its creator).
- Task death (process exit seen through its pidfd, EXIT, or destruction): every thread is
  released (partners blocked on it get PEER_DIED, never a hang), all its capabilities are
  deleted recursively (so objects only it held die too), and the exception handler of its
  main thread receives an `abi.ExitNotice` (Proto.EXCEPTION, {"event": "exit", ...}).

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import caps, ipc, irq, trace
from ..abi import AbiError, Err, ExitNotice
from .irq import Irq
from .objects import Factory, Gate, KObject, Task, Thread, TState

if TYPE_CHECKING:
    from .state import State


def charge(factory: Factory, amount: int = 1) -> None:
    if not factory.alive:
        raise AbiError(Err.QUOTA, f"factory {factory.id} belongs to a task that is gone")
    if factory.used + amount > factory.limit:
        raise AbiError(Err.QUOTA, f"factory {factory.id} quota exhausted: {factory.used} of "
                                  f"{factory.limit} used, {amount} more asked")
    factory.used += amount


def refund(factory: Factory | None, amount: int = 1) -> None:
    """Give `amount` back; a destroyed factory with nothing left charged returns its limit."""
    while factory is not None:
        factory.used -= amount
        if not (factory.closed and factory.used == 0):
            return
        factory.closed = False          # settled: never returns its limit twice
        amount, factory = factory.limit, factory.factory


def on_last_cap(k: "State", obj: KObject) -> None:
    """The last capability to `obj` went away: destroy it."""
    destroy(k, obj, "its last capability was deleted")


def destroy(k: "State", obj: KObject, why: str) -> None:
    if not obj.alive:
        return
    if isinstance(obj, Task):
        kill_task(k, obj, f"task destroyed: {why}", status=None)
        return          # kill_task ends by marking it dead and refunding
    obj.alive = False
    for node in list(obj.nodes):
        caps.delete(node)
    if isinstance(obj, Gate):
        ipc.drop_gate_senders(k, obj, Err.CANCELED, f"gate {obj.id} was destroyed ({why})")
        obj.thread = None
    elif isinstance(obj, Irq):
        irq.destroyed(obj)
    elif isinstance(obj, Thread):
        kill_thread(k, obj, f"thread {obj.id} was destroyed ({why})")
    elif isinstance(obj, Factory):
        obj.closed = True
        refund(obj, 0)                  # settles at once if nothing is charged to it
        return
    refund(obj.factory)


def kill_thread(k: "State", th: Thread, reason: str) -> None:
    """Release everything `th` takes part in; answer its own call with CANCELED if it is live."""
    th.alive = False
    if th.state == TState.SENDING and th.sending is not None:
        ipc.cancel_sender(th.sending)
    elif th.state == TState.AWAIT_REPLY and th.sending is not None:
        th.sending.live = False
    ipc.release_receiver(k, th, f"partner thread {th.id} of task '{th.task.name}' died: {reason}")
    for gate in k.gates_bound_to(th):
        gate.thread = None
    irq.thread_gone(th)
    if th.conn is not None and th.busy:
        th.on_answer = None            # a dying thread's answer is not reported to anyone
        k.fail(th, Err.CANCELED, reason)
    k.wire.unbind(th)
    th.set_state(TState.IDLE)
    th.sending = None


def kill_task(k: "State", task: Task, reason: str, status: int | None) -> None:
    """The task is gone: release its threads, delete its capabilities, tell its handler."""
    if not task.alive or task.exit_reason is not None:
        return
    task.exit_reason = reason
    if trace.ON:
        trace.death(task, reason, status)
    handler = task.threads[0].handler if task.threads else None
    for th in task.threads:
        if th.alive:
            kill_thread(k, th, reason)
            refund(th.factory)
    for node in sorted(task.space.all_nodes(), key=lambda n: n.slot):
        if node.space is task.space and node.slot in task.space.slots:
            caps.delete(node)
    task.alive = False
    k.wire.unwatch(task)
    own = task.own_factory
    if own.alive:
        destroy(k, own, f"task '{task.name}' died")
    refund(task.factory)
    k.tasks.pop(task.id, None)
    k.memory.reap()          # its mappings, and every mapping derived from them, go now
    k.log(f"task '{task.name}' ({task.id}) gone: {reason}")
    if handler is not None and handler.alive:
        ipc.kernel_send(k, handler, ExitNotice(task.name, task.id, task.pid, reason, status))


def pid_status(pid: int) -> int | None:
    """Exit status of an ended process (as `os.waitstatus_to_exitcode`: -N for signal N):
    reaped if it is a child of ours; else read from its zombie's /proc/PID/stat while its
    own parent has not reaped it (a Linux fork child's parent is another Linux process,
    whose waits the personality serves, so it stays a zombie); None if neither says."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return zombie_status(pid)
    return os.waitstatus_to_exitcode(status) if done else None


def zombie_status(pid: int) -> int | None:
    """A zombie's wait status from /proc/PID/stat (field 52, exit_code), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 50 or fields[0] != b"Z":
        return None
    return os.waitstatus_to_exitcode(int(fields[49]))
