"""What the root task reads about its children's processes, from /proc (no library).

    pid_exists(pid) -> bool            the process (or its zombie) exists
    usage(pid) -> (cpu_s, rss_kb)      CPU seconds (user + system) and resident memory
    mark = steal_mark(); ...; steal_share(mark) -> float
                                       the share of all CPUs the hypervisor gave others
                                       since the mark (/proc/stat's steal; the benchmarks'
                                       noise gauge)

Mechanism: kill(pid, 0) for existence; /proc/PID/stat fields 14 and 15 (utime, stime in
clock ticks, SC_CLK_TCK) and /proc/PID/statm field 2 (resident pages) for usage — what
psutil's `cpu_times()` and `memory_info().rss` read, without loading psutil into the root
task, which is in every task's trusted computing base (launcher/tcb.py).
Contract: `usage` raises ProcessGone when the process has ended (or was never ours to
read); a zombie counts as existing, as for psutil. Pure functions, any thread.
"""
from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class ProcessGone(OSError):
    """The process asked about does not exist any more (it is not the caller's fault)."""


def pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # it exists, under another uid
        return True
    return True


def usage(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, resident set in KiB) of process `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            statm = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError) as e:
        raise ProcessGone(f"process {pid}: {e.strerror or e}") from None
    # the command name (field 2) is in parentheses and may hold spaces or ')': split after it
    fields = stat[stat.rindex(b")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])      # fields 14 and 15 of stat(5)
    return (utime + stime) / _TICK, int(statm.split()[1]) * _PAGE_KB


def _steal_s() -> float:
    """CPU time the hypervisor gave to others, all CPUs, since boot (/proc/stat's steal)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / _TICK


def steal_mark() -> tuple[float, float]:
    """Where steal_share counts from: the steal so far and the monotonic time."""
    return _steal_s(), time.monotonic()


def steal_share(mark: tuple[float, float]) -> float:
    """The share of all CPUs the hypervisor took since `mark` (steal_mark), 4 digits."""
    stolen, t0 = mark
    return round((_steal_s() - stolen) / ((time.monotonic() - t0) * (os.cpu_count() or 1)), 4)
