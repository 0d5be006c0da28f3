"""Linux system calls on processes, signals, time and the system (the `syscalls.TABLE`
entries by x86-64 number; the conventions are `syscalls`'s).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from . import files, fs, process
from .files import FdTable
from .pipe import BLOCK
from .syscalls import CLONE_SIGHAND, CLONE_THREAD, CLONE_VM, CONTINUE, FORK_WAIT_S, UNAME, _i32, sys

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

# -- processes ---------------------------------------------------------------------------

@sys(39)
def sys_getpid(px: "Personality", p: "Process", a: list[int]) -> Any:
    return p.pid


@sys(186)
def sys_gettid(px: "Personality", p: "Process", a: list[int]) -> Any:
    """The main thread's tid is the pid (its host tid changes with execve, as the host
    pid does); another thread's is its host tid."""
    return p.pid if px.tid == p.host_pid else px.tid


@sys(110)
def sys_getppid(px: "Personality", p: "Process", a: list[int]) -> Any:
    return p.ppid


@sys(102, 104, 107, 108)
def sys_getuid(px: "Personality", p: "Process", a: list[int]) -> Any:
    return 0


@sys(105, 106, 113, 114, 117, 119)
def sys_setuid(px: "Personality", p: "Process", a: list[int]) -> Any:
    return 0


@sys(109)
def sys_setpgid(px: "Personality", p: "Process", a: list[int]) -> Any:
    pid, pgid = a[0] or p.pid, a[1]
    q = px.procs.by_pid.get(pid)
    if q is None:
        return -errno.ESRCH
    q.pgid = pgid or q.pid
    return 0


@sys(111)
def sys_getpgrp(px: "Personality", p: "Process", a: list[int]) -> Any:
    return p.pgid


@sys(121, 124)
def sys_getpgid(px: "Personality", p: "Process", a: list[int]) -> Any:
    q = px.procs.by_pid.get(a[0] or p.pid)
    if q is None:
        return -errno.ESRCH
    return q.pgid if px.nr == 121 else q.sid


@sys(112)
def sys_setsid(px: "Personality", p: "Process", a: list[int]) -> Any:
    p.sid = p.pgid = p.pid
    return p.pid


@sys(56, 57, 58)
def sys_clone(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 56 and a[0] & CLONE_THREAD:
        # A thread (pthread_create): the host makes it, in the same host process; its
        # calls come with its own tid. Linux wants the signal handlers and memory shared.
        if a[0] & (CLONE_SIGHAND | CLONE_VM) != CLONE_SIGHAND | CLONE_VM:
            return -errno.EINVAL
        p.threads += 1
        return CONTINUE
    # The host forks; the child's first trapped call makes it a task (kernel/core/linux.py),
    # and starts from this state. Our next call waits until then (`Personality.dispatch`).
    p.fork_snapshot = (p.fds.fork(), p.cwd)
    p.fork_deadline = time.monotonic() + FORK_WAIT_S
    return CONTINUE


@sys(60, 231)
def sys_exit(px: "Personality", p: "Process", a: list[int]) -> Any:
    """exit_group ends the process; exit ends the calling thread, and the process with its
    last thread (with the main thread's status if that one went first, as Linux does)."""
    if px.nr == 60 and p.threads > 1:
        p.threads -= 1
        p.tids.discard(px.tid)
        p.masks.pop(px.tid, None)
        if px.tid == p.host_pid:
            p.leader_exit = process.exited(a[0])
        return CONTINUE
    word = p.leader_exit if px.nr == 60 and p.leader_exit is not None else process.exited(a[0])
    px.exit(p, word)
    return CONTINUE


@sys(61)
def sys_wait4(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = px.procs.wait(p, _i32(a[0]), a[2])
    if got is None:
        return BLOCK
    if isinstance(got, tuple):
        pid, word = got
        if a[1]:
            px.write(p, a[1], struct.pack("<i", word))
        return pid
    return got if got <= 0 and got != -10 else -errno.ECHILD


P_ALL, P_PID, P_PGID = 0, 1, 2
WSTOPPED, WEXITED, WCONTINUED, WNOWAIT = 2, 4, 8, 0x01000000
CLD_EXITED, CLD_KILLED, CLD_STOPPED, CLD_CONTINUED = 1, 2, 5, 6


@sys(247)
def sys_waitid(px: "Personality", p: "Process", a: list[int]) -> Any:
    """waitid(idtype, id, infop, options, rusage): children that exited, stopped
    (WSTOPPED) or were continued (WCONTINUED)."""
    idtype, ident, infop, options = a[0], _i32(a[1]), a[2], a[3]
    if not options & (WEXITED | WSTOPPED | WCONTINUED) or idtype not in (P_ALL, P_PID, P_PGID):
        return -errno.EINVAL
    pid = -1 if idtype == P_ALL else ident if idtype == P_PID else -ident if ident else 0
    got = px.procs.wait(p, pid, options, reap=not options & WNOWAIT)
    if got is None:
        return BLOCK
    if isinstance(got, tuple):
        cpid, word = got
        killed = word & 0x7F
        if word == process.CONTINUED:
            code, status = CLD_CONTINUED, 18
        elif killed == 0x7F:
            code, status = CLD_STOPPED, (word >> 8) & 0xFF
        else:
            code, status = CLD_KILLED if killed else CLD_EXITED, killed or (word >> 8) & 0xFF
        info = struct.pack("<iiiiiii", SIGCHLD, 0, code, 0, cpid, 0, status)
    elif got == 0:
        info = b""                  # WNOHANG, none yet: si_pid 0
    else:
        return -errno.ECHILD
    if infop:
        px.write(p, infop, info.ljust(128, b"\0"))
    if a[4]:
        px.write(p, a[4], b"\0" * 144)
    return 0


SIGCHLD = 17


@sys(62, 200, 234)
def sys_kill(px: "Personality", p: "Process", a: list[int]) -> Any:
    pid = _i32(a[1] if px.nr == 234 else a[0])
    sig = (a[2] if px.nr == 234 else a[1]) & 0xFFFFFFFF
    if sig > 64:
        return -errno.EINVAL
    live = [q for q in px.procs.by_pid.values() if q.state != "zombie"]
    if px.nr == 62 and pid <= 0:    # a process group (0: the caller's), or -1: all others
        group = p.pgid if pid == 0 else -pid
        targets = [q for q in live if q is not p] if pid == -1 else [
            q for q in live if q.pgid == group]
        targets.sort(key=lambda q: q is p)          # the caller last
    elif px.nr != 62:               # tkill(tid), tgkill(tgid, tid): one thread
        return _kill_thread(px, live, _i32(a[0]) if px.nr == 234 else None, pid, sig)
    else:
        targets = [q for q in live if q.pid == pid]
    if not targets:
        return -errno.ESRCH
    for q in targets if sig else []:
        px.kill(q, sig)             # the host delivers it: handler or default action
    return 0


def _kill_thread(px: "Personality", live: list["Process"], tgid: int | None, tid: int,
                 sig: int) -> Any:
    """A signal to thread `tid` (of process `tgid`, if given): the main thread's tid is the
    pid, or its host tid (what the native set_tid_address told libc: musl's raise and
    abort name the thread by it, and after an execve it is not the pid); another's is a
    host tid we saw call."""
    q = next((q for q in live if tid in (q.pid, q.host_pid) or tid in q.tids), None)
    if q is None or (tgid is not None and q.pid != tgid):
        return -errno.ESRCH
    if sig:
        px.kill(q, sig, q.host_pid if tid in (q.pid, q.host_pid) else tid)
    return 0


@sys(59, 322)
def sys_execve(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 322:
        if p.state == "loading":
            p.state = "running"      # our own loader's exec of the image we gave it
            return CONTINUE
        return -errno.ENOSYS         # execveat by a Linux program: not yet
    path = px.cstr(p, a[0])
    argv, envp = px.strings(p, a[1]), px.strings(p, a[2])
    return px.execve(p, path, argv, envp)


# -- signals: the host delivers them (docs/L4LINUX.md "Signals") ---------------------------
# Dispositions and masks are the host process's own (these calls are CONTINUEd, after we
# note what execve must keep: ignored signals and the mask); handlers run natively and
# return through rt_sigreturn (native). The personality *sends* signals: kill, SIGCHLD.

SIG_IGN = 1
SA_RESTART = 0x10000000


@sys(13)
def sys_rt_sigaction(px: "Personality", p: "Process", a: list[int]) -> Any:
    """The host installs the action (CONTINUE); we keep handler and flags as the program
    set them. A handler goes to the host with SA_RESTART always: a trapped call a signal
    reaches before the kernel has taken its notification never reached us, so the host
    must repeat it, not fail it with EINTR (Linux never fails pipe() or open() of a file
    with EINTR). Whether a call *we* hold ends in EINTR follows the program's own flags
    (`Personality.signal`). Seen by the program: the old action's flags it asks for in
    the same call show SA_RESTART (docs/L4LINUX.md "Signals")."""
    sig = a[0]
    if not 1 <= sig <= 64:
        return -errno.EINVAL
    if a[1]:
        handler, flags = struct.unpack("<QQ", px.read(p, a[1], 16))
        p.sigactions[sig], p.sigflags[sig] = handler, flags
        if handler > SIG_IGN and not flags & SA_RESTART:
            px.write(p, a[1] + 8, struct.pack("<Q", flags | SA_RESTART))
    return CONTINUE


@sys(14)
def sys_rt_sigprocmask(px: "Personality", p: "Process", a: list[int]) -> Any:
    how, new = a[0], a[1]
    if new:                         # each thread has its own (the main one's: p.sigmask)
        (mask,) = struct.unpack("<Q", px.read(p, new, 8))
        old = process.mask_of(p, px.tid)
        now = {0: old | mask, 1: old & ~mask, 2: mask}.get(how, old)
        if px.tid == p.host_pid:
            p.sigmask = now
        else:
            p.masks[px.tid] = now
    return CONTINUE


@sys(34, 127, 128, 130)
def sys_sigwait(px: "Personality", p: "Process", a: list[int]) -> Any:
    return CONTINUE                 # pause, rt_sigpending, rt_sigtimedwait, rt_sigsuspend


# -- time and the system --------------------------------------------------------------------

@sys(228)
def sys_clock_gettime(px: "Personality", p: "Process", a: list[int]) -> Any:
    """The host's clocks (REALTIME, MONOTONIC, MONOTONIC_RAW, the COARSE ones, BOOTTIME);
    the process and thread CPU clocks are approximated by the time since it started (the
    host's accounting of the process is not the personality's to read)."""
    clock = _i32(a[0])
    if clock in (0, 1, 4, 5, 6, 7):
        ns = time.clock_gettime_ns(clock)
    elif clock in (2, 3):
        ns = max(0, time.time_ns() - int(p.started * 1e9))
    else:
        return -errno.EINVAL
    px.write(p, a[1], struct.pack("<qq", ns // 10 ** 9, ns % 10 ** 9))
    return 0


@sys(229)
def sys_clock_getres(px: "Personality", p: "Process", a: list[int]) -> Any:
    if _i32(a[0]) not in (0, 1, 4, 5, 6, 7):
        return -errno.EINVAL
    if a[1]:
        res = 4_000_000 if _i32(a[0]) in (5, 6) else 1        # the coarse clocks: a tick
        px.write(p, a[1], struct.pack("<qq", 0, res))
    return 0


@sys(158)
def sys_arch_prctl(px: "Personality", p: "Process", a: list[int]) -> Any:
    """The thread pointer and CPU features: the host sets them (it traps only so that
    the kernel sees the first call after exec early: docs/L4LINUX.md "Time")."""
    return CONTINUE


@sys(96)
def sys_gettimeofday(px: "Personality", p: "Process", a: list[int]) -> Any:
    t = time.time()
    if a[0]:
        px.write(p, a[0], struct.pack("<qq", int(t), int((t % 1) * 1e6)))
    return 0


@sys(201)
def sys_time(px: "Personality", p: "Process", a: list[int]) -> Any:
    t = int(time.time())
    if a[0]:
        px.write(p, a[0], struct.pack("<q", t))
    return t


@sys(35, 230)
def sys_nanosleep(px: "Personality", p: "Process", a: list[int]) -> Any:
    req = a[0] if px.nr == 35 else a[2]
    sec, nsec = struct.unpack("<qq", px.read(p, req, 16))
    if sec < 0 or not 0 <= nsec < 10 ** 9:
        return -errno.EINVAL
    return px.sleep(p, sec + nsec / 1e9)


@sys(63)
def sys_uname(px: "Personality", p: "Process", a: list[int]) -> Any:
    px.write(p, a[0], b"".join(f.ljust(65, b"\0") for f in UNAME))
    return 0


@sys(318)
def sys_getrandom(px: "Personality", p: "Process", a: list[int]) -> Any:
    n = min(a[1], 4096)
    px.write(p, a[0], os.urandom(n))
    return n


RLIM_INFINITY = (1 << 64) - 1
# Resource limits as a Linux system sets them by default (RLIMIT_* numbers 0..15): the
# limits that guard the host (memory, CPU) are the host's own, enforced natively; these are
# what a program reads (bash sizes its job table from RLIMIT_NPROC) and may lower again.
LIMITS: dict[int, tuple[int, int]] = {
    0: (RLIM_INFINITY, RLIM_INFINITY), 1: (RLIM_INFINITY, RLIM_INFINITY),
    2: (RLIM_INFINITY, RLIM_INFINITY), 3: (8 << 20, RLIM_INFINITY), 4: (0, RLIM_INFINITY),
    5: (RLIM_INFINITY, RLIM_INFINITY), 6: (4096, 4096), 7: (files.MAX_FDS, files.MAX_FDS),
    8: (8 << 20, 8 << 20), 9: (RLIM_INFINITY, RLIM_INFINITY),
    10: (RLIM_INFINITY, RLIM_INFINITY), 11: (4096, 4096), 12: (819200, 819200), 13: (0, 0),
    14: (0, 0), 15: (RLIM_INFINITY, RLIM_INFINITY)}


@sys(97, 160, 302)
def sys_prlimit(px: "Personality", p: "Process", a: list[int]) -> Any:
    """getrlimit(res, old), setrlimit(res, new), prlimit64(pid, res, new, old): the
    process's own limits (`Process.limits`, inherited by fork, kept by execve)."""
    if px.nr == 302:
        pid, res, new, old = _i32(a[0]), a[1], a[2], a[3]
    else:
        pid, res, new, old = 0, a[0], a[1] if px.nr == 160 else 0, a[1] if px.nr == 97 else 0
    q = p if pid in (0, p.pid) else px.procs.by_pid.get(pid)
    if q is None:
        return -errno.ESRCH
    if res not in LIMITS:
        return -errno.EINVAL
    cur = q.limits.get(res, LIMITS[res])
    if new:
        soft, hard = struct.unpack("<QQ", px.read(p, new, 16))
        if soft > hard or (res == 7 and hard > files.MAX_FDS):
            return -errno.EINVAL if soft > hard else -errno.EPERM
    if old:
        px.write(p, old, struct.pack("<QQ", *cur))
    if new:
        q.limits[res] = (soft, hard)
    return 0


@sys(273, 218, 157, 334)
def sys_accepted(px: "Personality", p: "Process", a: list[int]) -> Any:
    return 0 if px.nr != 334 else -errno.ENOSYS     # set_robust_list, prctl: accepted


@sys(115, 116)
def sys_getgroups(px: "Personality", p: "Process", a: list[int]) -> Any:
    return 0                        # no supplementary groups (setgroups: accepted)


@sys(99)
def sys_sysinfo(px: "Personality", p: "Process", a: list[int]) -> Any:
    up = int(time.monotonic())
    info = struct.pack("<q3Q6QH6xQQI", up, 0, 0, 0, 64 << 20, 32 << 20, 0, 0, 0, 0,
                       len(px.procs.by_pid), 0, 0, 1)
    px.write(p, a[0], info.ljust(112, b"\0"))
    return 0


@sys(100)
def sys_times(px: "Personality", p: "Process", a: list[int]) -> Any:
    if a[0]:
        px.write(p, a[0], b"\0" * 32)
    return int(time.monotonic() * 100)


@sys(98)
def sys_getrusage(px: "Personality", p: "Process", a: list[int]) -> Any:
    px.write(p, a[1], b"\0" * 144)
    return 0



def start_state(parent: "Process") -> tuple[FdTable, fs.Inode]:
    """The state a fork child starts from: its parent's at the fork."""
    if parent.fork_snapshot is not None:
        snap, parent.fork_snapshot = parent.fork_snapshot, None
        return snap
    return parent.fds.fork(), parent.cwd
