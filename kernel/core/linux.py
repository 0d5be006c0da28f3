"""L⁴Linux processes: host system calls trapped by seccomp, turned into exception IPC.

Mechanism (docs/L4LINUX.md). A Linux process is a host process that installed the trap
filter (`kernel.user.linux`) with a seccomp *listener*: every system call the filter does
not let run natively waits in the host kernel until someone answers it on the listener.
That someone is this kernel: LINUX_ATTACH takes the listener out of the process
(pidfd_getfd: the personality that started the process never holds it), the transport
polls it, and each notification becomes a `abi.LinuxSyscall` *call* to the exception
handler of the task's main thread (an alien thread) — delivered, counted and queued like
any IPC. The handler's reply is the verdict: `LinuxVerdict.RETURN` with the result (or
-errno), or `CONTINUE` (the host runs the call). The reply capability is the handler's to
keep: a blocked read is answered when data comes, while other processes go on.

A fork (a CONTINUEd clone) makes a host child that shares its parent's listener. Its first
notification comes from a process nobody attached: the kernel makes it a new task (named
`linux:PID`, charged to the parent task's factory) with an alien main thread handled by the
parent's handler, puts a capability to it in the handler's task, and says whose child it is.

Contracts:
- The kernel answers each notification once; answering validates the id (the host does:
  SEND fails for a process that is gone) and LINUX_MEM_* check SECCOMP_IOCTL_NOTIF_ID_VALID
  after opening and after reading the memory, so a recycled pid is never read or written.
- Memory is read and written only while the process waits in a trapped call, and only by a
  holder of a capability to its task; an address outside the process's mappings is
  answered INVALID with "EFAULT".
- A Linux task that dies (its process exited, EXIT, destruction), or whose handler's task is
  gone, has its host process and every descendant of it SIGKILLed: no orphan is left.
- A listener no process uses any more (POLLHUP) is closed.
- Time does not bypass the handler: at the first trapped call after the loader's exec of
  a binary (and every libc traps one, arch_prctl, before its first clock read), the
  vDSO's clock functions are overwritten with `syscall` stubs (`_untime_vdso`), so
  clock_gettime, gettimeofday, time and clock_getres trap like any call. Fork children
  inherit the patched pages.
- Chaos (`faults.intercept_linux`, docs/CHAOS.md): a rule armed for Linux calls may hold a
  trapped call before it goes to the handler (delay) or answer it here with -errno
  (error; never a call in `UNFAILING`). A fork child's first call and the loader's
  execveat (the kernel's announcements) are never faulted.

Ownership: the kernel's event-loop thread only (`ready` and `reap` are called by the
transport's loop).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
from typing import TYPE_CHECKING, Callable, Protocol

from . import faults, ipc, lifecycle, trace
from ..abi import (LINUX_MEM_MAX, LINUX_USER_TOP, AbiError, Err, LinuxSyscall, LinuxVerdict,
                   ObjType, Rights, unpack)
from .objects import Gate, Task

if TYPE_CHECKING:
    from .state import State
    from . import hybrid

# Hybrid calls (LinuxVerdict.L4) are made by kernel/core/hybrid.py, a later layer that
# sets this when it is imported (the transport imports it): start(k, proc, nid, tid, nr, args).
L4_START: "Callable[[State, Proc, int, int, int, tuple[int, ...]], None] | None" = None

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_PIDFD_GETFD = 438
# include/uapi/linux/seccomp.h
NOTIF = struct.Struct("=QIIiIQ6Q")        # seccomp_notif: id, pid, flags, seccomp_data
RESP = struct.Struct("=QqiI")             # seccomp_notif_resp: id, val, error, flags
IOCTL_RECV, IOCTL_SEND, IOCTL_ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
FLAG_CONTINUE = 1
_LISTENER_LINK = "anon_inode:seccomp notify"
_ENOSYS = -errno.ENOSYS
_EXECVEAT = 322
# System calls Linux never fails (an injected error would be no Linux result: getpid
# answering -4 is a pid of -4): exit, exit_group, getpid, getppid, gettid, the get*id
# family, getpgrp, umask, sched_yield, sync, alarm.
UNFAILING = frozenset({60, 231, 39, 110, 186, 102, 104, 107, 108, 111, 95, 24, 162, 37})
# The vDSO functions that read the clock, and the system call each becomes.
VDSO_TRAPS = {b"__vdso_clock_gettime": 228, b"__vdso_gettimeofday": 96, b"__vdso_time": 201,
              b"__vdso_clock_getres": 229}
_ELF_SHDR = struct.Struct("<IIQQQQIIQQ")
_ELF_SYM = struct.Struct("<IBBHQQ")
_SHT_DYNSYM = 11


class Poller(Protocol):
    def register(self, fd: int, flags: int) -> None: ...
    def unregister(self, fd: int) -> None: ...


class Listener:
    """One trap listener (the kernel's copy of it) and the handler its processes report to."""

    def __init__(self, fd: int, owner: Task) -> None:
        self.fd = fd
        self.owner = owner          # the task that attached it (the personality)
        self.procs: set[Proc] = set()


class Proc:
    """A host process that is a Linux task's: its pidfd, its listener, its pending calls."""

    def __init__(self, pid: int, pidfd: int, task: Task, listener: Listener, slot: int,
                 parent: int) -> None:
        self.pid, self.pidfd, self.task, self.listener = pid, pidfd, task, listener
        self.slot = slot            # the owner's capability to `task`
        self.parent = parent        # task id of the process it was forked from, or 0
        self.mem: int | None = None  # /proc/PID/mem, opened on first use
        self.pending: set[int] = set()   # notification ids not answered yet
        self.reported = False       # `parent` goes out with its first report only
        self.loader = False         # still the loader, waiting in its execveat of the image
        self.untime = False         # the image runs: patch its vDSO at its next trapped call
        self.hybrid: hybrid.Hybrid | None = None   # its L4 calls (kernel/core/hybrid.py)


class Linux:
    """Every listener and Linux process of the kernel."""

    def __init__(self, poller: Poller, pollin: int) -> None:
        self.poller, self.pollin = poller, pollin
        self.listeners: dict[int, Listener] = {}
        self.by_pid: dict[int, Proc] = {}
        self.by_task: dict[int, Proc] = {}
        self.stats = {"linux_syscalls": 0, "linux_answers": 0, "linux_forks": 0,
                      "linux_killed": 0}

    def fds(self) -> dict[int, Listener]:
        return self.listeners

    # -- bookkeeping --------------------------------------------------------------
    def add(self, proc: Proc) -> None:
        self.by_pid[proc.pid] = proc
        self.by_task[proc.task.id] = proc
        proc.listener.procs.add(proc)

    def drop(self, proc: Proc, kill: bool, tree: bool = False) -> None:
        """Forget `proc`; with `kill`, SIGKILL it first (with `tree`, its descendants too:
        only when the personality is gone — a Linux parent's death leaves its children)."""
        if kill:
            _kill_tree(proc.pid, proc.pidfd, tree)
            self.stats["linux_killed"] += 1
        if self.by_pid.get(proc.pid) is proc:
            del self.by_pid[proc.pid]
        if self.by_task.get(proc.task.id) is proc:
            del self.by_task[proc.task.id]
        proc.listener.procs.discard(proc)
        for fd in (proc.pidfd, proc.mem):
            if fd is not None:
                os.close(fd)
        proc.mem = None
        proc.pending.clear()

    def close_listener(self, lst: Listener) -> None:
        if self.listeners.pop(lst.fd, None) is not None:
            self.poller.unregister(lst.fd)
            os.close(lst.fd)

    def close(self) -> None:
        for proc in list(self.by_pid.values()):
            self.drop(proc, kill=True, tree=True)
        for lst in list(self.listeners.values()):
            self.close_listener(lst)


def install(k: "State", poller: Poller, pollin: int) -> Linux:
    k.linux = lx = Linux(poller, pollin)
    return lx


def _kill_tree(pid: int, pidfd: int | None, tree: bool) -> None:
    """SIGKILL `pid` and, with `tree`, every process below it (read from /proc first)."""
    seen: list[int] = []
    todo = [pid] if tree else []
    while todo and len(seen) < 4096:
        p = todo.pop()
        seen.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    for p in seen[1:] if tree else ():
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass


def _status_field(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# -- LINUX_ATTACH ---------------------------------------------------------------------

def _take_listener(pidfd: int, fd: int) -> int | None:
    """Our copy of descriptor `fd` of the process, if it is a seccomp listener by now."""
    got = int(_libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    if got < 0:
        return None
    try:
        if os.readlink(f"/proc/self/fd/{got}") == _LISTENER_LINK:
            os.set_inheritable(got, False)
            return got
    except OSError:
        pass
    os.close(got)
    return None


def attach(k: "State", caller: Task, slot: int, task: Task, handler: Gate, pid: int,
           fd: int) -> None:
    """Checked LINUX_ATTACH: `pid` (a child of the caller's process) becomes `task`'s process,
    its main thread alien with `handler`, and the kernel takes its listener; a process
    `task` had before (an execve) is killed."""
    lx: Linux = k.linux
    main = task.threads[0] if task.threads else None
    if main is None or not main.alive or not task.alive:
        raise AbiError(Err.INVALID, f"task '{task.name}' has no live main thread")
    if not 0 < pid < 2 ** 31 or not 0 <= fd < 2 ** 20:
        raise AbiError(Err.INVALID, f"pid {pid} or fd {fd} out of range")
    mine = caller.pid if caller.pidfd is not None else caller.peer_pid
    if mine is None or _status_field(pid, "PPid") != mine:
        raise AbiError(Err.INVALID, f"process {pid} is not a child of the caller's process")
    if pid in lx.by_pid:
        raise AbiError(Err.BUSY, f"process {pid} is attached already")
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise AbiError(Err.INVALID, f"cannot open process {pid}: {e.strerror}") from None
    lfd = _take_listener(pidfd, fd)
    if lfd is None:
        os.close(pidfd)
        raise AbiError(Err.BUSY, f"process {pid} has no seccomp listener at fd {fd} yet; "
                                 "try again")
    # -- checked: act ---------------------------------------------------------------
    main.alien, main.handler = True, handler
    old = lx.by_task.get(task.id)
    if old is not None:
        lx.drop(old, kill=True)          # execve: the old image goes, the task stays
    lst = Listener(lfd, caller)
    lx.listeners[lfd] = lst
    lx.poller.register(lfd, lx.pollin)
    parent = old.parent if old is not None else 0
    proc = Proc(pid, pidfd, task, lst, slot, parent)
    proc.reported = old is not None
    proc.loader = True
    lx.add(proc)
    k.wire.watch(task, pid)


# -- notifications --------------------------------------------------------------------

def ready(k: "State", fd: int) -> None:
    """The transport saw listener `fd` readable (or hung up)."""
    lx: Linux = k.linux
    lst = lx.listeners.get(fd)
    if lst is None:
        return
    p = select.poll()
    p.register(fd, select.POLLIN)
    events = p.poll(0)
    revents = events[0][1] if events else 0
    if not revents & select.POLLIN:
        if revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            lx.close_listener(lst)           # no process uses this filter any more
        return
    buf = bytearray(NOTIF.size)
    try:
        fcntl.ioctl(fd, IOCTL_RECV, buf)
    except OSError:
        return                               # the caller died before we read it
    nid, tid, _flags, nr, _arch, ip, *args = NOTIF.unpack(buf)
    proc = _proc_of(k, lst, tid, nid)
    if proc is None:
        _send(fd, nid, _ENOSYS, 0)
        return
    _report(k, proc, nid, tid, nr, tuple(args), ip)


def _proc_of(k: "State", lst: Listener, tid: int, nid: int) -> Proc | None:
    """The process thread `tid` belongs to; a fork child is made a task on first sight."""
    lx: Linux = k.linux
    proc = lx.by_pid.get(tid)
    if proc is not None:
        return proc
    tgid = _status_field(tid, "Tgid")
    if tgid is None:
        return None
    proc = lx.by_pid.get(tgid)
    if proc is not None:
        return proc
    ppid = _status_field(tgid, "PPid")
    parent = lx.by_pid.get(ppid) if ppid is not None else None
    if parent is None or parent.listener is not lst:
        parent = next(iter(lst.procs), None)
    if parent is None or not parent.task.alive or not lst.owner.alive:
        return None
    if not _id_valid(lst.fd, nid):
        return None      # what /proc said may be about a process that took the pid since
    return _forked(k, lst, parent, tgid)


def _forked(k: "State", lst: Listener, parent: Proc, pid: int) -> Proc | None:
    lx: Linux = k.linux
    handler = parent.task.threads[0].handler
    try:
        lifecycle.charge(parent.task.factory, 3) if parent.task.factory else None
        pidfd = os.pidfd_open(pid)
    except (AbiError, OSError):
        return None
    task, main = k.make_task(f"linux:{pid}", parent.task.factory, 0)
    main.alien, main.handler = True, handler
    slot = lst.owner.space.pick_slot(None)
    lst.owner.space.insert(slot, task, Rights.ALL)
    proc = Proc(pid, pidfd, task, lst, slot, parent.task.id)
    lx.add(proc)
    k.wire.watch(task, pid)
    lx.stats["linux_forks"] += 1
    return proc


def _report(k: "State", proc: Proc, nid: int, tid: int, nr: int, args: tuple[int, ...],
            ip: int) -> None:
    """The trapped call, as a call to the task's handler; its reply answers the process."""
    lx: Linux = k.linux
    task = proc.task
    handler: Gate | None = task.threads[0].handler if task.threads else None
    lx.stats["linux_syscalls"] += 1
    if trace.ON:
        trace.linux(task, proc.pid, nr)
    task.stats["calls"] += 1
    proc.pending.add(nid)
    if proc.untime:
        proc.untime = False
        _untime_vdso(k, proc)
    announce = not proc.reported or (proc.loader and nr == _EXECVEAT)
    parent = 0 if proc.reported else proc.parent
    proc.reported = True
    msg = LinuxSyscall(task.name, task.id, proc.slot, parent, proc.pid, tid, nr, args, ip)

    def verdict(proto: int, payload: bytes | None) -> None:
        if nid not in proc.pending:
            return
        if proto == LinuxVerdict.L4:         # a hybrid call: answered when it completes
            if L4_START is not None:
                L4_START(k, proc, nid, tid, nr, args)
                return
            proto = LinuxVerdict.RETURN      # no hybrid layer: the call answers ENOSYS
            payload = None
        proc.pending.discard(nid)
        lx.stats["linux_answers"] += 1
        if proto == LinuxVerdict.CONTINUE:
            if proc.loader and nr == _EXECVEAT:
                proc.loader, proc.untime = False, True     # the image starts now
            _send(proc.listener.fd, nid, 0, FLAG_CONTINUE)
            return
        try:
            value = unpack(payload) if payload else _ENOSYS
        except Exception:
            value = _ENOSYS
        if type(value) is not int or not -(2 ** 63) <= value < 2 ** 63:
            value = _ENOSYS
        _send(proc.listener.fd, nid, value, 0)

    def gone(err: Err, reason: str) -> None:
        if nid in proc.pending and task.alive:
            k.log(f"{task.name}: no handler answered system call {nr} ({reason}): killed")
            lifecycle.destroy(k, task, f"its handler is gone ({reason})")

    if faults.LINUX_ARMED and not announce:
        def deliver() -> None:               # a delay ended
            if nid in proc.pending and task.alive:
                ipc.kernel_send(k, handler, msg, task.threads[0].priority, verdict, gone)

        def answer(value: int) -> None:      # an injected error: the kernel answers
            if nid in proc.pending:
                proc.pending.discard(nid)
                lx.stats["linux_answers"] += 1
                _send(proc.listener.fd, nid, value, 0)

        if faults.intercept_linux(k, handler, task, nr, nr not in UNFAILING, deliver, answer):
            return              # a chaos rule took the call over (kernel/core/faults.py)
    ipc.kernel_send(k, handler, msg, task.threads[0].priority, verdict, gone)


def _send(fd: int, nid: int, value: int, flags: int) -> None:
    error = value if -4095 <= value < 0 and not flags else 0
    try:
        fcntl.ioctl(fd, IOCTL_SEND, RESP.pack(nid, 0 if error else value, error, flags))
    except OSError:
        pass                               # the process is gone (or was killed): no one waits


# -- memory -------------------------------------------------------------------------------

def _mem_proc(k: "State", caller: Task, slot: int, need: Rights) -> Proc:
    task: Task = caller.space.lookup(slot, ObjType.TASK, need).obj  # type: ignore[assignment]
    proc = k.linux.by_task.get(task.id)
    if proc is None:
        raise AbiError(Err.INVALID, f"task '{task.name}' is not a Linux process")
    if not proc.pending:
        raise AbiError(Err.BUSY, f"{task.name} is running, not waiting in a trapped call")
    return proc


def _id_valid(fd: int, nid: int) -> bool:
    try:
        fcntl.ioctl(fd, IOCTL_ID_VALID, struct.pack("=Q", nid))
        return True
    except OSError:
        return False


def _valid(proc: Proc) -> bool:
    for nid in list(proc.pending):
        if _id_valid(proc.listener.fd, nid):
            return True
        proc.pending.discard(nid)
    return False


def _mem_fd(proc: Proc) -> int:
    if proc.mem is None:
        try:
            proc.mem = os.open(f"/proc/{proc.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise AbiError(Err.PEER_DIED, f"process {proc.pid}: {e.strerror}") from None
    if not _valid(proc):                   # the pid may have been another process's by now
        raise AbiError(Err.PEER_DIED, f"process {proc.pid} is gone")
    return proc.mem


def _check_range(addr: int, length: int) -> None:
    if not 0 <= length <= LINUX_MEM_MAX:
        raise AbiError(Err.INVALID, f"length {length} outside 0..{LINUX_MEM_MAX}")
    if not 0 <= addr <= LINUX_USER_TOP - length:
        raise AbiError(Err.INVALID, f"EFAULT: 0x{addr:x}+{length} is not a user address")


def mem_read(k: "State", caller: Task, slot: int, addr: int, length: int) -> bytes:
    _check_range(addr, length)
    proc = _mem_proc(k, caller, slot, Rights.INVOKE)
    fd = _mem_fd(proc)
    try:
        data = os.pread(fd, length, addr)
    except OSError:
        data = b""
    if not _valid(proc):
        raise AbiError(Err.PEER_DIED, f"process {proc.pid} is gone")
    if len(data) < length and not data:
        raise AbiError(Err.INVALID, f"EFAULT: 0x{addr:x} is not mapped in process {proc.pid}")
    return data


def mem_write(k: "State", caller: Task, slot: int, addr: int, data: bytes) -> int:
    _check_range(addr, len(data))
    proc = _mem_proc(k, caller, slot, Rights.WRITE)
    fd = _mem_fd(proc)
    try:
        n = os.pwrite(fd, data, addr) if data else 0
    except OSError:
        raise AbiError(Err.INVALID, f"EFAULT: 0x{addr:x} is not writable in process "
                                    f"{proc.pid}") from None
    return n


# -- LINUX_ADDFD ---------------------------------------------------------------------------

IOCTL_ADDFD = 0x40182103                # SECCOMP_IOCTL_NOTIF_ADDFD: _IOW('!', 3, 24 bytes)
_ADDFD = struct.Struct("=QIIII")        # seccomp_notif_addfd: id, flags, srcfd, newfd, flags
_ADDFD_FLAG_SETFD = 1


def addfd(k: "State", caller: Task, slot: int, fd: int, target: int) -> int:
    """Checked LINUX_ADDFD: the caller's descriptor `fd` becomes descriptor `target` of the
    Linux task's process (close-on-exec), through one of its pending notifications."""
    if not 0 <= fd < 2 ** 20 or not 0 <= target < 2 ** 20:
        raise AbiError(Err.INVALID, f"fd {fd} or target {target} out of range")
    proc = _mem_proc(k, caller, slot, Rights.WRITE)
    mine = caller.pid if caller.pidfd is not None else caller.peer_pid
    if mine is None:
        raise AbiError(Err.INVALID, "the caller's process is not known")
    try:
        pidfd = os.pidfd_open(mine)
    except OSError as e:
        raise AbiError(Err.INVALID, f"the caller's process: {e.strerror}") from None
    try:
        got = int(_libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if got < 0:
        raise AbiError(Err.INVALID, f"descriptor {fd} is not open in the caller's process")
    # -- checked: act ---------------------------------------------------------------
    try:
        for nid in list(proc.pending):
            req = _ADDFD.pack(nid, _ADDFD_FLAG_SETFD, got, target, os.O_CLOEXEC)
            try:
                return fcntl.ioctl(proc.listener.fd, IOCTL_ADDFD, bytearray(req), True)
            except OSError:
                continue                    # that notification is gone: another one
        raise AbiError(Err.PEER_DIED, f"process {proc.pid} waits in no trapped call")
    finally:
        os.close(got)


# -- the vDSO ------------------------------------------------------------------------------

def _vdso_range(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    lo, _, hi = line.split()[0].partition("-")
                    return int(lo, 16), int(hi, 16)
    except (OSError, ValueError):
        pass
    return None


def vdso_symbols(image: bytes) -> dict[bytes, int]:
    """The dynamic symbols of a vDSO image (offsets from its start); ValueError if it is
    not the ELF image it should be."""
    try:
        if image[:4] != b"\x7fELF":
            raise ValueError("no ELF magic")
        (shoff,) = struct.unpack_from("<Q", image, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
        if shentsize != _ELF_SHDR.size or shnum > 64:
            raise ValueError("unexpected section headers")
        secs = [_ELF_SHDR.unpack_from(image, shoff + i * shentsize) for i in range(shnum)]
        out: dict[bytes, int] = {}
        for sec in secs:
            if sec[1] != _SHT_DYNSYM or sec[9] != _ELF_SYM.size:
                continue
            off, size, strtab = sec[4], sec[5], secs[sec[6]][4]
            for i in range(min(size // _ELF_SYM.size, 256)):
                name, _info, _other, _shndx, value, _size = _ELF_SYM.unpack_from(
                    image, off + i * _ELF_SYM.size)
                end = image.index(b"\0", strtab + name)
                out[image[strtab + name:end]] = value
        return out
    except (struct.error, IndexError) as e:
        raise ValueError(str(e)) from None


def _stub(nr: int) -> bytes:
    return b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05\xc3"     # mov eax, nr; syscall; ret


def _untime_vdso(k: "State", proc: Proc) -> None:
    """Overwrite the clock functions of `proc`'s vDSO with system-call stubs (the arguments
    are already in the registers the system call takes), so that they trap. The write goes
    through /proc/PID/mem, which may write a read-only private mapping: the process gets
    its own copy of the page. A vDSO that is not there or not understood is logged."""
    span = _vdso_range(proc.pid)
    if span is None:
        return                              # none mapped (vdso=0): every clock call traps
    lo, hi = span
    try:
        fd = _mem_fd(proc)
        syms = vdso_symbols(os.pread(fd, min(hi - lo, 1 << 16), lo))
        for name, nr in VDSO_TRAPS.items():
            off = syms.get(name)
            if off is not None and lo <= lo + off <= hi - 8:
                os.pwrite(fd, _stub(nr), lo + off)
    except (AbiError, OSError, ValueError) as e:
        k.log(f"{proc.task.name}: the vDSO's clock calls were not made to trap: {e}")


# -- teardown -----------------------------------------------------------------------------

def reap(k: "State") -> None:
    """Kill the processes of dead Linux tasks and of tasks whose handler's task is gone."""
    lx: Linux = k.linux
    for proc in list(lx.by_pid.values()):
        if not proc.task.alive:
            lx.drop(proc, kill=True)
        elif not proc.listener.owner.alive:
            lx.drop(proc, kill=True, tree=True)
            lifecycle.destroy(k, proc.task, "the task that started it is gone")
    for lst in list(lx.listeners.values()):
        if not lst.owner.alive:
            lx.close_listener(lst)


def any_live(k: "State") -> bool:
    lx: Linux | None = getattr(k, "linux", None)
    return bool(lx is not None and (lx.by_pid or lx.listeners))

