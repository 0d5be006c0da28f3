"""Injecting faults: how each fault kind is applied to the system under test.

    kill         SIGKILL through the launcher (SIGCONT first if we stopped the task)
    crash        the kernel answers the task's blocked system calls with PROTOCOL; a task
                 between two calls is retried for 1 s, its next send armed meanwhile
    stop / cont  SIGSTOP, and SIGCONT after `for` / SIGCONT
    cpu_hog      a busy loop pinned to the task's first CPU, for `for`
    mem_hog      a process touching `mib` MiB, for `for`
    IPC kinds    kernel rules (FAULT add) on every gate of a service, removed after `for`
    device       HAL knobs through its control socket, reset after `for`
    switch       ORe's fault knobs (drop, corrupt, duplicate in the switch) through the
                 launcher's `switch_faults` control command, reset after `for`; the counts
                 ORe answers at the reset are recorded

The launcher's side of `switch_faults` is `control_switch_faults` below
(`Launcher.cmd_switch_faults` delegates to it): ORE's admin op `faults`, called through
the ORe service's admin gate (label 0), which only the launcher holds.

Contract: `inject(injection)` applies one injection and records it, with its result or —
when the system cannot take it now (task down, no HAL, attached without `fault`) — the
reason it was skipped; it never raises for those. Whatever a fault must undo later (SIGCONT,
disarming a rule, resetting knobs, retrying a crash) goes on `later` as (when, what, fn); the
runner calls `run_due` and, at the end, `undo`. A kill or crash of a task the image restarts
leaves a `Pending` expectation that the invariants watch until the task is back.

Ownership: the runner's thread. `pending` and `seen_pids` are shared with `Invariants`
(which removes recovered expectations and adds the pids it sees); hogs are reaped by
`reap_hogs`, and each kills itself when this process dies (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil

from kernel.user import errors

from .. import control
from .plan import Plan
from .record import Record
from .sequence import Injection
from .subject import Attached, Unsupported

_HOG_PRELUDE = ("import ctypes, signal, time\n"
                "try:\n    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL)\n"
                "except Exception:\n    pass\n")
HAL_TIMEOUT_MS = 2000
SWITCH_CALL_MS = 2000
ORE_RUN = "servers.ore.server:"
# A switch fault's reset when the plan gives none: every rate off, the scope every frame.
SWITCH_OFF: dict[str, Any] = {"drop": 0.0, "corrupt": 0.0, "duplicate": 0.0, "ports": []}


@dataclass
class Pending:
    """A task that died on purpose and must come back."""
    task: str
    kind: str
    t0: float
    old_pid: int
    services: list[str]
    dead_at: float = 0.0
    running_at: float = 0.0
    deadline: float = 0.0


def _hal_faults(run_dir: str, device: str, knobs: dict[str, Any]) -> Any:
    """Set a device's fault knobs through the HAL's control socket (hal/tools.py)."""
    from hal.tools import HalControlError
    from hal.tools import control as hal_control
    try:
        return hal_control(run_dir, {"op": "faults", "device": device, "knobs": knobs},
                           timeout_ms=HAL_TIMEOUT_MS)
    except HalControlError as e:
        raise Unsupported(f"HAL: {e}") from None


def control_switch_faults(la: Any, service: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """The launcher's `switch_faults` control command: ORE's admin op `faults(knobs)` on the
    ORe task providing `service`, one bounded call; answers {"result": the knobs and counts}.
    Refusals (no such service, not ORe, not running, knobs ORe refused) are ValueErrors
    saying which and why (the control socket answers them as errors)."""
    from kernel.user.rpc import ADMIN_LABEL, RemoteError
    from servers.ore.protocol import ORE
    svc = la.services.get(service)
    if svc is None:
        raise ValueError(f"switch_faults: no service {service!r} (services: "
                         f"{', '.join(sorted(la.services))})")
    task = la.tasks[svc.provider]
    if not task.spec.run.startswith(ORE_RUN):
        raise ValueError(f"switch_faults: service {service!r} is provided by task "
                         f"{task.spec.name}, which runs {task.spec.run}, not ORe ({ORE_RUN}main)")
    if task.state != "running":
        raise ValueError(f"switch_faults: ORe task {task.spec.name} is {task.state}")
    if not isinstance(knobs, dict):
        raise ValueError(f"switch_faults: knobs must be a map, got {type(knobs).__name__}")
    stub: Any = ORE.client(la.root, la.service_gate(service, ADMIN_LABEL), timeout=SWITCH_CALL_MS)
    try:
        return {"result": dict(stub.faults(knobs))}
    except RemoteError as e:
        raise ValueError(f"{service}.faults: {e.error}: {e.reason}") from None


def _switch_faults(run_dir: str, service: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """Set ORe's fault knobs through the launcher's control socket (`switch_faults`)."""
    a = control.request(run_dir, "switch_faults", service=service, knobs=knobs)
    if not a.get("ok"):
        if "unknown command" in str(a.get("error")):
            raise Unsupported("this launcher has no 'switch_faults' control command")
        raise Unsupported(str(a.get("error")))
    return dict(a["result"])


class Injector:
    def __init__(self, plan: Plan, system: Any, specs: dict[str, Any], record: Record) -> None:
        self.plan, self.sys, self.specs, self.record = plan, system, specs, record
        self.applied: dict[str, int] = {}
        self.kernel_hits: dict[str, int] = {}
        self.skipped: list[str] = []
        self.pending: list[Pending] = []
        self.later: list[tuple[float, str, Callable[[], None]]] = []
        self.hogs: list[subprocess.Popen[bytes]] = []
        self.stopped: dict[str, float] = {}                   # task -> until
        self.seen_pids: set[int] = set()
        self.by_task: dict[str, int] = {}     # task -> faults that hit it (see counts_by_task)
        self.by_receiver: dict[str, int] = {}   # task -> IPC faults on messages sent to it

    # -- bookkeeping ------------------------------------------------------------
    def _count(self, kind: str) -> None:
        self.applied[kind] = self.applied.get(kind, 0) + 1

    def counts(self) -> dict[str, int]:
        """Faults by kind: task faults as applied, IPC faults as the kernel injected them."""
        out = {k: v for k, v in self.applied.items() if k not in ("crash", "rules_armed")}
        for k, v in self.kernel_hits.items():
            out[k] = out.get(k, 0) + v
        return out

    def hit(self, task: str | None) -> None:
        name = task or "?"
        self.by_task[name] = self.by_task.get(name, 0) + 1

    def counts_by_task(self) -> dict[str, int]:
        """Faults by the task they hit: a task fault its target, a fault the kernel injected
        into a message the task that sent it (a crash: the task crashed)."""
        return dict(sorted(self.by_task.items(), key=lambda kv: (-kv[1], kv[0])))

    def run_due(self, now: float) -> None:
        """Call what is due on `later`. An undo that fails (a device reset when the HAL is
        gone, a task that vanished) is written to the record, and the run goes on."""
        for item in [x for x in self.later if x[0] <= now]:
            self.later.remove(item)
            try:
                item[2]()
            except Exception as e:
                self.record.write({"note": f"{item[1]} failed: {type(e).__name__}: {e}"})

    def undo(self) -> None:
        """The end of the run: continue stopped tasks, call everything still on `later`."""
        for task in list(self.stopped):
            self.cont(task, 0)
        for _, what, fn in sorted(self.later, key=lambda x: x[0]):
            try:
                fn()
            except Exception:
                pass
        self.later = []

    def reap_hogs(self) -> None:
        for p in self.hogs:
            if p.poll() is None:
                p.kill()
            p.wait()

    def inject(self, inj: Injection) -> None:
        entry: dict[str, Any] = {"seq": inj.seq, "at": round(inj.at, 4), "kind": inj.kind,
                                 "target": inj.target, "params": inj.params}
        try:
            entry["result"] = getattr(self, "_do_" + inj.kind, self._do_ipc)(inj)
            if inj.kind in ("kill", "stop", "cont", "cpu_hog", "mem_hog"):
                self.hit(inj.target)      # crash: counted when the kernel reports it
        except (Unsupported, errors.L4Error, control.NotRunning, KeyError, OSError) as e:
            entry["skipped"] = f"{type(e).__name__}: {e}"
            self.skipped.append(f"#{inj.seq} {inj.kind} {inj.target}: {e}")
        self.record.write(entry)

    def _row(self, task: str) -> dict[str, Any]:
        return self.sys.ps()[task]

    def _expect_back(self, task: str, kind: str, pid: int) -> None:
        spec = self.specs[task]
        if spec.restart == "never":
            return
        for old in [p for p in self.pending if p.task == task]:
            self.pending.remove(old)        # a newer fault supersedes it
            self.record.write({"note": f"{task}: {old.kind} superseded by a {kind} before it "
                                       f"recovered"})
        self.pending.append(Pending(task, kind, time.time(), pid, list(spec.provides),
                                    deadline=time.time() + self.plan.recovery))

    # -- task faults ----------------------------------------------------------------
    def _do_kill(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        if inj.target in self.stopped:
            self.sys.kill(inj.target, "SIGCONT")
            self.stopped.pop(inj.target, None)
        a = self.sys.kill(inj.target, "SIGKILL")
        if not a.get("ok"):
            raise Unsupported(a.get("error"))
        self.seen_pids.add(row["pid"])
        self._expect_back(inj.target, "kill", row["pid"])
        self._count("kill")
        return {"pid": row["pid"]}

    def _do_crash(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        res = self._crash(inj.target, True)
        self.seen_pids.add(row["pid"])
        self._expect_back(inj.target, "crash", row["pid"])
        if not res.get("crashed"):
            # Not in a system call right now (a server between two requests): try again
            # shortly; its next send is armed to crash meanwhile (a client's next call).
            self._crash_retry(inj.target, res.get("rule"), time.time() + 1.0)
        self._count("crash")
        return {"pid": row["pid"], **res}

    def _crash(self, task: str, next_send: bool) -> dict[str, Any]:
        if isinstance(self.sys, Attached):
            return self.sys.fault("crash", {"next_send": next_send}, task=task)
        return self.sys.fault("crash", {"task_id": self.sys.task_id(task), "next_send": next_send})

    def _crash_retry(self, task: str, rule: int | None, until: float) -> None:
        def again() -> None:
            try:
                res = self._crash(task, False)
            except (errors.L4Error, Unsupported, KeyError):
                return          # it died already (its armed send crashed it)
            if res.get("crashed"):
                for pd in self.pending:
                    if pd.task == task:
                        pd.t0 = time.time()
                if rule is not None:
                    self._disarm([rule])
            elif time.time() < until:
                self._crash_retry(task, rule, until)
        self.later.append((time.time() + 0.01, f"crash {task}", again))

    def _do_stop(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or inj.target in self.stopped:
            raise Unsupported(f"task {inj.target} is {row['state']} or stopped already")
        self.sys.kill(inj.target, "SIGSTOP")
        until = time.time() + inj.params["for"]
        self.stopped[inj.target] = until
        self.later.append((until, f"cont {inj.target}", lambda: self.cont(inj.target, row["pid"])))
        self._count("stop")
        return {"pid": row["pid"]}

    def cont(self, task: str, pid: int) -> None:
        """SIGCONT a task we stopped (recorded as an automatic `cont`)."""
        if self.stopped.pop(task, None) is not None:
            try:
                self.sys.kill(task, "SIGCONT")
            except control.NotRunning:
                pass
            self.record.write({"kind": "cont", "target": task, "pid": pid, "auto": True})

    def _do_cont(self, inj: Injection) -> Any:
        self.sys.kill(inj.target, "SIGCONT")
        self.stopped.pop(inj.target, None)
        self._count("cont")
        return {}

    def _hog(self, inj: Injection, code: str) -> Any:
        row = self._row(inj.target)
        if not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        try:
            cpus = psutil.Process(row["pid"]).cpu_affinity()
        except (psutil.Error, AttributeError):
            cpus = None
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if cpus:
            try:
                psutil.Process(p.pid).cpu_affinity(cpus[:1])
            except psutil.Error:
                pass
        self.hogs.append(p)
        self._count(inj.kind)
        return {"hog_pid": p.pid, "beside": row["pid"], "cpus": cpus[:1] if cpus else None}

    def _do_cpu_hog(self, inj: Injection) -> Any:
        return self._hog(inj, _HOG_PRELUDE + f"end = time.monotonic() + {inj.params['for']!r}\n"
                              "while time.monotonic() < end:\n    pass\n")

    def _do_mem_hog(self, inj: Injection) -> Any:
        return self._hog(inj, _HOG_PRELUDE + f"b = bytearray({int(inj.params['mib'])} << 20)\n"
                              "for i in range(0, len(b), 4096):\n    b[i] = 1\n"
                              f"time.sleep({inj.params['for']!r})\n")

    # -- IPC faults (kernel rules) -------------------------------------------------------
    def _do_ipc(self, inj: Injection) -> Any:
        p = inj.params
        spec = {"kind": inj.kind, "probability": p["probability"], "count": p["count"],
                "seed": p["seed"]}
        if "delay_ms" in p:
            spec["delay_ms"] = p["delay_ms"]
        if "bytes" in p:
            spec["bytes"] = p["bytes"]
        where, _, name = inj.target.partition(":")
        if isinstance(self.sys, Attached):
            rules = self.sys.fault("add", spec, service=name) if where == "service" else \
                [self.sys.fault("add", {**spec, "gate": int(name)})]
        else:
            gates = self.sys.gate_ids.get(name, []) if where == "service" else [int(name)]
            if not gates:
                raise Unsupported(f"no gate for {inj.target}")
            rules = [self.sys.fault("add", {**spec, "gate": g}) for g in gates]
        ids = [r["rule"] for r in rules]
        self.later.append((time.time() + p["for"], f"disarm {ids}", lambda: self._disarm(ids)))
        self._count("rules_armed")
        return {"rules": ids, "gates": [r["gate"] for r in rules]}

    def _do_linux(self, inj: Injection) -> Any:
        """A kernel rule on the Linux calls of one personality (target `linux:TASK`: one
        rule per gate that task serves — its exception gate among them; the kernel
        consults Linux rules only for Linux calls, so its other gates never match) or of
        every personality (`linux:`), removed after `for` (docs/CHAOS.md "Linux system
        calls")."""
        p = inj.params
        spec: dict[str, Any] = {"kind": inj.kind.removeprefix("linux_"), "linux": True,
                "probability": p["probability"], "count": p["count"], "seed": p["seed"],
                **{k: p[k] for k in ("delay_ms", "errno", "nr") if k in p}}
        personality = inj.target.partition(":")[2]
        specs = [{**spec, "gate": g} for g in self._served(personality)] if personality \
            else [spec]
        rules = [self.sys.fault("add", s) for s in specs]
        ids = [(r[0] if isinstance(r, list) else r)["rule"] for r in rules]
        self.later.append((time.time() + p["for"], f"disarm {ids}", lambda: self._disarm(ids)))
        self._count("rules_armed")
        return {"rules": ids}

    def _served(self, task: str) -> list[int]:
        """The kernel ids of the gates task `task`'s threads serve (KERNEL_INFO `served`)."""
        info = self.sys.kernel_info() if hasattr(self.sys, "kernel_info") else None
        if info is None:
            raise Unsupported(f"a Linux fault on personality {task!r} needs the kernel's task "
                              "table: run the plan with `l4run chaos --image`")
        gates = [int(g[0]) for row in info["tasks"] if row.get("name") == task
                 for g in row.get("served", [])]
        if not gates:
            raise Unsupported(f"task {task!r} serves no gate (is it a running personality?)")
        return gates

    _do_linux_delay = _do_linux_error = _do_linux

    def _disarm(self, ids: list[int]) -> None:
        for rid in ids:
            try:
                self.sys.fault("remove", {"rule": rid})
            except (errors.L4Error, Unsupported, control.NotRunning):
                pass

    def disarm_all(self) -> None:
        """Remove every kernel rule (a booted system only: attached, `undo` disarmed ours)."""
        try:
            if not isinstance(self.sys, Attached):
                self.sys.fault("remove", {})
        except errors.L4Error:
            pass

    def drain_kernel_log(self) -> None:
        """Move the kernel's log of the faults it injected into the record and the counts
        (attached runs read it through the launcher's `fault` control command)."""
        try:
            while True:
                log = self.sys.fault("log", {"max": 1000})
                for e in log:
                    self.kernel_hits[e["kind"]] = self.kernel_hits.get(e["kind"], 0) + 1
                    self.hit(e.get("task") or e.get("sender"))
                    if e.get("receiver"):
                        self.by_receiver[e["receiver"]] = self.by_receiver.get(e["receiver"], 0) + 1
                    self.record.write({"source": "kernel", **e})
                if len(log) < 1000:
                    return
        except (errors.L4Error, Unsupported, control.NotRunning):
            return

    # -- device faults (HAL knobs) -------------------------------------------------------
    def _do_device(self, inj: Injection) -> Any:
        path = os.path.join(self.sys.run_dir, "hal.ctl")
        if not os.path.exists(path):
            raise Unsupported("no HAL runs in this system (no hal.ctl)")
        device = inj.target.partition(":")[2]
        answer = _hal_faults(self.sys.run_dir, device, inj.params["knobs"])
        reset = inj.params.get("reset") or {k: (False if isinstance(v, bool) else 0)
                                             for k, v in inj.params["knobs"].items()}
        self.later.append((time.time() + inj.params["for"], f"reset {device}",
                           lambda: _hal_faults(self.sys.run_dir, device, reset)))
        self._count("device")
        return answer

    # -- switch faults (ORe's knobs) -------------------------------------------------------
    def _do_switch(self, inj: Injection) -> Any:
        service = inj.target.partition(":")[2]
        run_dir = self.sys.run_dir
        answer = _switch_faults(run_dir, service, inj.params["knobs"])
        reset = inj.params.get("reset") or SWITCH_OFF

        def undo() -> None:
            after = _switch_faults(run_dir, service, reset)
            self.record.write({"kind": "switch", "target": inj.target, "reset": reset,
                               "auto": True, "counts": after.get("counts")})
        self.later.append((time.time() + inj.params["for"], f"reset switch {service}", undo))
        self._count("switch")
        return answer
