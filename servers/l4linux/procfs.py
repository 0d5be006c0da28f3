"""/proc, as far as busybox `ps` needs it: made fresh from the process table.

A process inside a hybrid L4 call is in state D (UNINTERRUPTIBLE, `Process.l4call`).

`refresh(px, caller)` replaces the /proc directory of the RAM file system with a new one
before a path-taking system call: /proc/PID/{stat,status,cmdline,comm,exe,fd/N} for every Linux
process, /proc/self (a symlink to the caller's pid), /proc/meminfo, /proc/uptime,
/proc/stat, /proc/loadavg, /proc/mounts, /proc/version (busybox `ps`, `top`). Files are
read-only snapshots; a descriptor opened on one keeps the snapshot it opened (as reading a
/proc file at once would).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING

from . import fs

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

BOOT = time.time()
_STATE = {"running": "S", "loading": "R", "zombie": "Z"}


def _state(p: "Process") -> str:
    """The state letter: D (UNINTERRUPTIBLE) while inside a hybrid L4 call (hybrid.py)."""
    return "D" if p.l4call and p.state != "zombie" else _STATE.get(p.state, "S")


def _file(parent: fs.Inode, px: "Personality", name: str, data: bytes) -> None:
    node = fs.Inode(stat.S_IFREG | 0o444)
    node.data = bytearray(data)
    px.fs.link_into(parent, name, node)


def _stat_line(p: "Process") -> bytes:
    start = int((p.started - BOOT) * 100)
    fields = [p.pid, f"({p.comm})", _state(p), p.ppid, p.pgid, p.sid, 0, -1,
              0x400000, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0, start, 0, 0]
    return (" ".join(str(f) for f in fields) + "\n").encode()


def _status(p: "Process") -> bytes:
    return (f"Name:\t{p.comm}\nState:\t{_state(p)}\nTgid:\t{p.pid}\n"
            f"Pid:\t{p.pid}\nPPid:\t{p.ppid}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
            f"Threads:\t{p.threads}\n").encode()


def _fd_dir(px: "Personality", parent: fs.Inode, p: "Process") -> None:
    """PID/fd: a symlink per descriptor, to the file's path or Linux's `pipe:[N]`."""
    d = fs.Inode(stat.S_IFDIR | 0o500)
    px.fs.link_into(parent, "fd", d)
    for fd, (f, _) in sorted(p.fds.fds.items()):
        link = fs.Inode(stat.S_IFLNK | 0o700)
        link.target = (f.path if f.path
                       else f"pipe:[{id(f.pipe) & 0xFFFFFF}]".encode() if f.pipe is not None
                       else b"/dev/console" if f.kind == "console" else b"/dev/null")
        px.fs.link_into(d, str(fd), link)


def mounts(px: "Personality") -> bytes:
    """/proc/mounts: the RAM tree (or the disk at /), /dev and /proc, the disk elsewhere."""
    drive = px.drive
    at = drive.at if drive is not None else None
    ro = "ro" if drive is not None and drive.disk is not None and \
        drive.disk.mount_.fs.readonly else "rw"
    dev = "/dev/l4disk"
    lines = [f"{dev} / ext2 {ro} 0 0" if at == b"/" else "rootfs / rootfs rw 0 0",
             "devtmpfs /dev devtmpfs rw 0 0", "proc /proc proc rw 0 0"]
    if at is not None and at != b"/":
        lines.append(f"{dev} {at.decode(errors='replace')} ext2 {ro} 0 0")
    return ("\n".join(lines) + "\n").encode()


def refresh(px: "Personality", caller: "Process") -> None:
    root = px.fs.root
    old = root.entries.get("proc")
    if old is not None:
        del root.entries["proc"]
        root.nlink -= 1
    proc = fs.Inode(stat.S_IFDIR | 0o555)
    px.fs.link_into(root, "proc", proc)
    for p in list(px.procs.by_pid.values()):
        d = fs.Inode(stat.S_IFDIR | 0o555)
        px.fs.link_into(proc, str(p.pid), d)
        _file(d, px, "stat", _stat_line(p))
        _file(d, px, "status", _status(p))
        _file(d, px, "cmdline", b"".join(a + b"\0" for a in p.argv))
        _file(d, px, "comm", p.comm.encode() + b"\n")
        _fd_dir(px, d, p)
        if p.exe:
            exe = fs.Inode(stat.S_IFLNK | 0o777)
            exe.target = p.exe
            px.fs.link_into(d, "exe", exe)
    self_link = fs.Inode(stat.S_IFLNK | 0o777)
    self_link.target = str(caller.pid).encode()
    px.fs.link_into(proc, "self", self_link)
    up = time.time() - BOOT
    _file(proc, px, "uptime", f"{up:.2f} {up:.2f}\n".encode())
    _file(proc, px, "meminfo", b"MemTotal:       65536 kB\nMemFree:        32768 kB\n"
                               b"MemAvailable:   32768 kB\nBuffers:            0 kB\n"
                               b"Cached:             0 kB\nSwapTotal:          0 kB\n"
                               b"SwapFree:           0 kB\n")
    ticks = int(up * 100)
    blocked = sum(1 for p in px.procs.by_pid.values() if _state(p) == "D")
    _file(proc, px, "stat", f"cpu  {ticks // 2} 0 {ticks // 4} {ticks} 0 0 0 0 0 0\n"
                            f"cpu0 {ticks // 2} 0 {ticks // 4} {ticks} 0 0 0 0 0 0\n"
                            f"btime {int(BOOT)}\nprocesses {len(px.procs.by_pid)}\n"
                            f"procs_running 1\nprocs_blocked {blocked}\n".encode())
    _file(proc, px, "loadavg", f"0.00 0.00 0.00 1/{len(px.procs.by_pid)} 0\n".encode())
    _file(proc, px, "mounts", mounts(px))
    _file(proc, px, "filesystems", b"nodev\ttmpfs\nnodev\tproc\n\text2\n")
    _file(proc, px, "version", b"Linux version 6.1.0-l4py (L4Py personality)\n")
