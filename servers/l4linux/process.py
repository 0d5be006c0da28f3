"""Linux processes as the personality sees them: pids, parents and children, exit and wait.

A `Process` is one Linux process: an L4 task (`task_id`, our capability `slot` to it) whose
host process runs its image. Its Linux pid is the host pid of the first host process that
ran it (a process started by the personality: its loader; a fork: the child), and stays
the same across execve, which replaces the host process (docs/L4LINUX.md "execve"): so a
parent's fork() result — a host pid — is the child's Linux pid, with no translation.

Wait status words as Linux makes them: exited (code << 8), killed by a signal (sig).
A zombie waits for its parent's wait4; a process whose parent is gone (or that was started
by the personality itself) is reaped at once, once anyone who asked for its end was told.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from . import fs
from .console import Console
from .files import FdTable
from .tty import Tty

WNOHANG, WUNTRACED, WCONTINUED = 1, 2, 8
CONTINUED = 0xFFFF                  # the wait status word of a continued child


def exited(code: int) -> int:
    return (code & 0xFF) << 8


def signaled(sig: int) -> int:
    return sig & 0x7F


def stopped(sig: int) -> int:
    return (sig & 0xFF) << 8 | 0x7F


def status_code(word: int) -> int:
    """The shell's $?: the exit code, or 128 + the signal."""
    return (word >> 8) & 0xFF if word & 0x7F == 0 else 128 + (word & 0x7F)


class Process:
    def __init__(self, pid: int, ppid: int, task_id: int, slot: int, fds: FdTable,
                 cwd: fs.Inode, console: Console | Tty) -> None:
        self.pid = pid
        self.ppid = ppid
        self.pgid = pid
        self.sid = pid
        self.task_id = task_id
        self.slot = slot
        self.fds = fds
        self.cwd = cwd
        self.console = console
        self.umask = 0o022
        self.comm = "?"
        self.argv: list[bytes] = []
        self.exe = b""                  # the ELF file it runs, absolute (/proc/PID/exe)
        self.elf: fs.Inode | None = None    # and its inode (hybrid.py's policy names it)
        self.state = "loading"      # loading (its loader's execveat) | running | zombie
        self.status = 0
        self.sigactions: dict[int, int] = {}   # signal -> handler address (SIG_IGN = 1)
        self.sigflags: dict[int, int] = {}     # signal -> sa_flags as the program set them
        self.sigmask = 0
        self.limits: dict[int, tuple[int, int]] = {}   # RLIMIT_* set by the program
        self.host_pid = pid             # the host process running it now (execve changes it)
        self.threads = 1                # threads it has (CLONE_THREAD clones, less exits)
        self.tids: set[int] = set()     # host tids of its threads seen, but the main one's
        self.masks: dict[int, int] = {} # their signal masks (the main thread's: `sigmask`)
        self.leader_exit: int | None = None    # the main thread's exit() status, others live
        # Job control (docs/L4LINUX.md "Stops"): the stop signal it is stopped by (0: not
        # stopped), and the change its parent's wait has not been told yet (a status word).
        self.stopped = 0
        self.unreported: int | None = None
        self.last_signal = 0            # the last signal we sent it (its death's likely cause)
        # A fork CONTINUEd, its child not seen yet: the state the child starts from, and
        # when we stop waiting for it (docs/L4LINUX.md "fork").
        self.fork_snapshot: tuple[FdTable, fs.Inode] | None = None
        self.fork_deadline = 0.0
        # Hybrid (hybrid.py): the LinuxL4 call the kernel makes for it now (0: none; else it
        # is UNINTERRUPTIBLE, state D), and the granted capabilities mapped into its task.
        self.l4call = 0
        self.l4mapped: set[str] = set()
        self.on_exit: list[Callable[["Process"], None]] = []
        self.started = time.time()


def mask_of(p: Process, tid: int) -> int:
    """The signal mask of thread `tid` of `p` as far as we saw it set."""
    return p.sigmask if tid == p.host_pid else p.masks.get(tid, p.sigmask)


class Table:
    def __init__(self) -> None:
        self.by_pid: dict[int, Process] = {}
        self.by_task: dict[int, Process] = {}

    def add(self, p: Process) -> None:
        self.by_pid[p.pid] = p
        self.by_task[p.task_id] = p

    def children(self, p: Process) -> Iterator[Process]:
        return (c for c in self.by_pid.values() if c.ppid == p.pid and c is not p)

    def exit(self, p: Process, word: int, on_zombie: Callable[[Process], None] | None = None
             ) -> None:
        """`p` ended with status `word`: its files close, its children lose their parent,
        whoever waits for it is told; a zombie stays only for a live parent's wait4."""
        if p.state == "zombie":
            return
        p.state, p.status = "zombie", word
        p.fds.close_all()
        if p.fork_snapshot is not None:
            p.fork_snapshot[0].close_all()
            p.fork_snapshot = None
        for c in list(self.children(p)):
            c.ppid = 0
            if c.state == "zombie":
                self.reap(c)
        if on_zombie is not None:
            on_zombie(p)
        for fn in p.on_exit:
            fn(p)
        p.on_exit.clear()
        if p.ppid not in self.by_pid:
            self.reap(p)

    def reap(self, p: Process) -> None:
        self.by_pid.pop(p.pid, None)
        self.by_task.pop(p.task_id, None)

    def wait(self, p: Process, pid: int, options: int, reap: bool = True) -> Any:
        """wait4's choice: (pid, status) of a reaped child (left a zombie if not `reap`:
        waitid's WNOWAIT), 0 (WNOHANG), None (block), or -ECHILD."""
        mine = [c for c in self.children(p) if pid == -1 or c.pid == pid
                or (pid == 0 and c.pgid == p.pgid) or (pid < -1 and c.pgid == -pid)]
        for c in mine:
            if c.state == "zombie":
                if reap:
                    self.reap(c)
                return c.pid, c.status
        for c in mine:                 # a stop (WUNTRACED) or a continue (WCONTINUED)
            word = c.unreported
            if word is not None and options & (WCONTINUED if word == CONTINUED else WUNTRACED):
                if reap:
                    c.unreported = None
                return c.pid, word
        if not mine and p.fork_snapshot is None:
            return -10                 # ECHILD
        return 0 if options & WNOHANG else None

    def describe(self) -> list[dict[str, Any]]:
        return [{"pid": p.pid, "ppid": p.ppid,
                 "state": "uninterruptible" if p.l4call else p.state, "comm": p.comm,
                 "task_id": p.task_id, "argv": [a.decode(errors="replace") for a in p.argv]}
                for p in sorted(self.by_pid.values(), key=lambda q: q.pid)]
