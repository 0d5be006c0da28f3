"""The launcher's name service: its protocol (NAMES, the reference below), the task side
(`lookup`: obtain a capability by name at run time) and the serving side (`Supervisor`).

Every task started by the launcher holds a capability `launcher` (invoke only) to a gate the
launcher made for it alone; its label tells the launcher which task calls, so no task can
ask in another's name. `lookup(l4, "svc")` asks for the capability the image (or a later
`l4run attach`) routed to this task under the local name "svc"; the answer maps it into the
caller's capability space and `l4.caps["svc"]` is updated.

Use it for services attached after the task started. Capabilities from the image stay valid
across a server's restart (the launcher rebinds the gate), so lookup is never needed for them.

Protocol NAMES, declared here once (kernel.user.rpc), spoken on the `launcher` gate:

    lookup(name) -> None          with one MAP_CAP item (the capability routed to the caller
                                  under `name`) in the caller's one-slot receive window.
                                  Errors: NOT_ROUTED (no capability of that name is routed
                                  to the calling task)
    end_client(service, label) -> None
                                  end (SIGKILL, as `l4run kill`) the task(s) the image routes
                                  to `service` under `label`; the caller must be the task
                                  that provides `service` (a server may end its own clients
                                  and nothing else: Nitpicker's kill mode). The victim's
                                  restart policy decides what follows. Errors: DENIED (the
                                  caller does not provide `service`), NOT_ROUTED (no task is
                                  routed there)
    client_pid(service, label) -> {task, pid, kernel_pid}
                                  the running task routed to the caller's `service` under
                                  `label` and its host process (the pid the kernel watches
                                  for it), and the kernel's process; for a privileged server
                                  that acts on its clients' host threads (the CPU
                                  reservation manager, servers/rt). Same caller rule and
                                  errors as end_client; NOT_ROUTED also when no such task
                                  runs now, or several do (the answer must name one)
    task_pid(task) -> pid         the host process of running task `task` (0: not running);
                                  privileged callers only (DENIED otherwise)

The launcher's supervisor thread serves it (`Supervisor`, with `kernel.user.rpc.serve`; the
gate's label names the calling task), and takes the kernel's death notices (Proto.EXCEPTION)
on the same thread through the framework's kernel-message handler (`on_exception`).
"""
from __future__ import annotations

from typing import Any, Callable, cast

from kernel.user.client import L4, map_cap
from kernel.user.errors import InvalidArgument
from kernel.user.rpc import Call, Protocol, RemoteError, Reply, RpcError, op

LOOKUP_BASE = 3000         # where lookups land in the caller's capability space
CAP_NAME = "launcher"

NAMES = Protocol("launcher.names", [
    op("lookup", 1, ["name:str"], None, errors=["NOT_ROUTED"], caps_out=1,
       doc="the capability routed to the caller under `name`, as one item"),
    op("end_client", 2, ["service:str", "label:int"], None, errors=["DENIED", "NOT_ROUTED"],
       doc="end the task routed to the caller's `service` under `label`"),
    op("client_pid", 3, ["service:str", "label:int"], ("task", "pid", "kernel_pid"),
       errors=["DENIED", "NOT_ROUTED"],
       doc="the task routed to the caller's `service` under `label` and its host pid"),
    op("task_pid", 4, ["task:str"], "pid", errors=["DENIED"],
       doc="the host pid of a running task (privileged callers only)"),
], tag=0x4C4E)


class LookupError_(InvalidArgument):
    """The launcher has no route of that name for this task."""


def lookup(l4: L4, name: str, timeout_ms: float | None = 5000) -> int:
    """The slot of capability `name`, mapped into this task by the launcher."""
    if CAP_NAME not in l4.caps:
        raise LookupError_(f"this task holds no '{CAP_NAME}' capability (not started by l4run)")
    slot = l4.caps.get(name, 0)
    if slot < LOOKUP_BASE:
        used = {s for s in l4.caps.values() if s >= LOOKUP_BASE}
        slot = next(s for s in range(LOOKUP_BASE, LOOKUP_BASE + 1000) if s not in used)
    else:
        try:
            l4.cap_delete(slot)
        except Exception:
            pass
    # stub ops are attributes made from the declaration: the checker sees them as Any
    names = cast(Any, NAMES.client(l4, l4.caps[CAP_NAME], timeout=timeout_ms))
    try:
        names.lookup(name, _window=(slot, 1))
    except RemoteError as e:
        raise LookupError_(f"lookup of '{name}': {e.reason}") from None
    if not names.last_items:
        raise LookupError_(f"lookup of '{name}': no capability in the answer")
    l4.caps[name] = names.last_items[0][1]
    return l4.caps[name]


Route = tuple[int, int]        # (the launcher's gate slot, rights to map it with)


class Supervisor:
    """What the launcher's supervisor thread serves: NAMES on each task's `launcher` gate,
    and the kernel's death notices. `find(label, name)` answers the route of `name` for the
    task behind gate `label` (or None); `on_exit(body)` takes each exit notice;
    `end(label, service, client_label)` ends a client of the caller's service (None: done,
    else (error, reason)). Runs on the supervisor thread; the callbacks must be safe to call
    from it."""

    def __init__(self, find: Callable[[int, str], Route | None],
                 on_exit: Callable[[dict], None],
                 end: Callable[[int, str, int], tuple[str, str] | None] | None = None,
                 pids: Callable[[int, str, int], tuple[str, int, int] | tuple[str, str]]
                 | None = None,
                 task_pid: Callable[[int, str], int | None] | None = None) -> None:
        self.find, self.on_exit, self.end = find, on_exit, end
        self.pids, self.task_pids = pids, task_pid

    def client_pid(self, call: Call, service: str, label: int) -> tuple[str, int, int]:
        if self.pids is None:
            raise RpcError("DENIED", "this launcher tells no pids")
        got = self.pids(call.label, service, label)
        if isinstance(got[1], str):
            raise RpcError(str(got[0]), got[1])
        return cast(tuple[str, int, int], got)

    def task_pid(self, call: Call, task: str) -> int:
        pid = None if self.task_pids is None else self.task_pids(call.label, task)
        if pid is None:
            raise RpcError("DENIED", "task_pid is for privileged tasks only")
        return pid

    def end_client(self, call: Call, service: str, label: int) -> None:
        refused = ("DENIED", "this launcher ends no clients") if self.end is None \
            else self.end(call.label, service, label)
        if refused is not None:
            raise RpcError(*refused)

    def lookup(self, call: Call, name: str) -> Reply:
        route = self.find(call.label, name)
        if route is None:
            raise RpcError("NOT_ROUTED", f"no capability named {name!r} is routed to this task")
        return Reply(None, [map_cap(route[0], route[1])])

    def on_exception(self, call: Call, body: dict) -> None:
        if body.get("event") == "exit":
            self.on_exit(body)
