"""The Linux-process side of L⁴Linux: the trap filter and the loader that starts a process.

Mechanism (docs/L4LINUX.md "The trap"). A Linux process is a host process running an
unmodified static binary. `start` forks it from the personality's process; the child, in
this order and before any byte of the binary runs:

1. dies with its parent (PR_SET_PDEATHSIG), points fds 0-2 at /dev/null (the binary's
   descriptors are the personality's, never host ones), keeps the program's memfd at
   `MEMFD` and closes every other descriptor;
2. enters a Landlock domain of its own that handles every file-system right and grants
   none (and scopes signals and abstract sockets): even a system call the filter let run
   natively could reach no host file (it already holds no_new_privs, the personality's
   uid and its seccomp baseline, inherited);
3. installs the trap filter (`trap_filter`) with SECCOMP_FILTER_FLAG_NEW_LISTENER (the
   listener is the lowest free descriptor, `LISTENER` by construction) and
   WAIT_KILLABLE_RECV (a call the kernel has read is interrupted by fatal signals only);
4. calls execveat(MEMFD, "", argv, envp, AT_EMPTY_PATH). That call is itself trapped: the
   child waits in it until the kernel has taken the listener (LINUX_ATTACH, pidfd_getfd)
   and the personality answered CONTINUE. The listener is close-on-exec, so the binary
   starts holding no descriptor at all.

The filter: a native allow-list (memory management and thread-local set-up, which the
personality could not do for the process anyway: Goldberg's efficiency), rseq and clone3
answer ENOSYS at once (libc falls back), every other system call is SECCOMP_RET_USER_NOTIF.
x32 and foreign-architecture calls kill the process.

Ownership: `start` runs in the personality's thread that serves the exception IPC; the
child runs only the code below between fork and exec (no Python object of the parent's
threads is touched, no lock taken).
"""
from __future__ import annotations

import ctypes
import os
import signal
import struct
from collections.abc import Sequence

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

MEMFD = 3           # the program's memfd in the child
LISTENER = 4        # the listener's descriptor in the child (lowest free after MEMFD)

# x86-64 system-call numbers the filter and the loader name.
NR = {"read": 0, "write": 1, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
      "rt_sigreturn": 15, "mremap": 25, "madvise": 28, "getpid": 39, "clone": 56, "fork": 57,
      "vfork": 58, "execve": 59, "exit": 60, "wait4": 61, "sigaltstack": 131,
      "arch_prctl": 158, "futex": 202, "set_tid_address": 218, "exit_group": 231,
      "execveat": 322, "rseq": 334, "clone3": 435, "seccomp": 317}
# What runs natively, and why (docs/L4LINUX.md "What runs natively").
# arch_prctl traps (and is CONTINUEd): every libc sets its thread pointer with it before
# it can read the clock, so the first trapped call after exec — where the kernel makes the
# vDSO's clock functions trap (kernel/core/linux.py) — comes before any vDSO call.
NATIVE = ("brk", "mprotect", "munmap", "mremap", "madvise", "futex", "sigaltstack",
          "set_tid_address", "rt_sigreturn")
ENOSYS_NOW = ("rseq", "clone3")
MAP_ANONYMOUS = 0x20
AUDIT_ARCH_X86_64 = 0xC000003E

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# Once the kernel has read a notification, only a fatal signal interrupts the call: a signal
# the personality sends (SIGCHLD to a parent in wait4) waits until the call is answered, so
# an answer is never lost with a state change behind it (Linux 5.19).
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
RET_ALLOW, RET_KILL, RET_ERRNO, RET_USER_NOTIF = 0x7FFF0000, 0x80000000, 0x00050000, 0x7FC00000
AT_EMPTY_PATH = 0x1000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_ENOSYS = 38

# classic BPF
_LD, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_NR_OFF, _ARCH_OFF, _ARG3_OFF = 0, 4, 16 + 3 * 8


def trap_filter() -> bytes:
    """The trap filter (module docstring), as a BPF program."""
    ins: list[tuple[int, int, int, int]] = [
        (_LD, 0, 0, _ARCH_OFF), (_JEQ, 1, 0, AUDIT_ARCH_X86_64), (_RET, 0, 0, RET_KILL),
        (_LD, 0, 0, _NR_OFF), (0x35, 0, 1, 0x40000000), (_RET, 0, 0, RET_KILL)]
    for name in NATIVE:
        ins += [(_JEQ, 0, 1, NR[name]), (_RET, 0, 0, RET_ALLOW)]
    for name in ENOSYS_NOW:
        ins += [(_JEQ, 0, 1, NR[name]), (_RET, 0, 0, RET_ERRNO | _ENOSYS)]
    # mmap: natively only when anonymous (a file mapping names a descriptor of the
    # personality's, which the host process does not have).
    ins += [(_JEQ, 0, 3, NR["mmap"]), (_LD, 0, 0, _ARG3_OFF),
            (_JSET, 0, 1, MAP_ANONYMOUS), (_RET, 0, 0, RET_ALLOW)]
    ins += [(_RET, 0, 0, RET_USER_NOTIF)]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _cstrings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    arr = (ctypes.c_char_p * (len(items) + 1))()
    arr[:-1] = list(items)
    arr[-1] = None
    return arr


def _landlock_nothing() -> None:
    """A Landlock domain that grants no file-system right (best effort: ABI 1..6)."""
    abi = max(0, int(_libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))))
    if abi < 1:
        return
    fs = (1 << 13) - 1
    fs |= (1 << 13) if abi >= 2 else 0
    fs |= (1 << 14) if abi >= 3 else 0
    fs |= (1 << 15) if abi >= 5 else 0
    net = 3 if abi >= 4 else 0
    scoped = 3 if abi >= 6 else 0
    attr = struct.pack("QQQ", fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    rs = _libc.syscall(444, attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rs < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    if _libc.syscall(446, int(rs), 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(int(rs))


def start(program: bytes, argv: Sequence[bytes], envp: Sequence[bytes], name: str = "linux",
          ignored: Sequence[int] = (), mask: int = 0) -> int:
    """Fork a Linux process that will run `program` (an ELF image, never a host path) with
    `argv` and `envp`, signals `ignored` set to SIG_IGN and `mask` blocked (what execve
    keeps); answers its host pid. It waits in its first (trapped) execveat until
    it is attached (LINUX_ATTACH) and that call is answered CONTINUE."""
    memfd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(memfd, view):]
        prog = trap_filter()
        fprog = _Fprog(len(prog) // 8, prog)
        c_argv, c_envp = _cstrings(argv), _cstrings(envp)
        pid = os.fork()
        if pid == 0:
            _child(memfd, fprog, c_argv, c_envp, ignored, mask)    # never returns
        return pid
    finally:
        os.close(memfd)


def _child(memfd: int, fprog: _Fprog, c_argv: ctypes.Array[ctypes.c_char_p],
           c_envp: ctypes.Array[ctypes.c_char_p], ignored: Sequence[int], mask: int) -> None:
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.set_wakeup_fd(-1)
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK,
                               [s for s in range(1, 65) if mask >> (s - 1) & 1
                                and s not in (signal.SIGKILL, signal.SIGSTOP)])
        null = os.open(os.devnull, os.O_RDWR)
        if null == MEMFD or memfd < MEMFD:
            os._exit(124)                   # the parent always has 0-2 open
        for fd in (0, 1, 2):
            os.dup2(null, fd, inheritable=False)
        if memfd != MEMFD:                  # (dup3 refuses a descriptor onto itself)
            os.dup2(memfd, MEMFD, inheritable=False)
        os.closerange(LISTENER, 65536)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _landlock_nothing()
        flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        fd = _libc.syscall(NR["seccomp"], SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
        if fd != LISTENER:
            os._exit(126)
        # From here every call but the native ones waits for the personality.
        _libc.syscall(NR["execveat"], MEMFD, b"", c_argv, c_envp, AT_EMPTY_PATH)
    except BaseException as e:         # the parent sees 125 and the reason on stderr
        try:
            os.write(2, f"linux loader: {e!r}\n".encode())
        finally:
            os._exit(125)
    os._exit(127)
