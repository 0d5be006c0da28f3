"""Open files and descriptor tables of Linux processes.

An `Open` is an open file description (Linux's `struct file`): what it reads and writes
(a RAM-file inode, a directory listing, a pipe end, the console, /dev/null or /dev/zero,
a socket: sockets.py, whose reads and writes are its recvmsg/sendmsg and which is closed
when the last reference goes),
its flags and offset, and a reference count — descriptors duplicated by dup or inherited by
fork share it, and a pipe end counts as closed only when its last reference goes.
An `FdTable` maps descriptor numbers to (Open, close-on-exec).

Contract: `read`/`write` answer bytes or a count, a negative errno, or `pipe.BLOCK`.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any

from . import fs
from .console import Console
from .pipe import BLOCK, Pipe
from .tty import Tty

O_ACCMODE, O_WRONLY, O_RDWR = 3, 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_NONBLOCK, O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC = 0o4000, 0o200000, 0o400000, 0o2000000
MAX_FDS = 1024
POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 1, 4, 8, 16, 32
MAX_FILE = fs.MAX_FILE             # bytes of one RAM file: beyond, writes answer EFBIG


class Open:
    def __init__(self, kind: str, flags: int, node: fs.Inode | None = None,
                 pipe: Pipe | None = None, console: Console | Tty | None = None,
                 sock: Any = None) -> None:
        self.kind = kind            # "file", "dir", "pipe_r", "pipe_w", "console", "null", "zero",
        self.sock = sock            # "socket" (a sockets.Socket)
        self.flags = flags
        self.node = node
        self.pipe = pipe
        self.console = console
        self.pos = 0
        self.refs = 0
        self.path = b""             # as opened, made absolute (/proc/PID/fd)
        if node is not None and kind in ("file", "dir"):
            node.hold()             # an unlinked file lives on while open (ext2fs.py)
        if pipe is not None:
            if kind == "pipe_r":
                pipe.readers += 1
            else:
                pipe.writers += 1

    def readable(self) -> bool:
        return self.flags & O_ACCMODE != O_WRONLY

    def writable(self) -> bool:
        return self.flags & O_ACCMODE in (O_WRONLY, O_RDWR)

    def read(self, n: int) -> Any:
        if not self.readable():
            return -errno.EBADF
        if self.kind == "file":
            assert self.node is not None
            data = bytes(self.node.data[self.pos:self.pos + n])
            self.pos += len(data)
            return data
        if self.kind == "dir":
            return -errno.EISDIR
        if self.kind == "pipe_r":
            assert self.pipe is not None
            got = self.pipe.read(n)
            if got is BLOCK and self.flags & O_NONBLOCK:
                return -errno.EAGAIN
            return got
        if self.kind == "zero":
            return b"\0" * n
        if self.kind == "socket":
            got = self.sock.recvmsg(n, 0)
            if got is BLOCK and self.flags & O_NONBLOCK:
                return -errno.EAGAIN
            return got if got is BLOCK or isinstance(got, int) else bytes(got[0][:n])
        if self.kind == "console":
            assert self.console is not None
            return self.console.read(n)
        return b""

    def write(self, data: bytes) -> Any:
        if not self.writable():
            return -errno.EBADF
        if self.kind == "file":
            node = self.node
            assert node is not None
            if self.flags & O_APPEND:
                self.pos = node.size()
            done = fs.write_at(node, self.pos, data)
            if done > 0:
                self.pos += done
            return done
        if self.kind == "pipe_w":
            assert self.pipe is not None
            done = self.pipe.write(data)
            if done is BLOCK and self.flags & O_NONBLOCK:
                return -errno.EAGAIN
            return done
        if self.kind == "console":
            assert self.console is not None
            return self.console.write(data)
        if self.kind == "socket":
            done = self.sock.sendmsg(data, None, 0)
            if done is BLOCK and self.flags & O_NONBLOCK:
                return -errno.EAGAIN
            return done
        return len(data)            # null, zero

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self.node is not None and self.kind in ("file", "dir"):
            self.node.drop()
        if self.refs == 0 and self.sock is not None:
            self.sock.close()
        if self.refs == 0 and self.pipe is not None:
            if self.kind == "pipe_r":
                self.pipe.readers -= 1
            else:
                self.pipe.writers -= 1

    def stat_node(self) -> fs.Inode:
        if self.node is not None:
            return self.node
        mode = (stat.S_IFIFO | 0o600) if self.pipe is not None else (
            stat.S_IFSOCK | 0o777) if self.sock is not None else (stat.S_IFCHR | 0o620)
        node = _STAND_INS.get(mode)
        if node is None:
            node = _STAND_INS[mode] = fs.Inode(mode)
            node.nlink = 1
        return node

    def poll(self, events: int) -> int:
        """The poll events this description has now (of `events`, and the ones always
        reported: POLLHUP, POLLERR)."""
        got = 0
        if self.kind == "pipe_r" and self.pipe is not None:
            got = POLLIN if self.pipe.buf else POLLHUP if self.pipe.writers == 0 else 0
        elif self.kind == "pipe_w" and self.pipe is not None:
            got = POLLOUT if self.pipe.readers else POLLHUP | POLLERR
        elif self.kind == "console" and self.console is not None:
            got = POLLOUT | (POLLIN if self.console.can_read() else 0)
        elif self.kind == "socket":
            got = self.sock.poll(events)
        else:
            got = POLLIN | POLLOUT
        return got & (events | POLLHUP | POLLERR)

    def tty(self) -> Tty | None:
        """The terminal this description is, if it is one (`l4run console`'s)."""
        return self.console if isinstance(self.console, Tty) else None


_STAND_INS: dict[int, fs.Inode] = {}


class FdTable:
    def __init__(self) -> None:
        self.fds: dict[int, tuple[Open, bool]] = {}

    def install(self, f: Open, cloexec: bool = False, lowest: int = 0,
                at: int | None = None) -> int:
        if at is None:
            at = lowest
            while at in self.fds:
                at += 1
        if at >= MAX_FDS:
            return -errno.EMFILE
        if at in self.fds:
            self.close(at)
        f.refs += 1
        self.fds[at] = (f, cloexec)
        return at

    def get(self, fd: int) -> Open | None:
        entry = self.fds.get(fd)
        return entry[0] if entry else None

    def close(self, fd: int) -> int:
        entry = self.fds.pop(fd, None)
        if entry is None:
            return -errno.EBADF
        entry[0].release()
        return 0

    def close_all(self) -> None:
        for fd in list(self.fds):
            self.close(fd)

    def fork(self) -> "FdTable":
        new = FdTable()
        for fd, (f, cloexec) in self.fds.items():
            f.refs += 1
            new.fds[fd] = (f, cloexec)
        return new

    def exec(self) -> None:
        for fd, (_, cloexec) in list(self.fds.items()):
            if cloexec:
                self.close(fd)

    def set_cloexec(self, fd: int, on: bool) -> None:
        f, _ = self.fds[fd]
        self.fds[fd] = (f, on)

    def cloexec(self, fd: int) -> bool:
        return self.fds[fd][1]


def open_node(node: fs.Inode, flags: int) -> Open:
    if node.is_dir:
        return Open("dir", flags, node)
    if flags & O_TRUNC and flags & O_ACCMODE != 0:
        node.data = bytearray()
        node.touch()
    return Open("file", flags, node)


DEVICES = {"null": "null", "zero": "zero", "full": "null", "tty": "console",
           "console": "console", "random": "zero", "urandom": "zero"}


# (major, minor) of each /dev node, as Linux numbers them
DEVICE_NUMBERS = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                  "urandom": (1, 9), "tty": (5, 0), "console": (5, 1)}


# /dev's links into /proc/self/fd, as udev makes them
DEVICE_LINKS = {"fd": b"/proc/self/fd", "stdin": b"/proc/self/fd/0",
                "stdout": b"/proc/self/fd/1", "stderr": b"/proc/self/fd/2"}


DISK_NUMBER = (254, 0)               # /dev/l4disk, a block device (virtio-blk's major)


def make_devices(fsys: fs.FileSystem, disk: bool = False) -> None:
    """The /dev nodes (character devices), so that stat and ttyname find them, and the
    links into /proc/self/fd (bash's process substitution opens /dev/fd/N). With `disk`,
    the block device /dev/l4disk that mount(2) names (rootdisk.py)."""
    dev = fsys.walk(b"/dev", fsys.root)
    if disk and "l4disk" not in dev.entries:
        node = fs.Inode(stat.S_IFBLK | 0o660)
        node.rdev = DISK_NUMBER[0] << 8 | DISK_NUMBER[1]
        fsys.link_into(dev, "l4disk", node)
    for name, (major, minor) in DEVICE_NUMBERS.items():
        if name not in dev.entries:
            node = fs.Inode(stat.S_IFCHR | (0o620 if name in ("tty", "console") else 0o666))
            node.rdev = major << 8 | minor
            fsys.link_into(dev, name, node)
    for name, target in DEVICE_LINKS.items():
        if name not in dev.entries:
            link = fs.Inode(stat.S_IFLNK | 0o777)
            link.target = target
            fsys.link_into(dev, name, link)


def reopen(f: Open, flags: int) -> Open | int:
    """Open again what descriptor description `f` is (an open of /proc/PID/fd/N): a new
    description with `flags` — of the same pipe (its read or write end, by the access
    mode), file, directory or device — as Linux's /proc magic links do."""
    if f.sock is not None:
        return -errno.ENXIO             # as Linux: a socket is not opened by name
    if f.pipe is not None:
        mode = flags & O_ACCMODE
        if mode == O_RDWR:
            return -errno.EINVAL        # (Linux opens a FIFO O_RDWR; a pipe end is one-way)
        new = Open("pipe_w" if mode == O_WRONLY else "pipe_r", flags, pipe=f.pipe)
    elif f.node is not None and f.kind in ("file", "dir"):
        if f.kind == "dir" and flags & O_ACCMODE:
            return -errno.EISDIR
        new = open_node(f.node, flags)
    else:
        new = Open(f.kind, flags, node=f.node, console=f.console)
    new.path = f.path
    return new


def device(name: str, flags: int, console: Console | Tty,
           node: fs.Inode | None = None) -> Open | None:
    kind = DEVICES.get(name)
    if kind is None:
        return None
    if name in ("random", "urandom"):
        f = Open("file", flags, fs.Inode(stat.S_IFCHR | 0o666))
        f.node.data = bytearray(os.urandom(4096))   # type: ignore[union-attr]
        return f
    f = Open(kind, flags, node=node, console=console if kind == "console" else None)
    f.path = b"/dev/" + name.encode()
    return f
