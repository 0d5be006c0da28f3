"""Interval timers: alarm 37, setitimer 38, getitimer 36 (`syscalls.TABLE` entries; the
conventions are `syscalls`'s) — ITIMER_REAL, as busybox `ping` paces its echo requests.

Mechanism: a process's real-time timer is a deadline (and an interval) in
`Personality.alarms`, by pid; the serving loop's wait times out at the earliest one
(`Personality._timeout`) and `fire` sends SIGALRM to each process whose deadline passed
(re-armed by its interval). A fork's child starts without a timer, an exec keeps it, as on
Linux. ITIMER_VIRTUAL and ITIMER_PROF (CPU-time timers) are accepted and never fire (the
personality does not see the process's CPU time as it runs).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import struct
import time
from typing import TYPE_CHECKING, Any

from .syscalls import _i32, sys

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

SIGALRM = 14
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
MAX_S = 1 << 31


def _left(px: "Personality", pid: int) -> tuple[float, float]:
    """(seconds left, interval) of `pid`'s real timer; (0, 0) if none."""
    t = px.alarms.get(pid)
    if t is None:
        return 0.0, 0.0
    return max(t[0] - time.monotonic(), 1e-6), t[1]


def _set(px: "Personality", pid: int, value: float, interval: float) -> None:
    if value <= 0:
        px.alarms.pop(pid, None)
    else:
        px.alarms[pid] = (time.monotonic() + value, interval)


def fire(px: "Personality") -> None:
    """SIGALRM to every process whose timer is due; gone processes lose theirs."""
    now = time.monotonic()
    for pid, (due, interval) in list(px.alarms.items()):
        if due > now:
            continue
        p = px.procs.by_pid.get(pid)
        if p is None or p.state == "zombie":
            del px.alarms[pid]
            continue
        if interval > 0:
            px.alarms[pid] = (max(due + interval, now), interval)
        else:
            del px.alarms[pid]
        px.kill(p, SIGALRM)


def _timeval(raw: bytes) -> tuple[float, float] | None:
    isec, iusec, vsec, vusec = struct.unpack("<qqqq", raw)
    if min(isec, iusec, vsec, vusec) < 0 or iusec >= 10 ** 6 or vusec >= 10 ** 6:
        return None
    return vsec + vusec / 1e6, isec + iusec / 1e6


def _pack(left: float, interval: float) -> bytes:
    def tv(x: float) -> tuple[int, int]:
        usec = int(round(x * 1e6))
        return usec // 10 ** 6, usec % 10 ** 6
    return struct.pack("<qqqq", *tv(interval), *tv(left))


@sys(37)
def sys_alarm(px: "Personality", p: "Process", a: list[int]) -> Any:
    left, _ = _left(px, p.pid)
    _set(px, p.pid, float(min(a[0] & 0xFFFFFFFF, MAX_S)), 0.0)
    return int(left + 0.5) if left else 0


@sys(36, 38)
def sys_itimer(px: "Personality", p: "Process", a: list[int]) -> Any:
    which = _i32(a[0])
    if which not in (ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF):
        return -errno.EINVAL
    if px.nr == 36:
        left, interval = _left(px, p.pid) if which == ITIMER_REAL else (0.0, 0.0)
        px.write(p, a[1], _pack(left, interval))
        return 0
    new = _timeval(px.read(p, a[1], 32)) if a[1] else (0.0, 0.0)
    if new is None:
        return -errno.EINVAL
    if which != ITIMER_REAL:
        if a[2]:
            px.write(p, a[2], _pack(0.0, 0.0))
        return 0
    old = _left(px, p.pid)
    if a[2]:
        px.write(p, a[2], _pack(*old))
    _set(px, p.pid, min(new[0], MAX_S), min(new[1], MAX_S))
    return 0
