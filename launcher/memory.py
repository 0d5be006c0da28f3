"""Memory servers in system images: the `[memory]` table, moe sessions, cleanup on death.

Format:

    [memory]
    sigma0 = true            # start sigma0, the owner of all RAM (default true)
    moe = true               # start moe, dataspaces and paging for tasks (default true)
    reserve = "4M"           # optional: sigma0 never hands out the first 4 MiB (DMA buffers
                             # that [[device]] drivers place at fixed physical addresses)

    [[task]]
    name = "writer"
    memory = { quota = "8M" }     # or memory = "8M": a moe session with this quota

An image with `[memory]` gets tasks of its own, started before every task of the image:

    sigma0  `servers.sigma0.server:main` - made sigma0 by the launcher (MEM_SIGMA0) between
            creating its kernel task and starting its process; provides the service
            "sigma0" (another task may get a capability to it with a label >= 2: label 0 is
            the launcher's, 1 is moe's). Restarted on failure, together with moe.
    moe     `servers.moe.server:main` - holds a capability "sigma0" (label 1). It provides
            no service: its admin gate (label 0) is created and held by the launcher only,
            so no task can open sessions or declare another task dead.

A task with `memory` starts after moe runs. Between creating its kernel task and starting
its process the launcher opens a moe session for it (`session(name=TASK, quota)` on the
admin gate), maps the session gate into the task as `l4.caps["moe"]` (invoke only), and
makes that gate its main thread's pager (THREAD_CONTROL pager=), so `kernel.user.vm.VM` page
faults in regions of its session are served by moe.

Death: when the supervisor learns that a task with a session died (any way: exit, kill -9,
stop, restart), it calls `client_gone(n)` on moe's admin gate before restarting anything:
moe frees the session's dataspaces and quota and returns wholly free 1 MiB blocks to
sigma0. A restarted task gets a fresh session. When moe itself dies, every session died
with it: the tasks with sessions are restarted with moe (their memory is gone). Likewise,
for each sigma0 capability a dead task held (moe's included), the launcher calls sigma0's
`client_gone(label)` on its own gate (label 0), and sigma0 frees that label's frames.
Labels of sigma0 clients are therefore unique in an image.

Contracts: `task_memory` and `check_memory` add every mistake to the image checker as
"FILE: KEY: REASON" and change nothing unless the image is clean. `MemoryWiring` runs in
the launcher's main thread only (it makes blocking calls to moe, each bounded by CALL_MS).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel.abi import Rights
from kernel.user import errors
from kernel.user.rpc import ADMIN_LABEL, RemoteError

from .zygote import SpawnError

HAL_RUN = "launcher.devices:hal_task"   # the HAL task (launcher/devices.py): the machine's DMA

if TYPE_CHECKING:
    from .image import TaskSpec, _Checker
    from .system import Launcher, TaskRun

SIGMA0_TASK = "sigma0"            # task and service name
MOE_TASK = "moe"
SESSION_CAP = "moe"               # a client's local name of its session gate
SIGMA0_RUN = "servers.sigma0.server:main"
MOE_RUN = "servers.moe.server:main"
LAUNCHER_LABEL = ADMIN_LABEL      # sigma0's and moe's admin gate: the launcher's own
MOE_SIGMA0_LABEL = 1              # moe's label at sigma0
RESERVED_SIGMA0_LABELS = (LAUNCHER_LABEL, MOE_SIGMA0_LABEL)
MEMORY_KEYS = {"sigma0", "moe", "reserve"}
TASK_MEMORY_KEYS = {"quota"}
MOE_OBJECTS = 8192                # kernel objects moe may create (a gate per dataspace)
CALL_MS = 10_000                  # bound on one launcher -> moe/sigma0 call
DEFAULT_RAM = 64 << 20            # the kernel's default (kernel.core.memory.DEFAULT_RAM)


@dataclass(frozen=True)
class MemorySpec:
    sigma0: bool = True
    moe: bool = True
    reserve: int = 0


# -- checking ------------------------------------------------------------------------------

def task_memory(c: "_Checker", key: str, v: Any) -> int | None:
    """A task's `memory`: "8M" or { quota = "8M" }. Answers the quota in bytes."""
    from .image import parse_size
    if isinstance(v, dict):
        for k in sorted(set(v) - TASK_MEMORY_KEYS):
            c.bad(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(TASK_MEMORY_KEYS))})")
        if "quota" not in v:
            c.bad(f"{key}.quota", "missing: the most memory the task's moe session may hold, "
                                  "e.g. quota = \"8M\"")
            return None
        v, key = v["quota"], f"{key}.quota"
    try:
        return parse_size(v)
    except ValueError as e:
        c.bad(key, f"bad size: {e} (memory = \"8M\" or memory = {{ quota = \"8M\" }})")
        return None


def _spec(c: "_Checker", raw: Any, ram: int) -> MemorySpec | None:
    from .image import parse_size
    if not isinstance(raw, dict):
        c.bad("memory", "[memory] must be a table (sigma0 = true, moe = true)")
        return None
    for k in sorted(set(raw) - MEMORY_KEYS):
        c.bad(f"memory.{k}", f"unknown key (known: {', '.join(sorted(MEMORY_KEYS))})")
    sigma0 = c.typed(raw, "sigma0", "memory", bool, True)
    moe = c.typed(raw, "moe", "memory", bool, True)
    if moe and not sigma0:
        c.bad("memory.moe", "moe gets its memory from sigma0: it needs sigma0 = true")
    reserve = 0
    if "reserve" in raw:
        try:
            reserve = parse_size(raw["reserve"])
            if reserve >= ram:
                c.bad("memory.reserve", f"reserving {raw['reserve']!r} leaves nothing of the "
                                        f"RAM ({ram} bytes; see system.ram)")
        except ValueError as e:
            c.bad("memory.reserve", f"bad size: {e}")
    return MemorySpec(sigma0, moe, reserve)


def check_memory(c: "_Checker", data: dict, tasks: list["TaskSpec"],
                 ram: int | None) -> MemorySpec | None:
    """Check `[memory]` and the tasks' `memory`; add the sigma0 and moe tasks to `tasks`."""
    ram = ram or DEFAULT_RAM
    spec = _spec(c, data["memory"], ram) if "memory" in data else None
    servers = {SIGMA0_TASK} if spec and spec.sigma0 else set()
    if spec and spec.moe:
        servers.add(MOE_TASK)
    sigma0_labels: dict[int, str] = {}
    for i, t in enumerate(tasks):
        where = f"task[{i}] ({t.name})"
        if t.memory is not None:
            if MOE_TASK not in servers:
                c.bad(f"{where}.memory", "a moe session needs the memory servers: add "
                                         "[memory] with moe = true")
            elif t.memory > ram:
                c.bad(f"{where}.memory", f"quota {t.memory} bytes is more than the RAM "
                                         f"({ram} bytes; see system.ram)")
            if any(cap.local == SESSION_CAP for cap in t.caps):
                c.bad(f"{where}.caps.{SESSION_CAP}", f"the local name {SESSION_CAP!r} is "
                                                     f"taken by the task's moe session")
        if t.name in servers:
            c.bad(f"{where}.name", f"task name {t.name!r} is reserved for the launcher's "
                                   f"memory server in an image with [memory]")
        for svc in t.provides:
            if svc in servers:
                c.bad(f"{where}.provides", f"service {svc!r} is reserved in an image with [memory]")
        for cap in t.caps:
            if cap.service == SIGMA0_TASK and SIGMA0_TASK in servers \
                    and cap.label in RESERVED_SIGMA0_LABELS:
                c.bad(f"{where}.caps.{cap.local}.label",
                      f"sigma0 label {cap.label} is reserved (0: the launcher, 1: moe); "
                      f"give each sigma0 client its own label >= 2")
            elif cap.service == SIGMA0_TASK and SIGMA0_TASK in servers:
                if sigma0_labels.setdefault(cap.label, t.name) != t.name:
                    c.bad(f"{where}.caps.{cap.local}.label",
                          f"sigma0 label {cap.label} is already task "
                          f"{sigma0_labels[cap.label]!r}'s: sigma0 tells clients apart by label")
    if spec is None or c.problems:
        return spec
    _add_tasks(tasks, spec)
    return spec


def _add_tasks(tasks: list["TaskSpec"], spec: MemorySpec) -> None:
    from .image import CapSpec, TaskSpec
    added: list[TaskSpec] = []
    if spec.sigma0:
        added.append(TaskSpec(name=SIGMA0_TASK, run=SIGMA0_RUN, args=[str(spec.reserve)],
                              provides=[SIGMA0_TASK], restart="on-failure",
                              restart_dependents=True, priority=200))
    if spec.moe:
        added.append(TaskSpec(name=MOE_TASK, run=MOE_RUN, restart="on-failure", priority=190,
                              quota=MOE_OBJECTS,
                              caps=[CapSpec(SIGMA0_TASK, SIGMA0_TASK, int(Rights.INVOKE),
                                            MOE_SIGMA0_LABEL)]))
        for t in tasks:
            if t.memory is not None and MOE_TASK not in t.depends_on:
                t.depends_on.append(MOE_TASK)
    tasks[:0] = added


# -- the launcher side ---------------------------------------------------------------------

class MemoryWiring:
    """sigma0's kernel set-up, moe sessions for tasks, `client_gone` when one dies.

    Owned by the launcher's main thread. `sessions`: task name -> (session number, the
    launcher's slot of the session gate), for the live moe incarnation only."""

    def __init__(self, launcher: "Launcher") -> None:
        self.launcher = launcher
        self.spec: MemorySpec | None = getattr(launcher.image, "memory", None)
        self.admin: Any = None            # servers.moe.MoeAdmin on our admin gate
        self.admin_gate = 0
        self.sigma0_gate = 0
        self.sessions: dict[str, tuple[int, int]] = {}

    def _server(self, t: "TaskRun", name: str) -> bool:
        return t.spec.name == name and self.spec is not None and t.spec.run == \
            (SIGMA0_RUN if name == SIGMA0_TASK else MOE_RUN)

    # -- when a task is created (before its process starts) --------------------------
    def wire(self, t: "TaskRun", mine: dict[str, int], slot: int) -> None:
        """Set up `t` (kernel task created, process not started yet). Raises SpawnError."""
        root = self.launcher.root
        assert root is not None
        try:
            if t.spec.run == HAL_RUN:
                root.mem_dma(t.slot)          # the hardware: every frame (hal/ram.py)
            if self._server(t, SIGMA0_TASK):
                root.mem_sigma0(t.slot)
                self.sigma0_gate = self._gate(self.sigma0_gate, t.thread)
            elif self._server(t, MOE_TASK):
                self.sessions.clear()             # an earlier moe took them along
                self.admin_gate = self._gate(self.admin_gate, t.thread)
                from servers.moe import MoeAdmin
                self.admin = MoeAdmin(root, self.admin_gate, timeout=CALL_MS)
        except errors.L4Error as e:
            raise SpawnError(f"cannot set up memory server {t.spec.name}: {e}") from None
        if t.spec.memory is not None:
            self._session(t, mine, slot)

    def _gate(self, gate: int, thread: int) -> int:
        """Our gate to a memory server: made once, rebound to each new incarnation."""
        root = self.launcher.root
        assert root is not None
        if gate:
            root.bind_gate(gate, thread)
            return gate
        return int(root.create_gate(LAUNCHER_LABEL, thread=thread))

    def _session(self, t: "TaskRun", mine: dict[str, int], slot: int) -> None:
        root, name = self.launcher.root, t.spec.name
        assert root is not None
        moe = self.launcher.tasks.get(MOE_TASK)
        if self.admin is None or moe is None or moe.state not in ("starting", "running"):
            raise SpawnError(f"task {name} asks for memory, but moe is not running")
        self._close(name)                     # a session an earlier incarnation left behind
        try:
            gate, number = self.admin.open(name, t.spec.memory)
            root.task_map(t.slot, gate, slot, Rights.INVOKE)
            root.thread_control(t.thread, pager=gate)
        except (errors.L4Error, RemoteError) as e:
            raise SpawnError(f"no moe session for {name}: {e}") from None
        self.sessions[name] = (number, gate)
        mine[SESSION_CAP] = slot

    # -- when a task died ---------------------------------------------------------------------
    def on_exit(self, t: "TaskRun") -> None:
        """The supervisor saw `t` die: tell moe (or, if moe died, restart its clients), and
        tell sigma0 to take back the frames of each sigma0 label the task held."""
        name = t.spec.name
        if self._server(t, MOE_TASK):
            self.admin_sessions_died()
        else:
            freed = self._close(name)
            if freed is not None:
                self.launcher.event(f"moe freed {name}'s memory: {freed['dataspaces']} "
                                    f"dataspace(s), {freed['bytes']} bytes")
        if self._server(t, SIGMA0_TASK):
            return                                # its successor starts with all RAM free
        for cap in t.spec.caps:
            if cap.service == SIGMA0_TASK and self.sigma0_gate:
                self._sigma0_gone(name, cap.label)

    def _sigma0_gone(self, name: str, label: int) -> None:
        s0 = self.launcher.tasks.get(SIGMA0_TASK)
        if self.launcher.stopping or s0 is None or s0.state not in ("starting", "running"):
            return
        try:
            n = self._sigma0().client_gone(label)
        except (errors.L4Error, RemoteError) as e:
            self.launcher.event(f"sigma0: client_gone for {name} (label {label}) failed: {e}")
            return
        if n:
            self.launcher.event(f"sigma0 took back {n} frame(s) of {name}")

    def admin_sessions_died(self) -> None:
        """moe died: every session died with it; their tasks start again with a new one."""
        for name, (_, gate) in list(self.sessions.items()):
            self._forget(gate)
            other = self.launcher.tasks.get(name)
            if other is not None and other.state in ("starting", "running") \
                    and not self.launcher.stopping:
                other.forced = True          # its memory died with moe: start it afresh
                self.launcher._signal(other, signal.SIGKILL)
        self.sessions.clear()

    def _close(self, name: str) -> dict | None:
        """End `name`'s session at moe, if it has one. Answers what moe freed."""
        entry = self.sessions.pop(name, None)
        if entry is None:
            return None
        number, gate = entry
        self._forget(gate)
        if self.launcher.stopping or self.admin is None:
            return None
        try:
            return dict(self.admin.client_gone(number))
        except (errors.L4Error, RemoteError) as e:
            self.launcher.event(f"moe: client_gone for {name} (session {number}) failed: {e}")
            return None

    def _forget(self, gate: int) -> None:
        root = self.launcher.root
        if root is None:
            return
        try:
            root.cap_delete(gate)
        except errors.L4Error:
            pass                              # moe destroyed the gate already

    # -- the `memory` control command ----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """moe's and sigma0's accounting, and the sessions by task."""
        if self.spec is None:
            raise ValueError("this image has no [memory] servers")
        out: dict[str, Any] = {"sessions": {n: s for n, (s, _) in self.sessions.items()}}
        root = self.launcher.root
        assert root is not None
        if self.admin is not None:
            try:
                out["moe"] = self.admin.info()
            except (errors.L4Error, RemoteError) as e:
                out["moe"] = {"error": str(e)}
        if self.sigma0_gate:
            try:
                out["sigma0"] = self._sigma0().info()
            except (errors.L4Error, RemoteError) as e:
                out["sigma0"] = {"error": str(e)}
        return out

    def _sigma0(self) -> Any:
        """The SIGMA0 stub on our admin gate (Any: its ops are made from the declaration)."""
        from servers.sigma0 import SIGMA0
        return SIGMA0.client(self.launcher.root, self.sigma0_gate, timeout=CALL_MS)
