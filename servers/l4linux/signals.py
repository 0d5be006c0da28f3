"""Signals and stops of the personality's Linux processes, and how they end.

Mechanism (docs/L4LINUX.md "Signals", "Stops", "Crash statuses"). Every signal a Linux
process gets comes from the personality (`kill`): it is made pending on the host process
(or one host thread), whose handler then runs natively, or whose default action ends or
stops it. A call of the process that the personality holds (`Blocked`) would not be
interrupted by the host, so `signal` answers it: -EINTR, or a restart, by the program's
own flags. Stops are the personality's to report (`_stop`: the parent's wait and
SIGCHLD); ends come as the kernel's death notice (`_death_status`) or exit_group (`exit`).

`Signals` is a part of `server.Personality` (its base class): the state it uses —
`blocked`, `procs`, `sleepers`, `children`, and `_answer`/`write` — is the personality's.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from . import process, syscalls

SIGKILL, SIGCHLD, SIGCONT = 9, 17, 18
STOPS = (19, 20, 21, 22)        # SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU
SA_NOCLDSTOP = 1
ERESTARTSYS = 512       # Linux's "restart if SA_RESTART, else EINTR" (include/linux/errno.h)
ERESTARTNOINTR = 513    # "always restart"
# Calls a handled signal ends in EINTR even under SA_RESTART (signal(7)): sleeps, poll,
# select and their variants.
NEVER_RESTARTED = frozenset({7, 23, 35, 230, 270, 271})

_libc = ctypes.CDLL(None, use_errno=True)


class Fault(Exception):
    """A pointer a Linux process passed is bad: the call answers -EFAULT."""


class Blocked:
    """A call kept for later: of thread `tid` of process `p`."""

    def __init__(self, p: process.Process, tid: int, reply: int, nr: int,
                 args: list[int]) -> None:
        self.p, self.tid, self.reply, self.nr, self.args = p, tid, reply, nr, args


class Signals:
    """Signal delivery, stops and ends of Linux processes (a base of `Personality`)."""

    if TYPE_CHECKING:
        blocked: list[Blocked]
        procs: process.Table
        sleepers: dict[int, float]
        children: dict[int, int | None]

        def _answer(self, reply: int, result: Any) -> None: ...

        def write(self, p: process.Process, addr: int, data: bytes) -> None: ...

    def kill(self, p: process.Process, sig: int, tid: int | None = None) -> None:
        """Send `sig` to `p`'s host process (or its thread `tid`): its handler runs, or the
        host's default action (ending it: its task dies, `message` learns it from the exit
        notice; a stop: `_stop`)."""
        if sig not in (SIGCONT,) + STOPS:
            p.last_signal = sig
        self.signal(p, sig, tid)
        if sig == SIGCONT and p.stopped:
            self._stop(p, 0)
        elif (sig in STOPS and p.sigactions.get(sig, 0) == 0 and not p.stopped
              and (sig == STOPS[0] or not p.sigmask >> (sig - 1) & 1)):
            self._stop(p, sig)

    def _reap(self) -> None:
        _reap_children(self.children)

    def _death_status(self, p: process.Process, notice: int | None = None) -> int:
        """The wait status word of `p`, whose task died without exit_group. A program we
        loaded runs in a host child of ours: its host wait status is exact (a signal's,
        without the core flag; an exit's). The death notice may come before we reaped
        it: the kernel saw its pidfd readable, so it has ended and waitpid returns at
        once (bounded all the same: the personality never hangs on a process). A fork
        that did not execve is a host child of its parent's host process: the kernel's
        death notice carries its status (`notice`, -N for signal N: read from the zombie
        the host keeps for that parent); if it could not, the last signal we sent it,
        else SIGKILL."""
        if p.host_pid in self.children:
            status = self.children.pop(p.host_pid)
            deadline = time.monotonic() + 2.0
            while status is None and time.monotonic() < deadline:
                try:
                    pid, word = os.waitpid(p.host_pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    status = word
                else:
                    time.sleep(0.001)
            if status is not None and os.WIFSIGNALED(status):
                return process.signaled(os.WTERMSIG(status))
            if status is not None and os.WIFEXITED(status):
                return process.exited(os.WEXITSTATUS(status))
        if notice is not None:
            return process.signaled(-notice) if notice < 0 else process.exited(notice)
        return process.signaled(p.last_signal or SIGKILL)

    def _stop(self, p: process.Process, sig: int) -> None:
        """`p` stops by `sig` (the default action of a stop signal we sent; 0: SIGCONT
        continued it). Every signal a Linux process gets comes from us, so we know: its
        parent's wait4/waitid (WUNTRACED, WCONTINUED) is told and it gets SIGCHLD, unless
        SA_NOCLDSTOP. The calls of `p` we hold are made again by the host after the stop
        (-ERESTARTNOINTR): the host can stop a thread only once it is out of its wait."""
        p.stopped = sig
        p.unreported = process.stopped(sig) if sig else process.CONTINUED
        if sig:
            for b in [b for b in self.blocked if b.p is p]:
                self.blocked.remove(b)
                self._answer(b.reply, -ERESTARTNOINTR)
        parent = self.procs.by_pid.get(p.ppid)
        if parent is not None and parent.state != "zombie" and not parent.sigflags.get(
                SIGCHLD, 0) & SA_NOCLDSTOP:
            self.signal(parent, SIGCHLD)

    def signal(self, p: process.Process, sig: int, tid: int | None = None) -> None:
        """Make `sig` pending on `p`'s host process. A call of `p` we hold would not be
        interrupted by the host (WAIT_KILLABLE_RECV): if `sig` has a handler, the call is
        answered once the signal is pending, and on its way back to user space the host
        runs the handler. The answer is Linux's: -EINTR for sleeps and polls, and for the
        rest -EINTR unless the program set SA_RESTART, else the call is made again (the
        host has SA_RESTART for every handler: `sys_rt_sigaction`)."""
        waiting = []
        if tid is None and p.threads > 1:
            tid = self._taker(p, sig)
        mask = p.sigmask if tid is None else process.mask_of(p, tid)
        if p.sigactions.get(sig, 0) > syscalls.SIG_IGN and not mask >> (sig - 1) & 1 \
                and (p.threads == 1 or tid is not None):
            waiting = [b for b in self.blocked if b.p is p and tid in (None, b.tid)]
            for b in waiting:
                self.blocked.remove(b)
                until = self.sleepers.pop(b.tid, None)
                if until is not None:
                    self._remaining(p, b, until)
        if tid is None or tid == p.host_pid and p.threads == 1:
            try:
                os.kill(p.host_pid, sig)
            except OSError:
                pass
        else:
            _libc.syscall(234, p.host_pid, tid, sig)      # tgkill: that thread only
        restart = p.sigflags.get(sig, 0) & syscalls.SA_RESTART
        for b in waiting:
            if p.fork_snapshot is not None:
                self._answer(b.reply, -ERESTARTNOINTR)     # not begun: made again
                continue
            again = restart and b.nr not in NEVER_RESTARTED
            self._answer(b.reply, -ERESTARTSYS if again else -errno.EINTR)

    def _taker(self, p: process.Process, sig: int) -> int | None:
        """The thread of multi-threaded `p` that takes process-directed `sig` (Linux lets
        any thread not blocking it): one whose call we hold, so that the call is
        interrupted (the signal is then sent to that thread); None: the host picks one
        (none of them waits in a call of ours)."""
        if p.sigactions.get(sig, 0) <= syscalls.SIG_IGN:
            return None
        for b in self.blocked:
            if b.p is p and not process.mask_of(p, b.tid) >> (sig - 1) & 1:
                return b.tid
        return None

    def _remaining(self, p: process.Process, b: Blocked, until: float) -> None:
        """An interrupted nanosleep tells what was left of it (when the program asked)."""
        rem = b.args[1] if b.nr == 35 else b.args[3] if b.nr == 230 and not b.args[1] & 1 else 0
        if rem:
            left = max(0.0, until - time.monotonic())
            try:
                self.write(p, rem, struct.pack("<qq", int(left), int(left % 1 * 1e9)))
            except Fault:
                pass

    def exit(self, p: process.Process, word: int) -> None:
        self.children.pop(p.host_pid, None)     # its status is `word` now
        self.procs.exit(p, word, self._sigchld)

    def _sigchld(self, p: process.Process) -> None:
        parent = self.procs.by_pid.get(p.ppid)
        if parent is not None and parent.state != "zombie":
            self.signal(parent, SIGCHLD)


def _reap_children(children: dict[int, int | None]) -> None:
    """Reap our own host children that ended (loaders replaced or killed, programs that
    ended); the status of one in `children` is kept there."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            children[pid] = status
