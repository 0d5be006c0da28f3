"""Linux system calls on files, directories, descriptors and pipes (the `syscalls.TABLE`
entries by x86-64 number; the conventions are `syscalls`'s).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from kernel.user.errors import L4Error, PeerDied

from . import files, fs, netconf, tty
from .files import Open
from .pipe import BLOCK, Pipe
from .syscalls import (CONTINUE, AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW,
                       F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_GETFL, F_SETFD, F_SETFL, SIGPIPE,
                       _dirfd, _fsop, _i32, _s64, scatter, sys)

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

# -- files ------------------------------------------------------------------------------

def _open(px: "Personality", p: "Process", dirfd: int, path: bytes, flags: int,
          mode: int) -> int:
    start = _dirfd(p, dirfd)
    if isinstance(start, int):
        return start
    cloexec = bool(flags & files.O_CLOEXEC)
    again = _fd_link(px, p, path, start)
    if again is not None:
        f = files.reopen(again, flags) if isinstance(again, Open) else again
        return f if isinstance(f, int) else p.fds.install(f, cloexec)
    if path.startswith(b"/dev/"):
        name = path[5:].decode(errors="replace")
        try:
            node: fs.Inode | None = px.fs.walk(path, start)
        except fs.FsError:
            node = None
        dev = files.device(name, flags, p.console, node)
        if dev is not None:
            return p.fds.install(dev, cloexec)
    try:
        if flags & files.O_CREAT:
            node = px.fs.create(path, start, mode & ~p.umask, bool(flags & files.O_EXCL))
        else:
            node = px.fs.walk(path, start, follow=not flags & files.O_NOFOLLOW)
    except fs.FsError as e:
        return -e.errno
    if node.is_link:
        return -errno.ELOOP
    if flags & files.O_DIRECTORY and not node.is_dir:
        return -errno.ENOTDIR
    if node.is_dir and flags & files.O_ACCMODE != 0:
        return -errno.EISDIR
    f = files.open_node(node, flags)
    f.path = path if path.startswith(b"/") else px.fs.path_of(start).rstrip(b"/") + b"/" + path
    return p.fds.install(f, cloexec)


def _fd_link(px: "Personality", p: "Process", path: bytes, start: fs.Inode,
             depth: int = 0) -> Open | int | None:
    """The description an open of PID/fd/N in /proc (also through /dev/fd, /dev/stdin…)
    names, -errno if there is none, None for any other path."""
    try:
        parent, name = px.fs.parent_of(path, start)
    except fs.FsError:
        return None
    where = px.fs.path_of(parent).split(b"/")          # b"", b"proc", PID, b"fd"
    if len(where) == 4 and where[1] == b"proc" and where[3] == b"fd":
        q = px.procs.by_pid.get(int(where[2])) if where[2].isdigit() else None
        f = q.fds.get(int(name)) if q is not None and name.isdigit() else None
        return f if f is not None else -errno.ENOENT
    node = parent.entries.get(name)
    if node is not None and node.is_link and depth < 8:
        return _fd_link(px, p, node.target, parent, depth + 1)      # /dev/stdin
    return None


def _node(px: "Personality", p: "Process", path: bytes, start: fs.Inode,
          follow: bool = True) -> fs.Inode:
    """The inode `path` names for stat and access; PID/fd/N in /proc, followed, is the
    file its description is (a pipe's too). Raises FsError."""
    if follow:
        f = _fd_link(px, p, path, start)
        if isinstance(f, Open):
            return f.stat_node()
        if isinstance(f, int):
            raise fs.FsError(-f, path.decode(errors="replace"))
    return px.fs.walk(path, start, follow=follow)


@sys(2)
def sys_open(px: "Personality", p: "Process", a: list[int]) -> Any:
    return _open(px, p, AT_FDCWD, px.cstr(p, a[0]), a[1], a[2])


@sys(85)
def sys_creat(px: "Personality", p: "Process", a: list[int]) -> Any:
    flags = files.O_CREAT | files.O_WRONLY | files.O_TRUNC
    return _open(px, p, AT_FDCWD, px.cstr(p, a[0]), flags, a[1])


@sys(257)
def sys_openat(px: "Personality", p: "Process", a: list[int]) -> Any:
    return _open(px, p, a[0], px.cstr(p, a[1]), a[2], a[3])


@sys(3)
def sys_close(px: "Personality", p: "Process", a: list[int]) -> Any:
    return p.fds.close(_i32(a[0]))


@sys(0, 17)
def sys_read(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    n = min(a[2], 65536)
    stop = _job_control(px, p, f, tty.SIGTTIN) if px.nr == 0 else 0
    if stop:
        return stop
    if px.nr == 17:                 # pread64: at an offset, the file position untouched
        if f.kind != "file" or f.node is None:
            return -errno.ESPIPE
        got: Any = bytes(f.node.data[a[3]:a[3] + n])
    else:
        got = f.read(n)
    if got is BLOCK or isinstance(got, int):
        return got
    if got:
        px.write(p, a[1], got)
    return len(got)


def _job_control(px: "Personality", p: "Process", f: Any, sig: int) -> int:
    """A read (SIGTTIN) or, with TOSTOP, a write (SIGTTOU) of the terminal by a background
    process: 0 to go on, else the call's answer (tty.background)."""
    t = f.tty() if f.kind == "console" else None
    if t is None or sig == tty.SIGTTOU and not t.lflag & tty.TOSTOP:
        return 0
    return tty.background(px, p, t, sig)


def _written(px: "Personality", p: "Process", result: Any) -> Any:
    """A write to a pipe nobody reads: SIGPIPE (the host's default action ends the process
    at once), and -EPIPE for a process that ignores or handles it."""
    if result == -errno.EPIPE:
        px.kill(p, SIGPIPE)
    return result


@sys(1, 18)
def sys_write(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    if f.kind in ("null", "zero") and f.writable():
        return a[2]                 # /dev/null reads nothing of the buffer (as Linux's)
    stop = _job_control(px, p, f, tty.SIGTTOU) if px.nr == 1 else 0
    if stop:
        return stop
    data = px.read(p, a[1], min(a[2], 65536))
    if px.nr == 18:                 # pwrite64
        if f.kind != "file" or f.node is None:
            return -errno.ESPIPE
        if f.node.mount is None and a[3] + len(data) > files.MAX_FILE:
            return -errno.EFBIG
        return fs.write_at(f.node, a[3], data)
    return _written(px, p, f.write(data))


@sys(20)
def sys_writev(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    stop = _job_control(px, p, f, tty.SIGTTOU)
    if stop:
        return stop
    count = min(a[2], 1024)
    iov = px.read(p, a[1], 16 * count)
    data = b"".join(px.read(p, base, min(length, 65536))
                    for base, length in struct.iter_unpack("<QQ", iov) if length)
    return _written(px, p, f.write(data)) if data else 0


@sys(19)
def sys_readv(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    stop = _job_control(px, p, f, tty.SIGTTIN)
    if stop:
        return stop
    iov = list(struct.iter_unpack("<QQ", px.read(p, a[1], 16 * min(a[2], 1024))))
    want = sum(length for _, length in iov)
    got = f.read(min(want, 65536))
    if got is BLOCK or isinstance(got, int):
        return got
    return scatter(px, p, iov, got)


@sys(40)
def sys_sendfile(px: "Personality", p: "Process", a: list[int]) -> Any:
    out, src = p.fds.get(_i32(a[0])), p.fds.get(_i32(a[1]))
    if out is None or src is None:
        return -errno.EBADF
    if src.kind != "file" or src.node is None:
        return -errno.EINVAL            # (as Linux: the source must be mmap-able)
    n = min(a[3], 65536)
    if a[2]:
        (off,) = struct.unpack("<q", px.read(p, a[2], 8))
        data = bytes(src.node.data[off:off + n])
    else:
        data = src.read(n)
    done = _written(px, p, out.write(data)) if data else 0
    if done is BLOCK:
        if not a[2]:
            src.pos -= len(data)        # nothing was sent: the call is retried as it was
        return BLOCK
    if isinstance(done, int) and done >= 0:
        if a[2]:
            px.write(p, a[2], struct.pack("<q", off + done))
        elif done < len(data):
            src.pos -= len(data) - done
    return done


@sys(8)
def sys_lseek(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    if f.kind not in ("file", "dir"):
        return -errno.ESPIPE
    off, whence = _s64(a[1]), a[2]
    base = {0: 0, 1: f.pos, 2: f.node.size() if f.node else 0}.get(whence)
    if base is None or base + off < 0:
        return -errno.EINVAL
    f.pos = base + off
    return f.pos


def _dup(p: "Process", old: int, new: int | None, cloexec: bool, lowest: int = 0) -> int:
    f = p.fds.get(_i32(old))
    if f is None:
        return -errno.EBADF
    if new is not None and new == old:
        return new
    return p.fds.install(f, cloexec, lowest=lowest, at=new)


@sys(32)
def sys_dup(px: "Personality", p: "Process", a: list[int]) -> Any:
    return _dup(p, a[0], None, False)


@sys(33)
def sys_dup2(px: "Personality", p: "Process", a: list[int]) -> Any:
    return _dup(p, a[0], _i32(a[1]), False)


@sys(292)
def sys_dup3(px: "Personality", p: "Process", a: list[int]) -> Any:
    if _i32(a[0]) == _i32(a[1]):
        return -errno.EINVAL
    return _dup(p, a[0], _i32(a[1]), bool(a[2] & files.O_CLOEXEC))


@sys(72)
def sys_fcntl(px: "Personality", p: "Process", a: list[int]) -> Any:
    fd, cmd, arg = _i32(a[0]), a[1], a[2]
    f = p.fds.get(fd)
    if f is None:
        return -errno.EBADF
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return _dup(p, fd, None, cmd == F_DUPFD_CLOEXEC, lowest=arg)
    if cmd == F_GETFD:
        return 1 if p.fds.cloexec(fd) else 0
    if cmd == F_SETFD:
        p.fds.set_cloexec(fd, bool(arg & 1))
        return 0
    if cmd == F_GETFL:
        return f.flags & ~files.O_CLOEXEC
    if cmd == F_SETFL:
        f.flags = (f.flags & ~files.O_NONBLOCK & ~files.O_APPEND) | (
            arg & (files.O_NONBLOCK | files.O_APPEND))
        return 0
    return -errno.EINVAL


@sys(22, 293)
def sys_pipe2(px: "Personality", p: "Process", a: list[int]) -> Any:
    flags = a[1] if px.nr == 293 else 0     # pipe(): rsi is whatever the caller left there
    pipe = Pipe()
    cloexec = bool(flags & files.O_CLOEXEC)
    nb = flags & files.O_NONBLOCK
    r = p.fds.install(Open("pipe_r", nb, pipe=pipe), cloexec)
    w = p.fds.install(Open("pipe_w", files.O_WRONLY | nb, pipe=pipe), cloexec)
    px.write(p, a[0], struct.pack("<ii", r, w))
    return 0


@sys(16)
def sys_ioctl(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    if f.kind == "socket":          # the interface ioctls, then the socket's own (netconf.py)
        return netconf.ioctl(px, p, f, a[1] & 0xFFFFFFFF, a[2])
    t = f.tty()
    if t is None:
        return -errno.ENOTTY        # not a terminal (`linux run`'s console, files, pipes)
    return tty.ioctl(px, p, t, a[1] & 0xFFFFFFFF, a[2])


def _stat_out(px: "Personality", p: "Process", node: fs.Inode, buf: int) -> int:
    px.write(p, buf, fs.stat_bytes(node))
    return 0


@sys(5)
def sys_fstat(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    return _stat_out(px, p, f.stat_node(), a[1])


@sys(4, 6)
def sys_stat(px: "Personality", p: "Process", a: list[int]) -> Any:
    path = px.cstr(p, a[0])
    return _fsop(lambda: _stat_out(px, p, _node(px, p, path, p.cwd, follow=px.nr == 4), a[1]))


@sys(262)
def sys_newfstatat(px: "Personality", p: "Process", a: list[int]) -> Any:
    path, flags = px.cstr(p, a[1]), a[3]
    if not path and flags & AT_EMPTY_PATH:
        return sys_fstat(px, p, [a[0], a[2]])
    start = _dirfd(p, a[0])
    if isinstance(start, int):
        return start
    return _fsop(lambda: _stat_out(px, p, _node(px, p, path, start,
                                                 follow=not flags & AT_SYMLINK_NOFOLLOW), a[2]))


@sys(21, 269, 439)
def sys_access(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 21:
        path, start, flags = px.cstr(p, a[0]), p.cwd, 0
    else:
        path, flags = px.cstr(p, a[1]), a[3] if px.nr == 439 else 0
        got = _dirfd(p, a[0])
        if isinstance(got, int):
            return got
        start = got
    return _fsop(lambda: _node(px, p, path, start, follow=not flags & AT_SYMLINK_NOFOLLOW))


@sys(217)
def sys_getdents64(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    if f.kind != "dir" or f.node is None:
        return -errno.ENOTDIR
    out = bytearray()
    entries = list(px.fs.listing(f.node))
    while f.pos < len(entries):
        ino, typ, name = entries[f.pos]
        rec = fs.dirent64(ino, f.pos + 1, typ, name)
        if len(out) + len(rec) > a[2]:
            if not out:
                return -errno.EINVAL
            break
        out += rec
        f.pos += 1
    if out:
        px.write(p, a[1], bytes(out))
    return len(out)


@sys(79)
def sys_getcwd(px: "Personality", p: "Process", a: list[int]) -> Any:
    path = px.fs.path_of(p.cwd) + b"\0"
    if len(path) > a[1]:
        return -errno.ERANGE
    px.write(p, a[0], path)
    return len(path)


@sys(80)
def sys_chdir(px: "Personality", p: "Process", a: list[int]) -> Any:
    path = px.cstr(p, a[0])
    try:
        node = px.fs.walk(path, p.cwd)
    except fs.FsError as e:
        return -e.errno
    if not node.is_dir:
        return -errno.ENOTDIR
    p.cwd = node
    return 0


@sys(81)
def sys_fchdir(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _dirfd(p, a[0])
    if isinstance(got, int):
        return got
    p.cwd = got
    return 0


@sys(83, 258)
def sys_mkdir(px: "Personality", p: "Process", a: list[int]) -> Any:
    start: Any = p.cwd
    if px.nr == 258:
        start, a = _dirfd(p, a[0]), a[1:]
        if isinstance(start, int):
            return start
    path = px.cstr(p, a[0])
    return _fsop(lambda: px.fs.mkdir(path, start, a[1] & ~p.umask))


@sys(84, 87, 263)
def sys_unlink(px: "Personality", p: "Process", a: list[int]) -> Any:
    start: Any = p.cwd
    rmdir = px.nr == 84
    if px.nr == 263:
        start, rmdir = _dirfd(p, a[0]), bool(a[2] & AT_REMOVEDIR)
        if isinstance(start, int):
            return start
        a = a[1:]
    path = px.cstr(p, a[0])
    return _fsop(lambda: px.fs.unlink(path, start, rmdir))


@sys(82, 264, 316)
def sys_rename(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 82:
        old, new = px.cstr(p, a[0]), px.cstr(p, a[1])
    else:
        if _dirfd(p, a[0]) is not p.cwd or _dirfd(p, a[2]) is not p.cwd:
            return -errno.ENOSYS       # renameat relative to a directory fd: not yet
        old, new = px.cstr(p, a[1]), px.cstr(p, a[3])
    return _fsop(lambda: px.fs.rename(old, new, p.cwd))


@sys(88, 266)
def sys_symlink(px: "Personality", p: "Process", a: list[int]) -> Any:
    target = px.cstr(p, a[0])
    path = px.cstr(p, a[1] if px.nr == 88 else a[2])
    start: Any = p.cwd if px.nr == 88 else _dirfd(p, a[1])
    if isinstance(start, int):
        return start
    return _fsop(lambda: px.fs.symlink(target, path, start))


@sys(86, 265)
def sys_link(px: "Personality", p: "Process", a: list[int]) -> Any:
    old, new = (a[0], a[1]) if px.nr == 86 else (a[1], a[3])
    op, np_ = px.cstr(p, old), px.cstr(p, new)
    return _fsop(lambda: px.fs.link(px.fs.walk(op, p.cwd, follow=False), np_, p.cwd))


@sys(89, 267)
def sys_readlink(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 267:
        start: Any = _dirfd(p, a[0])
        if isinstance(start, int):
            return start
        a = a[1:]
    else:
        start = p.cwd
    path = px.cstr(p, a[0])
    try:
        node = px.fs.walk(path, start, follow=False)
    except fs.FsError as e:
        return -e.errno
    if not node.is_link:
        return -errno.EINVAL
    data = node.target[:a[2]]
    px.write(p, a[1], data)
    return len(data)


@sys(90, 91, 268, 92, 93, 94, 260)
def sys_chmod(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 91:                 # fchmod
        f = p.fds.get(_i32(a[0]))
        if f is None or f.node is None:
            return -errno.EBADF
        f.node.mode = (f.node.mode & ~0o7777) | (a[1] & 0o7777)
        return 0
    if px.nr in (90, 268):
        path = px.cstr(p, a[0] if px.nr == 90 else a[1])
        mode = a[1] if px.nr == 90 else a[2]

        def change() -> int:
            node = px.fs.walk(path, p.cwd)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0
        return _fsop(change)
    return 0                        # chown family: every process is root; accepted


@sys(95)
def sys_umask(px: "Personality", p: "Process", a: list[int]) -> Any:
    old, p.umask = p.umask, a[0] & 0o777
    return old



@sys(280)
def sys_utimensat(px: "Personality", p: "Process", a: list[int]) -> Any:
    if a[1] == 0:                   # futimens: the file of dirfd itself
        f = p.fds.get(_i32(a[0]))
        if f is None:
            return -errno.EBADF
        node = f.stat_node()
    else:
        start = _dirfd(p, a[0])
        if isinstance(start, int):
            return start
        path = px.cstr(p, a[1])
        try:
            node = px.fs.walk(path, start, follow=not a[3] & AT_SYMLINK_NOFOLLOW)
        except fs.FsError as e:
            return -e.errno
    now = time.time()
    times = [(now, now), (now, now)]
    if a[2]:
        raw = struct.unpack("<qqqq", px.read(p, a[2], 32))
        for i in range(2):
            sec, nsec = raw[2 * i], raw[2 * i + 1]
            if nsec == UTIME_OMIT:
                times[i] = (-1.0, -1.0)
            elif nsec != UTIME_NOW:
                times[i] = (sec + nsec / 1e9, 0.0)
    if times[0][0] >= 0:
        node.atime = times[0][0]
    if times[1][0] >= 0:
        node.mtime = times[1][0]
    node.ctime = now
    return 0


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


@sys(76, 77)
def sys_truncate(px: "Personality", p: "Process", a: list[int]) -> Any:
    if px.nr == 77:
        f = p.fds.get(_i32(a[0]))
        if f is None:
            return -errno.EBADF
        if f.kind != "file" or f.node is None or not f.writable():
            return -errno.EINVAL
        node = f.node
    else:
        try:
            node = px.fs.walk(px.cstr(p, a[0]), p.cwd)
        except fs.FsError as e:
            return -e.errno
        if node.is_dir:
            return -errno.EISDIR
    length = _s64(a[1])
    if length < 0:
        return -errno.EINVAL
    if node.mount is None and length > files.MAX_FILE:
        return -errno.EFBIG
    return _fsop(lambda: fs.truncate(node, length))


@sys(74, 75)
def sys_fsync(px: "Personality", p: "Process", a: list[int]) -> Any:
    f = p.fds.get(_i32(a[0]))
    if f is None:
        return -errno.EBADF
    return _fsop(lambda: fs.fsync(f.node))


@sys(162, 306)
def sys_sync(px: "Personality", p: "Process", a: list[int]) -> Any:
    """sync() and syncfs(fd): every mounted file system written through (syncfs too: one
    disk each, so the difference is not worth a lookup)."""
    if px.nr == 306 and p.fds.get(_i32(a[0])) is None:
        return -errno.EBADF
    return _fsop(px.fs.sync)


@sys(137, 138)
def sys_statfs(px: "Personality", p: "Process", a: list[int]) -> Any:
    """statfs(path, buf) / fstatfs(fd, buf): the numbers of the file system it is on."""
    if px.nr == 138:
        f = p.fds.get(_i32(a[0]))
        if f is None:
            return -errno.EBADF
        node: Any = f.stat_node()
    else:
        try:
            node = px.fs.walk(px.cstr(p, a[0]), p.cwd)
        except fs.FsError as e:
            return -e.errno
    if node is px.fs.root and px.fs.root_mount is not None:
        node = px.fs.root_mount.root          # '/' is the root file system's, not the RAM's
    return _fsop(lambda: px.write(p, a[1], fs.statfs_bytes(node)))


@sys(332)
def sys_statx(px: "Personality", p: "Process", a: list[int]) -> Any:
    """statx(dirfd, path, flags, mask, buf): every basic field, whatever the mask asked."""
    path, flags = px.cstr(p, a[1]), a[2]
    if not path and flags & AT_EMPTY_PATH:
        f = p.fds.get(_i32(a[0]))
        if f is None:
            return -errno.EBADF
        px.write(p, a[4], fs.statx_bytes(f.stat_node()))
        return 0
    start = _dirfd(p, a[0])
    if isinstance(start, int):
        return start
    return _fsop(lambda: px.write(p, a[4], fs.statx_bytes(
        _node(px, p, path, start, follow=not flags & AT_SYMLINK_NOFOLLOW))))


# -- file-backed mmap ----------------------------------------------------------------------

PROT_WRITE, MAP_TYPE, MAP_SHARED, MAP_SHARED_VALIDATE = 2, 0xF, 1, 3


@sys(9)
def sys_mmap(px: "Personality", p: "Process", a: list[int]) -> Any:
    """mmap of a descriptor (an anonymous one runs natively, never here). The host makes
    the mapping: the file's bytes go into a memfd of ours, the kernel installs it in the
    process at the descriptor number the program passed (LINUX_ADDFD), and the call is
    CONTINUEd — the host maps it, MAP_PRIVATE copy-on-write as Linux, SIGBUS past the end.
    A shared writable mapping would not reach the file: ENODEV (docs/L4LINUX.md)."""
    fd, prot, flags = _i32(a[4]), a[2], a[3]
    f = p.fds.get(fd)
    if f is None:
        return -errno.EBADF
    if f.kind == "zero":
        data = b""                  # /dev/zero: zeros (the memfd is extended below)
    elif f.kind != "file" or f.node is None:
        return -errno.ENODEV        # pipes, the terminal: as Linux
    else:
        data = bytes(f.node.data)
    if not f.readable():
        return -errno.EACCES
    if flags & MAP_TYPE in (MAP_SHARED, MAP_SHARED_VALIDATE) and prot & PROT_WRITE:
        return -errno.ENODEV
    memfd = os.memfd_create("l4linux-mmap", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(memfd, view):]
        if f.kind == "zero":
            os.ftruncate(memfd, min(a[1] + a[5], files.MAX_FILE))
        px.l4.linux_addfd(p.slot, memfd, fd)
    except (L4Error, OSError) as e:
        if isinstance(e, PeerDied):
            raise
        return -errno.ENOMEM
    finally:
        os.close(memfd)
    return CONTINUE


# -- sockets: netcalls.py (registered in the table when imported) ---------------------------
from . import netcalls  # noqa: E402,F401
