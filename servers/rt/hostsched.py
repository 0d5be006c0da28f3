"""The host scheduler, as the CPU reservation manager uses it: SCHED_DEADLINE and SCHED_FIFO
on one host thread, and the host's own admission bound.

Mechanism. Python has no `os.sched_setattr`, so `set_deadline` calls system call 314
(x86-64 `sched_setattr`) through ctypes with a `struct sched_attr` (include/uapi/linux/
sched/types.h, 56 bytes, SCHED_ATTR_SIZE_VER1). Every policy set here carries
SCHED_FLAG_RESET_ON_FORK: a child of a reserved thread starts as an ordinary thread (and a
deadline thread's fork() is otherwise refused with EAGAIN). `set_fifo` uses
os.sched_setscheduler (it exists), also with SCHED_RESET_ON_FORK.

The host's bound (`host_bound`): Linux admits deadline threads while the sum of
runtime/period on a root domain stays at most sched_rt_runtime_us / sched_rt_period_us
(0.95 by default) times its CPUs; beyond it sched_setattr answers EBUSY. The manager runs
the same test itself first (servers/rt/admission.py) so that a refusal always has a reason;
an EBUSY that slips past it anyway (another program on the host holds deadline bandwidth)
is turned into `HostRefused` with that reason, never swallowed.

Thread names (`name_thread`): a server whose threads split reserved from best-effort work
names them (BEST_EFFORT_PREFIX "be/", RESERVED_PREFIX "rt/"); the manager boosts a `serve`
process's threads but those named "be/" (servers/rt/server.py).

Contract: every function acts on one thread id (a host TID) and raises `HostRefused`
(errno and reason) when the host says no; none retries. Only a privileged process
(CAP_SYS_NICE) can move another process's thread.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys
from dataclasses import dataclass
from typing import Any

SYS_SCHED_SETATTR = 314          # x86-64
SYS_SCHED_GETATTR = 315
SCHED_OTHER, SCHED_FIFO, SCHED_DEADLINE = 0, 1, 6
SCHED_FLAG_RESET_ON_FORK = 0x01
SCHED_FLAG_RECLAIM = 0x02        # GRUB: run on past the budget into unused deadline bandwidth
SCHED_RESET_ON_FORK = 0x40000000  # or-ed into the policy of sched_setscheduler
RT_RUNTIME = "/proc/sys/kernel/sched_rt_runtime_us"
RT_PERIOD = "/proc/sys/kernel/sched_rt_period_us"
POLICY_NAMES = {SCHED_OTHER: "other", SCHED_FIFO: "fifo", 2: "rr", 3: "batch", 5: "idle",
                SCHED_DEADLINE: "deadline"}


class SchedAttr(ctypes.Structure):
    """struct sched_attr (SCHED_ATTR_SIZE_VER1); times in nanoseconds."""
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class HostRefused(Exception):
    """The host refused a scheduling change: `errno` and a reason naming the thread."""

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = err
        self.reason = reason


@dataclass(frozen=True)
class Bound:
    """The host's deadline admission bound: `fraction` of each of `cpus` CPUs."""
    runtime_us: int          # sched_rt_runtime_us (-1: no limit)
    period_us: int
    cpus: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.runtime_us < 0 else self.runtime_us / self.period_us

    @property
    def total(self) -> float:
        """The utilisation (sum of runtime/period) the host admits in all."""
        return self.fraction * self.cpus


def host_bound() -> Bound:
    """Read the bound the host applies to SCHED_DEADLINE admission, now."""
    with open(RT_RUNTIME) as f:
        runtime = int(f.read())
    with open(RT_PERIOD) as f:
        period = int(f.read())
    return Bound(runtime, period, len(os.sched_getaffinity(0)))


def _setattr(tid: int, attr: SchedAttr, what: str) -> None:
    if _libc.syscall(SYS_SCHED_SETATTR, tid, ctypes.byref(attr), 0) != 0:
        err = ctypes.get_errno()
        why = {errno.EBUSY: "the host's deadline bandwidth is exhausted (EBUSY)",
               errno.EPERM: "not permitted (the manager lacks CAP_SYS_NICE)",
               errno.ESRCH: "no such thread", errno.EINVAL: "invalid parameters"}.get(
            err, os.strerror(err))
        raise HostRefused(err, f"sched_setattr({what}) on thread {tid}: {why}")


def set_deadline(tid: int, runtime_ns: int, deadline_ns: int, period_ns: int,
                 reclaim: bool = False) -> None:
    """Put thread `tid` under SCHED_DEADLINE (runtime <= deadline <= period, ns); `reclaim`:
    with SCHED_FLAG_RECLAIM (it may use deadline bandwidth other threads leave unused).
    The host admits a deadline thread only if it may run on every CPU of its domain: a
    thread kept on fewer (the kernel's, `python -m kernel --cpu`) is refused saying so
    (allow_every_cpu first, as the path's boost does)."""
    flags = SCHED_FLAG_RESET_ON_FORK | (SCHED_FLAG_RECLAIM if reclaim else 0)
    attr = SchedAttr(size=ctypes.sizeof(SchedAttr), sched_policy=SCHED_DEADLINE,
                     sched_flags=flags, sched_runtime=runtime_ns,
                     sched_deadline=deadline_ns, sched_period=period_ns)
    try:
        _setattr(tid, attr, f"deadline {runtime_ns}/{deadline_ns}/{period_ns} ns")
    except HostRefused as e:
        everywhere = os.sched_getaffinity(0)
        try:
            mine = os.sched_getaffinity(tid)
        except OSError:
            raise e from None                     # gone
        if e.errno == errno.EPERM and mine != everywhere:
            raise HostRefused(e.errno, f"sched_setattr(deadline) on thread {tid}: it may run "
                                       f"on CPUs {sorted(mine)} only, and the host admits "
                                       f"deadline threads on all of {sorted(everywhere)}") \
                from None
        raise


def allow_every_cpu(tid: int) -> set[int] | None:
    """Let thread `tid` run on every CPU this process may use; the CPUs it had if that
    changed them (to give back), None if it had them all already or is gone."""
    everywhere = os.sched_getaffinity(0)
    try:
        mine = os.sched_getaffinity(tid)
        if mine == everywhere:
            return None
        os.sched_setaffinity(tid, everywhere)
        return mine
    except OSError:
        return None


def set_fifo(tid: int, priority: int) -> None:
    """Put thread `tid` under SCHED_FIFO at `priority` (1..99), reset on fork."""
    try:
        os.sched_setscheduler(tid, SCHED_FIFO | SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as e:
        raise HostRefused(e.errno or 0, f"SCHED_FIFO {priority} on thread {tid}: {e.strerror}") \
            from None


def set_other(tid: int) -> None:
    """Back to the ordinary class (SCHED_OTHER, nice 0). A thread that is gone is fine."""
    attr = SchedAttr(size=ctypes.sizeof(SchedAttr), sched_policy=SCHED_OTHER)
    try:
        _setattr(tid, attr, "other")
    except HostRefused as e:
        if e.errno != errno.ESRCH:
            raise


def set_nice(tid: int, nice: int) -> None:
    """Keep thread `tid` in the ordinary class at `nice` (-20: about 87 times the weight of a
    nice-0 thread, and the first to run when it wakes)."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as e:
        raise HostRefused(e.errno or 0, f"nice {nice} on thread {tid}: {e.strerror}") from None


def set_idle(tid: int) -> None:
    """Put thread `tid` under SCHED_IDLE (runs only when no other thread wants the CPU)."""
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE | SCHED_RESET_ON_FORK, os.sched_param(0))
    except OSError as e:
        raise HostRefused(e.errno or 0, f"SCHED_IDLE on thread {tid}: {e.strerror}") from None


def policy_of(tid: int) -> str:
    """The thread's current policy name ("deadline", "fifo", "other", ...)."""
    attr = SchedAttr()
    if _libc.syscall(SYS_SCHED_GETATTR, tid, ctypes.byref(attr), ctypes.sizeof(SchedAttr), 0):
        err = ctypes.get_errno()
        raise HostRefused(err, f"sched_getattr on thread {tid}: {os.strerror(err)}")
    return POLICY_NAMES.get(attr.sched_policy, str(attr.sched_policy))


def deadline_available() -> str | None:
    """None if SCHED_DEADLINE can be used here, else why not (probed on a short-lived
    thread of this process, which is given its policy and back)."""
    import threading
    out: list[str | None] = [None]

    def probe() -> None:
        tid = threading.get_native_id()
        try:
            set_deadline(tid, 100_000, 1_000_000, 1_000_000)
            set_other(tid)
        except HostRefused as e:
            out[0] = e.reason
    t = threading.Thread(target=probe, name="rt-probe")
    t.start()
    t.join()
    return out[0]


def thread_cpu_ns(pid: int, tid: int) -> int:
    """CPU time used by host thread `tid` of process `pid` (utime+stime, ns), -1 if gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return -1
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def thread_dl_stats(pid: int, tid: int) -> dict[str, int]:
    """What /proc/PID/task/TID/sched says of a thread (se.sum_exec_runtime ns,
    nr_involuntary_switches, dl.runtime...); {} if the thread is gone or the file absent."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/task/{tid}/sched") as f:
            for line in f:
                k, sep, v = line.partition(":")
                if sep:
                    try:
                        out[k.strip()] = int(float(v.strip()) * (1e6 if "exec_runtime" in k else 1))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


# -- a cpu cgroup of its own for the best-effort threads of boosted servers ------------------
CPU_CGROUP = "/sys/fs/cgroup/cpu"   # cgroup v1's cpu controller (threads are placed one by one)
GROUP_PREFIX = "l4py-rt-"           # + the manager's pid
GROUP_SHARES = 262_144              # the largest cpu.shares (a nice-0 group has 1,024)


class ThreadGroup:
    """A cpu cgroup (v1) for single host threads: a weight of their own at the top of the
    host's fair scheduler. Why: nice orders a thread only inside its scheduling group, and
    with autogroups (Linux's default, `kernel.sched_autogroup_enabled`) every process of a
    session shares one group — all of an l4run system with its hogs, as one nice-0 group
    beside every other session's. A best-effort server thread at nice -20 then waited up to
    8 ms for a CPU while it held its interpreter's lock, and the boosted thread beside it
    (the block server's reserved thread, the HAL's disk worker) waited with it (measured
    with the host's sched_switch trace). In the group the thread has GROUP_SHARES against
    each session's 1,024, and its nice inside the group. The group is made with
    rt_runtime 0 (RT group scheduling): a thread in it cannot be SCHED_FIFO, so `add` is
    only for threads of the ordinary class; `remove` puts a thread back in the root group.

    `why_not` (None: usable) is said when there is no cgroup v1 cpu controller (a cgroup v2
    host) or no right to make a group; the threads then keep their nice only."""

    def __init__(self, name: str, shares: int = GROUP_SHARES) -> None:
        self.path = os.path.join(CPU_CGROUP, name)
        self.threads: set[int] = set()
        self.why_not: str | None = None
        try:
            _reap_stale_groups()
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "cpu.shares"), "w") as f:
                f.write(str(shares))
        except OSError as e:
            self.why_not = f"no cpu cgroup {self.path}: {e.strerror or e}"

    def add(self, tid: int) -> None:
        """Thread `tid` (ordinary class) into the group; HostRefused if the host says no."""
        if self.why_not is None:
            _write_tid(os.path.join(self.path, "tasks"), tid)
            self.threads.add(tid)

    def remove(self, tid: int) -> None:
        """Thread `tid` back to the root group (a thread that is gone is fine)."""
        if tid in self.threads:
            self.threads.discard(tid)
            try:
                _write_tid(os.path.join(CPU_CGROUP, "tasks"), tid)
            except HostRefused as e:
                if e.errno != errno.ESRCH:
                    raise

    def close(self) -> None:
        """Every thread back to the root group, and the group removed."""
        for tid in list(self.threads):
            try:
                self.remove(tid)
            except HostRefused:
                pass
        if self.why_not is None:
            try:
                os.rmdir(self.path)
            except OSError:
                pass                  # a thread we did not place is in it: left for the reaper

    def status(self) -> dict[str, Any]:
        return {"path": self.path, "threads": len(self.threads), "why_not": self.why_not}


def _write_tid(tasks: str, tid: int) -> None:
    try:
        with open(tasks, "w") as f:
            f.write(str(tid))
    except OSError as e:
        raise HostRefused(e.errno or 0, f"thread {tid} into {tasks}: {e.strerror}") from None


def _reap_stale_groups() -> None:
    """Remove the empty groups of managers that are gone (killed before `close`)."""
    for name in os.listdir(CPU_CGROUP):
        if name.startswith(GROUP_PREFIX) and name[len(GROUP_PREFIX):].isdigit() \
                and not os.path.exists(f"/proc/{name[len(GROUP_PREFIX):]}"):
            try:
                os.rmdir(os.path.join(CPU_CGROUP, name))
            except OSError:
                pass


# -- thread names: which threads of a boosted server work for reserved jobs ----------------
RESERVED_PREFIX = "rt/"          # a thread serving reserved clients only ("rt/block")
BEST_EFFORT_PREFIX = "be/"       # a thread serving best-effort clients: never boosted
SWITCH_S = 0.0005                # the interpreter's switch interval in a server with both
                                 # (`share_interpreter`)


def share_interpreter() -> None:
    """Called by a server whose process now has a reserved thread beside best-effort ones.
    They share one interpreter lock, which a running thread keeps until another has waited
    for it for the switch interval (5 ms by default): a reserved thread woken by its client
    could wait that long behind a best-effort thread that is busy. SWITCH_S bounds the wait;
    kept for the process's life (a shorter interval costs only more hand-offs)."""
    if sys.getswitchinterval() > SWITCH_S:
        sys.setswitchinterval(SWITCH_S)


def name_thread(name: str) -> None:
    """Name the calling host thread (its /proc/PID/task/TID/comm, 15 bytes at most), through
    prctl(PR_SET_NAME). The manager reads the names: a thread of a `serve` process named
    BEST_EFFORT_PREFIX... stays in the ordinary class while the others are boosted."""
    if _libc.prctl(15, name.encode()[:15], 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise HostRefused(err, f"prctl(PR_SET_NAME, {name!r}): {os.strerror(err)}")


def thread_name() -> str:
    """The calling host thread's name (comm)."""
    buf = ctypes.create_string_buffer(16)
    _libc.prctl(16, buf, 0, 0, 0)
    return buf.value.decode(errors="replace")


def cpu_group_of(tid: int) -> str:
    """Host thread `tid`'s cgroup of the v1 cpu controller ("/" the root one, "" if there
    is no such controller): where ThreadGroup put it, as /proc says."""
    with open(f"/proc/{tid}/cgroup") as f:
        for line in f:
            _, ctl, path = line.strip().split(":", 2)
            if "cpu" in ctl.split(","):
                return path
    return ""


def describe_thread(tid: int) -> dict[str, Any]:
    """A host thread of this process: its TID, name (comm) and scheduling policy now; name
    "" and policy "gone" once it ended (servers' `rt_status`: which thread served whom)."""
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            name = f.read().strip()
        policy = policy_of(tid)
    except (OSError, HostRefused):
        name, policy = "", "gone"
    return {"tid": tid, "thread": name, "policy": policy}
