"""Invariants of a chaos run, checked while it runs and after (docs/CHAOS.md "Invariants").

    kernel_up        the kernel process lives; its `kernel_bugs` count does not grow; the
                     launcher keeps answering
    restart          a killed/crashed task the image restarts runs again with a new pid —
                     and answers the prober, if it provides services — within `recovery`
    call_timeouts    no call of the prober or the load threads ends later than its timeouts
                     plus `call_slack`
    clients_recover  after a server recovered, its running clients get an answer within
                     `client_recovery`
    no_leaks         at the end: no process the run saw, no hog, nothing new in /dev/shm, no
                     socket file in the run directory of a system we booted
    check            the plan's [[check]]s (a command, a task's IPC progress, a service's
                     answers to the prober)

Contract: `start` takes the reference state and starts the probes; `watch` and `run_checks`
are called every few tens of milliseconds by the runner; `stop_probes`,
`check_kernel_bugs`, `refresh` and `check_leaks` at the end. A violation goes to the record
(`Record.violate`), which drops those of invariants the plan turned off.

Ownership: the runner's thread; the `Caller` threads own their calls and share only their
locked results. `injector.pending` is consumed here: an expectation is removed when the task
recovered or its deadline passed.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import psutil

from .. import control
from .inject import Injector, Pending
from .plan import Check, Plan, seconds
from .probe import Caller
from .record import Record
from .subject import Attached


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


class Invariants:
    def __init__(self, plan: Plan, system: Any, specs: dict[str, Any], record: Record,
                 injector: Injector) -> None:
        self.plan, self.sys, self.specs, self.record = plan, system, specs, record
        self.injector = injector
        self.recoveries: list[float] = []                    # ms, injection to answer
        self.clients: list[tuple[str, int, int, float]] = []   # task, pid, received, deadline
        self.callers: dict[str, Caller] = {}                 # service -> its prober
        self.load: list[Caller] = []
        self.checks: list[dict[str, Any]] = []
        self.kernel_bugs0 = 0
        self.shm0 = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        self.rows: dict[str, dict[str, Any]] = {}
        self.rows0: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        info = self.sys.kernel_info()
        self.kernel_bugs0 = info["stats"]["kernel_bugs"] if info else 0
        self.rows0 = self.rows = self.sys.ps()
        self._start_callers()
        self._start_checks()

    def _start_callers(self) -> None:
        if isinstance(self.sys, Attached):
            return
        slack = self.plan.call_slack
        for svc, gate in self.sys.probe_gates.items():
            c = Caller(self.sys.thread(), gate, 1000, slack, 0.02, f"probe-{svc}")
            self.callers[svc] = c
            c.start()
        if self.plan.load:
            svc = self.plan.load["service"]
            ms = int(seconds(self.plan.load.get("timeout", "500ms"), "load.timeout") * 1000)
            for i in range(int(self.plan.load.get("threads", 2))):
                c = Caller(self.sys.thread(), self.sys.client_gates[svc], ms, slack,
                           float(self.plan.load.get("pause", 0.0)), f"load-{svc}-{i}")
                self.load.append(c)
                c.start()

    def stop_probes(self) -> None:
        for c in list(self.callers.values()) + self.load:
            c.stop.set()
        for c in list(self.callers.values()) + self.load:
            c.join(5)

    # -- kernel_up ----------------------------------------------------------------------
    def kernel_up(self) -> bool:
        try:
            p = psutil.Process(self.sys.kernel_pid)
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def check_kernel_bugs(self) -> None:
        info = self.sys.kernel_info()
        if info is not None and info["stats"]["kernel_bugs"] > self.kernel_bugs0:
            self.record.violate("kernel_up", f"the kernel counted "
                                             f"{info['stats']['kernel_bugs'] - self.kernel_bugs0} "
                                             f"internal errors (see logs/kernel.log)")

    def refresh(self) -> None:
        """The task table once more (for the report), if the launcher still answers."""
        try:
            self.rows = self.sys.ps()
        except control.NotRunning:
            pass

    # -- restart, clients_recover, call_timeouts ---------------------------------------
    def watch(self) -> None:
        now = time.time()
        try:
            self.rows = self.sys.ps()
        except control.NotRunning as e:
            self.record.violate("kernel_up", f"the launcher stopped answering: {e}")
            return
        for r in self.rows.values():
            if r["pid"]:
                self.injector.seen_pids.add(r["pid"])
        for pd in list(self.injector.pending):
            self._watch_pending(pd, now)
        for c in list(self.clients):
            self._watch_client(c, now)
        for name, caller in list(self.callers.items()) + [(f"load{i}", c) for i, c in
                                                          enumerate(self.load)]:
            for start, secs in caller.take_hung():
                self.record.violate("call_timeouts", f"a call to {name} took {secs:.2f}s, past "
                                                     f"its timeouts ({caller.bound:.2f}s with "
                                                     f"slack)")

    def _watch_pending(self, pd: Pending, now: float) -> None:
        row = self.rows.get(pd.task, {})
        if not pd.dead_at and not psutil.pid_exists(pd.old_pid) or \
                (not pd.dead_at and _zombie(pd.old_pid)):
            pd.dead_at = now
        if not pd.running_at and row.get("state") == "running" and row.get("pid") \
                and row["pid"] != pd.old_pid:
            pd.running_at = now
        done_at = self._answered_at(pd)
        if done_at is not None:
            self._recovered(pd, done_at, now)
        elif now > pd.deadline:
            self._overdue(pd, row)

    def _answered_at(self, pd: Pending) -> float | None:
        """When the new incarnation is back: running, and (a server) answered its prober."""
        if not pd.running_at:
            return None
        probes = [self.callers[s] for s in pd.services if s in self.callers]
        if not probes:
            return pd.running_at
        ends = [c.first_ok_after(pd.dead_at or pd.running_at) for c in probes]
        if all(e is not None for e in ends):
            return max(e for e in ends if e is not None)
        return None

    def _recovered(self, pd: Pending, done_at: float, now: float) -> None:
        """Count the recovery; the server's running clients must now get an answer."""
        self.injector.pending.remove(pd)
        self.recoveries.append(max(0.0, done_at - pd.t0) * 1000)
        self.record.write({"recovered": pd.task, "after_ms": round((done_at - pd.t0) * 1000, 1)})
        for t in self.specs.values():
            if set(pd.services) & t.services_used():
                crow = self.rows.get(t.name, {})
                if crow.get("state") == "running" and crow.get("pid"):
                    got = (crow.get("ipc") or {}).get("received", 0)
                    self.clients.append((t.name, crow["pid"], got,
                                         now + self.plan.client_recovery))

    def _overdue(self, pd: Pending, row: dict[str, Any]) -> None:
        self.injector.pending.remove(pd)
        if not pd.dead_at and pd.kind == "crash" and row.get("pid") == pd.old_pid:
            self.record.write({"note": f"{pd.task} survived the crash (it caught the error "
                                       f"or made no system call)"})
            return
        last = row.get("last_exit", "")
        if "budget" in last and self.plan.invariants.get("allow_budget_exhaustion"):
            return
        self.record.violate("restart", f"{pd.task} not running and answering again within "
                                       f"{self.plan.recovery:g}s of its {pd.kind} "
                                       f"(state {row.get('state')}: {last})")

    def _watch_client(self, c: tuple[str, int, int, float], now: float) -> None:
        task, pid, got, deadline = c
        row = self.rows.get(task, {})
        progressed = row.get("pid") and (row["pid"] != pid or
                                         (row.get("ipc") or {}).get("received", 0) > got)
        if progressed:
            self.clients.remove(c)
        elif now > deadline:
            self.clients.remove(c)
            if task in self.injector.stopped or row.get("state") != "running":
                return
            self.record.violate("clients_recover", f"client {task} got no answer within "
                                                   f"{self.plan.client_recovery:g}s of its "
                                                   f"server's restart")

    # -- user checks ------------------------------------------------------------------------
    def _start_checks(self) -> None:
        for c in self.plan.checks:
            self.checks.append({"check": c, "next": time.time() + c.every, "proc": None,
                                "started": 0.0, "mark": None, "since": time.time()})

    def run_checks(self, now: float) -> None:
        for st in self.checks:
            c: Check = st["check"]
            if c.what == "command":
                self._check_command(c, st, now)
            elif c.what == "task":
                self._check_task(c, st, now)
            elif c.what == "service" and c.target in self.callers:
                self._check_service(c, st, now)

    def _check_command(self, c: Check, st: dict[str, Any], now: float) -> None:
        """The command exits 0 within its timeout; started again every `every`."""
        p = st["proc"]
        if p is not None:
            if p.poll() is None and now - st["started"] > c.timeout:
                p.kill()
                p.wait()
                self.record.violate("check", f"command {c.target!r} ran past {c.timeout:g}s")
                st["proc"] = None
            elif p.poll() is not None:
                if p.returncode != 0:
                    self.record.violate("check", f"command {c.target!r} exited with "
                                                 f"{p.returncode}")
                st["proc"] = None
        if st["proc"] is None and now >= st["next"]:
            st["proc"] = subprocess.Popen(c.target, shell=True, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            st["started"], st["next"] = now, now + c.every

    def _check_task(self, c: Check, st: dict[str, Any], now: float) -> None:
        """The task's pid or IPC counts change at least every `within` (unless stopped)."""
        row = self.rows.get(c.target, {})
        ipc = row.get("ipc") or {}
        mark = (row.get("pid"), ipc.get("sent", 0) + ipc.get("received", 0))
        if mark != st["mark"] or c.target in self.injector.stopped:
            st["mark"], st["since"] = mark, now
        elif now - st["since"] > c.within:
            self.record.violate("check", f"task {c.target} made no IPC progress for "
                                         f"{c.within:g}s")
            st["since"] = now

    def _check_service(self, c: Check, st: dict[str, Any], now: float) -> None:
        """The service answers its prober at least every `within`."""
        last = max(self.callers[c.target].last_ok(), self.record.t_start)
        if now - last > c.within and now - st["since"] > c.within:
            self.record.violate("check", f"service {c.target} did not answer for "
                                         f"{c.within:g}s")
            st["since"] = now

    # -- no_leaks -------------------------------------------------------------------------
    def check_leaks(self, pids: set[int]) -> None:
        """After the system was closed: `pids` (every process the run saw, and the kernel)
        are gone — those of a system we only attached to, except the ones still live in it —
        and so are the hogs, our /dev/shm segments and (booted) the socket files."""
        deadline = time.time() + 10
        booted = not isinstance(self.sys, Attached)
        if not booted:
            live = {r["pid"] for r in self.rows.values() if r.get("pid")}
            pids -= live | {self.sys.kernel_pid}
        while time.time() < deadline and [p for p in pids if psutil.pid_exists(p)
                                           and not _zombie(p)]:
            time.sleep(0.05)
        left = [p for p in pids if psutil.pid_exists(p) and not _zombie(p)]
        if left:
            self.record.violate("no_leaks", f"processes left behind: {sorted(left)}")
        hogs = [p.pid for p in self.injector.hogs if p.poll() is None]
        if hogs:
            self.record.violate("no_leaks", f"hog processes left behind: {hogs}")
        if os.path.isdir("/dev/shm"):
            new = {f for f in set(os.listdir("/dev/shm")) - self.shm0
                   if "l4" in f.lower() or any(str(p) in f for p in pids)}
            if new:
                self.record.violate("no_leaks", f"left in /dev/shm: {sorted(new)}")
        if booted:
            socks = [f for f in os.listdir(self.sys.run_dir) if f.endswith(".sock")]
            if socks:
                self.record.violate("no_leaks", f"socket files left in {self.sys.run_dir}: "
                                                f"{socks}")
