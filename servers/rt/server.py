"""The CPU reservation manager: admits periodic reservations and has the host enforce them.

    [[task]]
    name = "rt"
    run = "servers.rt.server:main"       # privileged (launcher/sandbox.py): sets host policies
    provides = ["rt"]
    args = ['{"serve": ["block", "ore", {"task": "hal", "best_effort": ["nic-"]}]}']
                                         # servers that work for reserved jobs (below)

A client (`caps = { rt = { service = "rt", label = N } }`) asks for a reservation for one of
its threads, naming the thread's host TID (servers/rt/protocol.py). Check, then act:
1. fields (admission.check_fields: budget <= deadline <= period, each named when wrong);
2. who: the launcher's word (NAMES client_pid) on which running task is behind the caller's
   gate label and which host process runs it; the TID must be a thread of that process
   (/proc/PID/task/TID), else NOT_YOURS — a task cannot reserve another's thread;
3. admission (admission.py): the host's own bound, so the answer is REFUSED with the sums,
   never a bare EBUSY; a host refusal past our test (someone else on the host holds
   deadline bandwidth) is HOST with the host's reason; refusals are kept for `l4run rt`;
4. act: SCHED_DEADLINE (runtime = budget, deadline, period, SCHED_FLAG_RESET_ON_FORK) on
   the thread. Where SCHED_DEADLINE is unavailable (the probe at start fails, or the policy
   says "mode": "fifo") the fallback is SCHED_FIFO with budget enforcement by this manager:
   its enforcer thread (itself SCHED_FIFO above every reserved thread) reads each reserved
   thread's CPU time (/proc/PID/task/TID/schedstat) and moves a thread that used its budget
   in the current period to SCHED_IDLE until the period ends (counted as a throttle): it
   then runs only on CPU time nobody else wants, as a throttled deadline thread would not. The
   mode and its reason are in `status` (and `l4run rt`).

Reservations end on release, when the thread ends, or when the task dies: the manager holds
a pidfd of each reserved task's process and polls it between requests (at least every
TICK_MS), so a dead task's utilisation returns to the pool within that time.

Work done on behalf of a reserved job. A reserved job that calls a server waits for two
other processes: the kernel (every IPC goes through it) and the server. Under an ordinary-
class hog both would be time-shared with it and the job's deadline would depend on the
hog. So while at least one reservation exists, the manager puts every thread of the kernel
process and of the servers named in `serve`, this manager's own (jobs report to it), and the
ZeroMQ I/O threads of each reserved task's process (its messages pass through them:
"ZMQbg/IO/N"), under SCHED_FIFO at BOOST_PRIO (or the entry's "prio"; reset on fork), and
takes them back to SCHED_OTHER when the last reservation ends (a reserved task's own when
its reservation ends).

Best effort stays in the ordinary class. A server thread that serves best-effort clients
only is left out: one whose host name starts with "be/" (hostsched.BEST_EFFORT_PREFIX: the
block server's and ORe's main threads name themselves so once they serve reserved sessions
on threads of their own, "rt/block" and "rt/ore"), or with a prefix the entry's
"best_effort" lists (the HAL's NIC workers, "nic-"). Those run at SCHED_OTHER nice BE_NICE,
in a cpu cgroup of their own with the largest weight (hostsched.ThreadGroup: under
autogroups a nice counts only inside the session's one group, hogs included), while the
rest of their process is boosted: they share its interpreter's lock, and a holder
preempted by the hogs would keep the boosted threads waiting. Why: the boosted path
carried the best-effort clients' work at FIFO priority too (under the DROPS hogs 1.54 of 2
CPUs), starving the ordinary class into the host's fair server, which then ran ahead of
every FIFO thread for 50 ms at a time (the reserved player's stalls). An entry's
`"best_effort_prio": N` (1 .. its prio - 1; opt-in) puts those threads under SCHED_FIFO at
N instead: below the path, so they never delay it on a CPU, and above the hogs, so a
best-effort thread holding its interpreter's lock (or a server lock) is not preempted by
them while a boosted thread waits for it (seen once at nice −20: a reserved read reached the
block scheduler 3 ms before a best-effort dispatch that still went ahead of it — the
scheduler's lock or the interpreter held by a best-effort thread meanwhile). It suits servers whose best-effort work is bounded by an ordinary-class client (the
block server's by the disk, the HAL NIC workers' by the nic server): a thread at FIFO that
a flood could keep busy would starve the ordinary class. Measured on a quiet host (bench
rt, 10,000 periods each, back to back): 6 misses with it on block and the HAL, 6 without
(worst 4.9 and 8.4 ms late) — no difference there, so it is not the default. `"best_effort":
false` boosts the "be/" threads too (the old way); `"best_effort_group": false` leaves
them in their session's group (nice only, as before the group). SCHED_DEADLINE runs
before SCHED_FIFO, so the boosted path never delays a reserved thread's own budget; it only
runs ahead of the ordinary class, in which every non-real-time load (native hogs, L⁴Linux
and its processes) stays. The host still leaves the ordinary class its 5 % (on Linux >=
6.12 the fair server: 50 ms per second and CPU, as a deadline entity), so a boosted server
that spins cannot take the machine — but those 50 ms are taken from the FIFO path in one
piece, and the path's best-effort work is enough to starve the ordinary class: that is where
the reserved player's remaining stalls come from (measured, `_path_deadline`). Threads the
boosted processes start later are picked up by a rescan every RESCAN_S. With `"boost":
"deadline"` (opt-in, measured worse; `_path_deadline` says why) the heavy path threads get
deadline reservations of their own instead (`boost_share` CPUs at most, `boost_period_us`).

Restart: a manager that dies leaves its reservations with the host (each reserved thread
keeps its policy until it ends; a restarted manager does not know them and starts with an
empty sum). Ownership: the main thread runs the protocol and owns `reservations` and
`admission`; the enforcer thread (fifo mode only) reads the reservation list under `lock`
and changes only the throttled threads' policy.
"""
from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import Call, RemoteError, RpcError
from launcher.names import NAMES
from servers.rt import hostsched as hs

from .admission import Admission, Invalid, check_fields
from .protocol import REFUSED_KEPT, RT

TICK_MS = 50
RESCAN_S = 0.2
BOOST_PRIO = 10                  # the kernel and the servers of reserved jobs ("fifo", default)
BOOST_NICE = -20                 # ... ("nice": ordinary class, measured far worse)
BE_NICE = -20                    # best-effort threads ("be/") of boosted processes
ENFORCER_PRIO = 90               # the fifo fallback's enforcer: above every reserved thread
RESERVED_FIFO_PRIO = 20          # reserved threads in the fifo fallback
BOOST_SHARE = 1.0                # "deadline" boost: the CPUs the whole path may use, at most
BOOST_PERIOD_US = 5000           # ... each path thread's period (its longest wait throttled)
PATH_MIN_SHARE = 0.1             # ... the least a deadline path thread gets (else FIFO)
PATH_IDLE = ("ZMQbg/Reaper",)    # threads of a path process that carry no message


@dataclass
class Reservation:
    id: int
    label: int
    task: str
    pid: int
    tid: int
    period_us: int
    budget_us: int
    deadline_us: int
    policy: str
    pidfd: int
    started: float = field(default_factory=time.monotonic)
    cpu0: int = 0                # the thread's CPU time (ns) when admitted
    periods: int = 0             # reported by the job
    misses: int = 0
    worst_us: int = 0
    throttles: int = 0           # fifo fallback: periods cut short by the enforcer
    throttled: bool = False

    def row(self) -> dict[str, Any]:
        used = max(0, schedstat_ns(self.pid, self.tid) - self.cpu0)
        elapsed = max(1e-6, time.monotonic() - self.started)
        return {"id": self.id, "label": self.label, "task": self.task, "pid": self.pid,
                "tid": self.tid, "period_us": self.period_us, "budget_us": self.budget_us,
                "deadline_us": self.deadline_us, "policy": self.policy,
                "utilisation": round(self.budget_us / self.period_us, 4),
                "used": round(used / 1e9 / elapsed, 4), "cpu_ms": round(used / 1e6, 1),
                "seconds": round(elapsed, 1), "periods": self.periods, "misses": self.misses,
                "worst_us": self.worst_us, "throttles": self.throttles}


def _serve_entry(entry: Any) -> tuple[str, tuple[str, ...], int, int]:
    """One `serve` entry: "task", or {"task": "hal", "best_effort": ["nic-"], "prio": 5,
    "best_effort_prio": 1}: threads whose name starts with a prefix (or "be/") are not
    boosted; `prio` the FIFO priority of the others (default BOOST_PRIO; below it: a server
    whose work for reserved jobs may wait for the rest of the path, never for the ordinary
    class); `best_effort_prio` (1 .. prio - 1; default 0: the ordinary class at BE_NICE)
    puts the best-effort threads under SCHED_FIFO below the path instead."""
    if isinstance(entry, str):
        return entry, (), BOOST_PRIO, 0
    if isinstance(entry, dict) and isinstance(entry.get("task"), str) \
            and set(entry) <= {"task", "best_effort", "prio", "best_effort_prio"} \
            and all(isinstance(p, str) and p for p in entry.get("best_effort", [])) \
            and entry.get("prio", BOOST_PRIO) in range(1, ENFORCER_PRIO) \
            and entry.get("best_effort_prio", 0) in range(0, entry.get("prio", BOOST_PRIO)):
        return entry["task"], tuple(entry.get("best_effort", [])), \
            int(entry.get("prio", BOOST_PRIO)), int(entry.get("best_effort_prio", 0))
    raise ValueError(f"rt policy: serve entry {entry!r} must be a task name or "
                     f"{{\"task\": NAME, \"best_effort\": [THREAD NAME PREFIX, ...], "
                     f"\"prio\": 1..{ENFORCER_PRIO - 1}, \"best_effort_prio\": 0..prio-1}}")


def schedstat_ns(pid: int, tid: int) -> int:
    """Nanoseconds host thread `tid` has run (schedstat's first field); 0 if gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _comm(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _io_thread(pid: int, tid: int) -> bool:
    """Whether host thread `tid` is one of ZeroMQ's I/O threads ("ZMQbg/IO/N"), through
    which every message of the process passes on its way to the kernel."""
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().startswith("ZMQbg/IO")
    except OSError:
        return False


class Manager:
    def __init__(self, l4: L4, policy: dict[str, Any]) -> None:
        known = {"serve", "mode", "boost", "boost_share", "boost_period_us", "best_effort",
                 "reserved_prio", "best_effort_group"}
        extra = set(policy) - known
        if extra:
            raise ValueError(f"rt policy: unknown keys {sorted(extra)} (known: "
                             f"{', '.join(sorted(known))})")
        self.l4 = l4
        # serve: task names, or {"task": name, "best_effort": [thread name prefixes]}
        self.serve_tasks: list[str] = []
        self.best_effort: dict[str, tuple[str, ...]] = {}    # task -> prefixes left alone
        self.prio: dict[str, int] = {}                       # task -> its FIFO priority
        self.be_prio: dict[str, int] = {}                    # ... its best effort's (0: none)
        for entry in policy.get("serve", []):
            name, prefixes, prio, be_prio = _serve_entry(entry)
            self.serve_tasks.append(name)
            self.best_effort[name] = prefixes
            self.prio[name] = prio
            self.be_prio[name] = be_prio
        # "best_effort": false boosts a serve process's "be/" threads too (the old way)
        # the FIFO priority of threads named "rt/" (serving reserved clients only)
        self.reserved_prio = int(policy.get("reserved_prio", BOOST_PRIO))
        if not 1 <= self.reserved_prio < ENFORCER_PRIO:
            raise ValueError(f"rt policy: reserved_prio {self.reserved_prio} not in "
                             f"1..{ENFORCER_PRIO - 1}")
        # "best_effort_group": false leaves the best-effort threads in their session's group
        self.group_on = policy.get("best_effort_group", True)
        if self.group_on not in (True, False):
            raise ValueError(f"rt policy: best_effort_group {self.group_on!r} must be true "
                             f"or false")
        self.be_class = policy.get("best_effort", True)
        if self.be_class not in (True, False):
            raise ValueError(f"rt policy: best_effort {self.be_class!r} must be true or false")
        boost = policy.get("boost", "fifo")
        if boost not in ("nice", "fifo", "deadline", False):
            raise ValueError(f"rt policy: boost {boost!r} must be \"nice\", \"fifo\", "
                             f"\"deadline\" or false")
        self.boost_on = boost is not False
        self.boost_kind = str(boost)
        self.boost_share = float(policy.get("boost_share", BOOST_SHARE))
        self.boost_period_us = int(policy.get("boost_period_us", BOOST_PERIOD_US))
        if not 0 < self.boost_share or not 100 <= self.boost_period_us <= 1_000_000:
            raise ValueError(f"rt policy: boost_share {self.boost_share} must be > 0 and "
                             f"boost_period_us {self.boost_period_us} in 100..1000000")
        self.path_dl: dict[int, int] = {}             # tid -> its path budget (us per period)
        self.admission = Admission.for_host(hs.host_bound())
        why = hs.deadline_available()
        if policy.get("mode") == "fifo":
            why = "the manager's policy asks for the fifo fallback (\"mode\": \"fifo\")"
        self.mode = "deadline" if why is None else "fifo"
        self.mode_reason = "SCHED_DEADLINE works here" if why is None else \
            f"SCHED_DEADLINE unavailable: {why}; SCHED_FIFO with budget enforcement instead"
        self.reservations: dict[int, Reservation] = {}
        self.refused: list[dict[str, Any]] = []
        self.counters = {"admitted": 0, "refused": 0, "released": 0, "reaped": 0,
                         "host_refused": 0}
        self.boosted: dict[int, set[int]] = {}          # pid -> its threads we boosted
        self.pinned: dict[int, set[int]] = {}           # tid -> its CPUs before a boost (_spread)
        self.niced: dict[int, set[int]] = {}            # pid -> its best-effort threads at BE_NICE
        self.be_group: hs.ThreadGroup | None = None      # ... and their cpu cgroup (_group)
        self.boost_names: dict[int, str] = {}
        self.kernel_pid = 0
        self.serve_pids: dict[str, int] = {}             # serve task -> its pid (cached)
        self.next_id = 1
        self.last_rescan = 0.0
        self.lock = threading.Lock()
        self.stopping = False
        self.names: Any = None
        self.enforcer_tid = 0                            # fifo mode: the enforcer's host thread
        if "launcher" in l4.caps:
            self.names = NAMES.client(l4, l4.caps["launcher"], timeout=5000)
        if self.mode == "fifo":
            threading.Thread(target=self._enforce, name="rt-enforcer", daemon=True).start()

    # -- checks ---------------------------------------------------------------------------
    def _refuse(self, call: Call, error: str, why: str, **what: Any) -> RpcError:
        self.counters["refused"] += 1
        self.refused.append({"label": call.label, "error": error, "reason": why,
                             "at": round(time.time(), 3), **what})
        del self.refused[:-REFUSED_KEPT]
        return RpcError(error, why)

    def _who(self, call: Call, tid: int) -> tuple[str, int]:
        """The task behind the caller's label and its process, checked to run `tid`."""
        if self.names is None:
            raise self._refuse(call, "NO_TASK", "no launcher to say which task calls "
                                                "(the manager must be started by l4run)")
        try:
            task, pid, kpid = self.names.client_pid("rt", call.label)
        except RemoteError as e:
            raise self._refuse(call, "NO_TASK", f"client {call.label}: {e.reason}") from None
        self.kernel_pid = int(kpid)
        if tid <= 0 or not os.path.exists(f"/proc/{pid}/task/{tid}"):
            raise self._refuse(call, "NOT_YOURS", f"host thread {tid} is not a thread of task "
                                                  f"{task!r} (process {pid})", task=task)
        return str(task), int(pid)

    # -- ops --------------------------------------------------------------------------------
    def reserve(self, call: Call, tid: int, period_us: int, budget_us: int,
                deadline_us: int) -> dict[str, Any]:
        try:
            check_fields(period_us, budget_us, deadline_us)
        except Invalid as e:
            raise self._refuse(call, "INVALID", f"reservation for thread {tid}: {e}") from None
        if any(r.tid == tid for r in self.reservations.values()):
            raise self._refuse(call, "EXISTS", f"host thread {tid} has a reservation already")
        task, pid = self._who(call, tid)
        params = {"task": task, "tid": tid, "period_us": period_us, "budget_us": budget_us}
        why = self.admission.check(budget_us, period_us)
        if why is not None:
            raise self._refuse(call, "REFUSED", f"task {task!r} thread {tid} "
                                                f"{budget_us}/{period_us} us: {why}", **params)
        try:
            if self.mode == "deadline":
                hs.set_deadline(tid, budget_us * 1000, deadline_us * 1000, period_us * 1000)
            else:
                hs.set_fifo(tid, RESERVED_FIFO_PRIO)
        except hs.HostRefused as e:
            self.counters["host_refused"] += 1
            raise self._refuse(call, "HOST", f"task {task!r}: {e.reason} (the manager's own "
                                             f"test admitted it: another program on the "
                                             f"host holds deadline bandwidth)", **params) from None
        r = Reservation(self.next_id, call.label, task, pid, tid, period_us, budget_us,
                        deadline_us, self.mode, os.pidfd_open(pid), cpu0=schedstat_ns(pid, tid))
        self.next_id += 1
        with self.lock:
            self.reservations[r.id] = r
        self.admission.add(budget_us, period_us)
        self.counters["admitted"] += 1
        self._boost()
        return {"id": r.id, "policy": r.policy, "utilisation": budget_us / period_us,
                "total": round(self.admission.total, 4), "bound": round(self.admission.limit, 4)}

    def _mine(self, call: Call, rid: int) -> Reservation:
        r = self.reservations.get(rid)
        if r is None or r.label != call.label:
            raise RpcError("NOT_FOUND", f"client {call.label} has no reservation {rid}")
        return r

    def release(self, call: Call, rid: int) -> None:
        self._end(self._mine(call, rid), "released")

    def report(self, call: Call, rid: int, periods: int, misses: int, worst_us: int) -> None:
        r = self._mine(call, rid)
        if periods < 0 or not 0 <= misses <= periods or worst_us < 0:
            raise RpcError("INVALID", f"reservation {rid}: periods {periods} >= misses "
                                      f"{misses} >= 0 and worst_us {worst_us} >= 0")
        r.periods += periods
        r.misses += misses
        r.worst_us = max(r.worst_us, worst_us)

    def mine(self, call: Call) -> list[dict[str, Any]]:
        return [r.row() for r in self.reservations.values() if r.label == call.label]

    def status(self, call: Call) -> dict[str, Any]:
        return {"mode": self.mode, "mode_reason": self.mode_reason,
                "bound": round(self.admission.limit, 4), "total": round(self.admission.total, 4),
                "host": {"sched_rt_runtime_us": self.admission.bound.runtime_us,
                         "sched_rt_period_us": self.admission.bound.period_us,
                         "cpus": self.admission.bound.cpus,
                         "fair_servers": round(self.admission.reserved_for_host, 4)},
                "reservations": [r.row() for r in self.reservations.values()],
                "refused": list(self.refused), "counters": dict(self.counters),
                "boosted": {self.boost_names.get(p, str(p)): len(t)
                            for p, t in self.boosted.items()},
                "boost": self.boost_kind,
                "best_effort_group": None if self.be_group is None else self.be_group.status(),
                "path_deadline": {"threads": len(self.path_dl),
                                  "share": round(sum(self.path_dl.values())
                                                 / self.boost_period_us, 4),
                                  "period_us": self.boost_period_us}}

    # -- ends ---------------------------------------------------------------------------------
    def _end(self, r: Reservation, why: str) -> None:
        with self.lock:
            self.reservations.pop(r.id, None)
        try:
            hs.set_other(r.tid)
        except hs.HostRefused:
            pass                          # the thread is gone or changed hands: nothing to undo
        os.close(r.pidfd)
        self.admission.remove(r.budget_us, r.period_us)
        self.counters[why] += 1
        if not self.reservations:
            self._unboost()
        else:
            self._boost()             # gives back the task's I/O threads if it has no other

    def tick(self) -> bool:
        """Between requests: end the reservations of dead tasks and ended threads."""
        rs = list(self.reservations.values())
        if rs:
            dead, _, _ = select.select([r.pidfd for r in rs], [], [], 0)
            for r in rs:
                if r.pidfd in dead or not os.path.exists(f"/proc/{r.pid}/task/{r.tid}"):
                    self._end(r, "reaped")
        if self.boosted and time.monotonic() - self.last_rescan > RESCAN_S:
            self._boost()
        return self.stopping

    # -- the path of reserved jobs: the kernel and the servers they call -------------------
    def _boost(self) -> None:
        self.last_rescan = time.monotonic()
        if not self.boost_on:
            return
        pids = {self.kernel_pid: "kernel"} if self.kernel_pid else {}
        pids[os.getpid()] = "rt"                     # jobs report to us every few periods
        for r in self.reservations.values():
            pids.setdefault(r.pid, r.task)           # its ZeroMQ I/O threads only (below)
        for name in self.serve_tasks:
            pid = self.serve_pids.get(name, 0)
            if not (pid and _threads(pid)):
                # Asked only for a server not known yet, or restarted: the launcher is an
                # ordinary-class process, slow under load, and reserved jobs report to us.
                try:
                    pid = int(self.names.task_pid(name)) if self.names is not None else 0
                except (RemoteError, L4Error):
                    pid = 0
                self.serve_pids[name] = pid
            if pid:
                pids[pid] = name
        fresh: list[tuple[int, int]] = []
        for pid, name in pids.items():
            done = self.boosted.setdefault(pid, set())
            self.boost_names[pid] = name
            own = {r.tid for r in self.reservations.values() if r.pid == pid} | {self.enforcer_tid}
            whole = pid in (self.kernel_pid, os.getpid()) or name in self.serve_tasks
            live = set(_threads(pid))
            for tid in done - live:               # ended: its path budget back to the pool
                done.discard(tid)
                self._path_budget_back(tid)
            for tid in [t for t in done if self._best_effort(name, pid, t)]:
                self._demote(pid, tid)            # named best effort since it was boosted
            self._nice_best_effort(pid, name, live, whole)
            new = [tid for tid in sorted(live) if tid not in done and tid not in own
                   and (whole or _io_thread(pid, tid))
                   and not self._best_effort(name, pid, tid)]
            if self.boost_kind == "deadline":
                new = [t for t in new if _comm(pid, t) not in PATH_IDLE]
            fresh += [(pid, tid) for tid in new]
        if self.boost_kind == "deadline":
            self._path_deadline(fresh)
        else:
            for pid, tid in fresh:
                try:
                    if self.be_group is not None:
                        self.be_group.remove(tid)     # a group thread cannot be FIFO
                    if self.boost_kind == "fifo":
                        if pid == self.kernel_pid:
                            self._spread(tid)
                        reserved = _comm(pid, tid).startswith(hs.RESERVED_PREFIX)
                        hs.set_fifo(tid, self.reserved_prio if reserved else
                                    self.prio.get(self.boost_names.get(pid, ""), BOOST_PRIO))
                    else:
                        hs.set_nice(tid, BOOST_NICE)
                    self.boosted[pid].add(tid)
                except hs.HostRefused:
                    pass                  # the thread ended meanwhile
        for pid in [p for p in self.boosted if p not in pids or not _threads(p)]:
            self._unboost_one(pid)

    def _best_effort(self, task: str, pid: int, tid: int) -> bool:
        """Whether thread `tid` of a boosted process does best-effort work only, by its
        name: "be/..." (hostsched.BEST_EFFORT_PREFIX, the server's word), or a prefix the
        policy lists for that task (a process that does not name its threads itself)."""
        comm = _comm(pid, tid)
        if self.be_class and comm.startswith(hs.BEST_EFFORT_PREFIX):
            return True
        return comm.startswith(self.best_effort.get(task, ())) if comm else False

    def _nice_best_effort(self, pid: int, name: str, live: set[int], whole: bool) -> None:
        """The best-effort threads of a boosted process: SCHED_OTHER at BE_NICE. They share
        an interpreter lock with the boosted ones; a holder preempted in the ordinary class
        would keep them waiting while the hogs run (measured: the HAL's NIC worker and the
        block server's main thread at nice 0 made the reserved disk reads 4-18 ms), while
        at BE_NICE the ordinary class runs it first whenever the real-time class leaves a
        CPU. A best-effort thread stays in the ordinary class, below every real-time one."""
        mine = self.niced.setdefault(pid, set())
        if self.be_group is not None:
            self.be_group.threads -= mine - live        # ended: they left the group with it
        mine &= live
        if not whole or self.boost_kind == "nice":
            return
        for tid in sorted(live - mine):
            if self._best_effort(name, pid, tid):
                try:
                    if self.be_prio.get(name):
                        hs.set_fifo(tid, self.be_prio[name])
                        mine.add(tid)
                        continue
                    hs.set_nice(tid, BE_NICE)
                    mine.add(tid)
                    if self.group_on:
                        self._group().add(tid)
                except hs.HostRefused:
                    pass

    def _group(self) -> hs.ThreadGroup:
        """The cpu cgroup of the best-effort threads (made at their first; hostsched says
        why a nice alone is not enough under autogroups)."""
        if self.be_group is None:
            self.be_group = hs.ThreadGroup(f"{hs.GROUP_PREFIX}{os.getpid()}")
            if self.be_group.why_not:
                print(f"[rt] best-effort threads keep their nice only: "
                      f"{self.be_group.why_not}", flush=True)
        return self.be_group

    def _demote(self, pid: int, tid: int) -> None:
        try:
            hs.set_other(tid)
        except hs.HostRefused:
            pass
        self.boosted[pid].discard(tid)
        self._path_budget_back(tid)

    def _path_budget_back(self, tid: int) -> None:
        """A path thread's "deadline" boost budget, if it had one, back to the admission."""
        budget = self.path_dl.pop(tid, 0)
        if budget:
            self.admission.remove(budget, self.boost_period_us)

    def _path_deadline(self, fresh: list[tuple[int, int]]) -> None:
        """The "deadline" boost (opt-in): the heavy interpreter threads of the path get
        SCHED_DEADLINE reservations of their own, counted in the admission like a job's;
        the others stay FIFO. Why it exists: a FIFO thread is preempted by the host's fair
        server (a deadline entity, 50 ms per second and CPU, for a starved ordinary class):
        measured on this host, a FIFO thread above two FIFO threads at 97 % waits 50-54 ms
        once a second, a deadline thread never. And the FIFO path starves the ordinary
        class, because it also carries the best-effort clients' work (under the DROPS
        hogs: FIFO 1.54 CPUs, the player 0.25, the ordinary class 0.10) — which made the
        reserved player's stalls (54 ms at the disk, every 2-5 s).
        Why it is not the default: measured worse. The path wants about 1.55 CPUs under
        that load, more than the host admits beside the player (1.8 - 0.5); a thread whose
        budget runs out is throttled while it holds its interpreter's lock, and every
        other thread of its process waits with it: every path thread under deadline (20-300
        us per 2-5 ms, with SCHED_FLAG_RECLAIM) made a disk read take 130 ms; the heavy
        ones only (the kernel's, ORe's and the HAL's main threads, 0.15-0.75 each) missed
        83-86 % of the periods. It can pay once reserved and best-effort work run in
        different processes (one lock each), so that a budget is spent on reserved work.
        The pool of `boost_share` is split by each thread's CPU time so far, to the threads
        whose part is at least PATH_MIN_SHARE (not ZeroMQ's I/O threads); a thread the
        admission has no room for stays FIFO."""
        if not fresh:
            return
        period = self.boost_period_us
        used = sum(self.path_dl.values()) / period
        pool = max(0.0, min(self.boost_share - used,
                            self.admission.limit - self.admission.total))
        cpu = {k: max(1, schedstat_ns(*k)) for k in fresh}
        # Deadline for the interpreter threads whose part of the pool is worth one; the
        # rest (ZeroMQ's I/O threads, light threads) stay FIFO: a small budget would throttle
        # a Python thread while it holds its interpreter's lock (measured: every thread
        # deadline, 20-300 us each, made a disk read take 130 ms).
        heavy = {k: c for k, c in cpu.items() if not _comm(*k).startswith("ZMQbg/")}
        while heavy:
            total = sum(heavy.values())
            light = [k for k, c in heavy.items() if pool * c / total < PATH_MIN_SHARE]
            if not light:
                break
            for k in light:
                del heavy[k]
        total = sum(heavy.values())
        want = {k: (pool * heavy[k] / total if k in heavy else 0.0) for k in fresh}
        for (pid, tid), share in sorted(want.items(), key=lambda kv: -kv[1]):
            budget = int(min(self.admission.bound.fraction * 0.9, share) * period)
            try:
                if budget > 0 and self.admission.check(budget, period) is None:
                    self._spread(tid)           # the host admits none kept on fewer CPUs
                    hs.set_deadline(tid, budget * 1000, period * 1000, period * 1000,
                                    reclaim=True)
                    self.admission.add(budget, period)
                    self.path_dl[tid] = budget
                    print(f"[rt] path thread {self.boost_names.get(pid, pid)}/{tid} "
                          f"({_comm(pid, tid)}): deadline {budget}/{period} us", flush=True)
                else:
                    hs.set_fifo(tid, BOOST_PRIO)
                self.boosted[pid].add(tid)
            except hs.HostRefused:
                pass                      # the thread ended meanwhile

    def _unboost_one(self, pid: int) -> None:
        for tid in self.niced.pop(pid, set()):
            try:
                if self.be_group is not None:
                    self.be_group.remove(tid)
                hs.set_other(tid)
                hs.set_nice(tid, 0)
            except hs.HostRefused:
                pass
        for tid in self.boosted.pop(pid, set()):
            try:
                hs.set_other(tid)
                if tid in self.pinned:
                    os.sched_setaffinity(tid, self.pinned[tid])
            except (hs.HostRefused, OSError):
                pass
            self.pinned.pop(tid, None)
            self._path_budget_back(tid)
        self.boost_names.pop(pid, None)

    def _spread(self, tid: int) -> None:
        """A boosted thread kept on fewer CPUs may run on every CPU while it is boosted,
        its CPUs given back on unboost: a kernel thread (`python -m kernel --cpu`: cheaper
        hand-offs between its loop and its I/O thread) on the reserved job's path should
        take whichever CPU is free, not wait behind another real-time thread on its own
        (measured with the kernel kept on one CPU: 16 misses of 10,000 against 6 and 6 in
        the same hour); and the host admits a deadline boost only on every CPU."""
        mine = hs.allow_every_cpu(tid)
        if mine is not None:
            self.pinned.setdefault(tid, mine)

    def _unboost(self) -> None:
        for pid in list(self.boosted):
            self._unboost_one(pid)

    def shutdown(self) -> None:
        self.stopping = True
        for r in list(self.reservations.values()):
            self._end(r, "released")
        self._unboost()
        if self.be_group is not None:
            self.be_group.close()

    # -- the fifo fallback's budget enforcement ---------------------------------------------
    def _enforce(self) -> None:
        """Enforcer thread: per reserved thread and period, CPU time past the budget moves
        it to SCHED_IDLE until the period ends. Samples every 0.5 ms."""
        self.enforcer_tid = threading.get_native_id()
        try:
            hs.set_fifo(self.enforcer_tid, ENFORCER_PRIO)
        except hs.HostRefused:
            pass
        # id -> (period start, CPU ns then, allowance ns): the host updates a running
        # thread's CPU time only at its ticks, so a period can overrun by up to a tick; that
        # overrun is paid back from the next period's allowance.
        start: dict[int, tuple[float, int, int]] = {}
        while not self.stopping:
            now = time.monotonic()
            with self.lock:
                rs = list(self.reservations.values())
            for r in rs:
                budget = r.budget_us * 1000
                t0, c0, allow = start.get(r.id, (now, schedstat_ns(r.pid, r.tid), budget))
                used = schedstat_ns(r.pid, r.tid) - c0
                if now - t0 >= r.period_us / 1e6:
                    debt = max(0, used - allow)
                    t0, c0, allow = now, c0 + used, budget - debt
                    if r.throttled and allow > 0:
                        self._set(r, hs.set_fifo, RESERVED_FIFO_PRIO)
                        r.throttled = False
                elif not r.throttled and used >= allow:
                    self._set(r, lambda tid, _: hs.set_idle(tid), 0)
                    r.throttled = True
                    r.throttles += 1
                start[r.id] = (t0, c0, allow)
            for gone in set(start) - {r.id for r in rs}:
                del start[gone]
            time.sleep(0.0005)

    @staticmethod
    def _set(r: Reservation, fn: Any, prio: int) -> None:
        try:
            fn(r.tid, prio)
        except hs.HostRefused:
            pass                          # the thread ended: the main thread reaps it


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(l4: L4, policy: str = "{}") -> int:
    rules = json.loads(policy or "{}")
    if not isinstance(rules, dict):
        raise ValueError("rt policy must be a JSON object {serve, mode, boost}")
    mgr = Manager(l4, rules)
    print(f"[rt] {mgr.mode_reason}; bound {mgr.admission.limit:.3f} CPUs", flush=True)
    # `l4run down` (SIGTERM): give the host back what we changed (policies, the cpu cgroup)
    signal.signal(signal.SIGTERM, _exit)
    try:
        while not mgr.stopping:
            RT.serve(l4, mgr, until=mgr.tick, timeout=TICK_MS)
            mgr.tick()
    finally:
        mgr.shutdown()
    return 0
