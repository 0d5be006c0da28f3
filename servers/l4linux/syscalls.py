"""The Linux system calls the personality serves: one dispatch table by x86-64 number.

Each handler gets the personality (`px`: memory access, the file system, the process
table), the calling `Process` and the six argument registers, and answers one of:
- an int: the result, or -errno;
- `CONTINUE`: the host runs the call (fork's clone, exit: they change only the process);
- `L4`: a hybrid process's L4 call, which the kernel makes (`hybrid`): the completion
  answers the call later;
- `BLOCK`: not now — the reply capability is kept and the same call retried whenever
  something changed (a pipe, a process's end, time), other processes going on meanwhile.
  A handler that answers BLOCK has changed nothing.
A bad pointer is `Fault` (raised by the memory helpers), answered -EFAULT.
Numbers nobody serves answer -ENOSYS, logged once per number (`px.unknown`).

The handlers are in `fscalls` (files, directories, descriptors, pipes, ioctl), `pollcalls`
(poll, ppoll, select, pselect6), `mountcalls` (mount, umount2), `proccalls` (processes,
signals, time, the system) and `hybrid` (L4 calls of hybrid processes); this module holds the table and what they share.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import fs

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

CONTINUE: Any = object()
L4: Any = object()
# How long a parent's next call waits for its fork child's first one (a child that dies
# before any system call is never seen); generous: a loaded host is slow to schedule it.
FORK_WAIT_S = 10.0
SIGPIPE = 13
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
CLONE_VM, CLONE_SIGHAND, CLONE_THREAD, CLONE_VFORK = 0x100, 0x800, 0x10000, 0x4000
TCGETS, TIOCGWINSZ, TIOCGPGRP, TIOCSPGRP = 0x5401, 0x5413, 0x540F, 0x5410
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
UNAME = (b"Linux", b"l4py", b"6.1.0-l4py", b"#1 L4Py personality (L4Linux)", b"x86_64",
         b"(none)")

Handler = Callable[["Personality", "Process", list[int]], Any]
TABLE: dict[int, Handler] = {}


def sys(*numbers: int) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for n in numbers:
            TABLE[n] = fn
        return fn
    return register


def _s64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _dirfd(p: "Process", fd: int) -> fs.Inode | int:
    fd = _i32(fd)
    if fd == AT_FDCWD:
        return p.cwd
    f = p.fds.get(fd)
    if f is None:
        return -errno.EBADF
    if f.node is None or not f.node.is_dir:
        return -errno.ENOTDIR
    return f.node


def scatter(px: "Personality", p: "Process", iov: Iterable[tuple[int, int]],
            data: bytes) -> int:
    """Write `data` into the process's buffers (base, length) in order, as readv and
    recvmsg fill an iovec: the bytes written."""
    done = 0
    for base, length in iov:
        part = data[done:done + length]
        if not part:
            break
        px.write(p, base, part)
        done += len(part)
    return done


def _fsop(fn: Callable[[], object]) -> Any:
    """Run a file-system change: its int result, else 0; an FsError is its -errno."""
    try:
        result = fn()
    except fs.FsError as e:
        return -e.errno
    return result if type(result) is int else 0


# The handlers register themselves in TABLE (imported last: they use the helpers above).
from . import fscalls, hybrid, mountcalls, pollcalls, proccalls  # noqa: E402,F401
from .proccalls import SA_RESTART, SIG_IGN, start_state  # noqa: E402,F401
