"""mount(2) and umount2(2): the personality's disk (rootdisk.Drive) in and out of the tree.

    mount("/dev/l4disk", TARGET, "ext2", flags, data)    busybox: mount -t ext2 /dev/l4disk /mnt
    umount2(TARGET, flags)                               busybox: umount /mnt

One file system type is mounted, ext2, from one device, /dev/l4disk (the block session of
the capability "block" the image's `[linux] rootdisk` gives; none: ENODEV). Checked first,
in Linux's order and with its errors — the type (ENODEV), the source (ENOENT, ENOTBLK, ENXIO
for another block device), the target (ENOENT, ENOTDIR), the disk mounted already (EBUSY)
— and only then mounted. MS_REMOUNT of the disk's mount point answers 0 (nothing to
change); MS_BIND and the propagation flags answer EINVAL. The mount point is a RAM
directory (fs.FileSystem.mount); the root file system is not unmounted (EBUSY, as Linux's
busy /). umount2 of a mount with an open file answers EBUSY; MNT_FORCE and MNT_DETACH are
accepted and do the same as 0 (nothing is detached lazily: the files are open).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import stat
from typing import TYPE_CHECKING, Any

from . import files, fs
from .syscalls import sys

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000
MS_PROPAGATION = 0x100000 | 0x20000 | 0x80000 | 0x40000     # UNBINDABLE PRIVATE SLAVE SHARED
MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW = 1, 2, 4, 8


def _check_source(px: "Personality", p: "Process", source: bytes) -> int:
    try:
        node = px.fs.walk(source, p.cwd)
    except fs.FsError as e:
        return -e.errno
    if not stat.S_ISBLK(node.mode):
        return -errno.ENOTBLK
    if node.rdev != files.DISK_NUMBER[0] << 8 | files.DISK_NUMBER[1]:
        return -errno.ENXIO
    return 0


@sys(165)
def sys_mount(px: "Personality", p: "Process", a: list[int]) -> Any:
    """mount(source, target, fstype, flags, data) (module docstring)."""
    target, flags = px.cstr(p, a[1]), a[3]
    try:
        point = px.fs.walk(target, p.cwd)
    except fs.FsError as e:
        return -e.errno
    drive = px.drive
    if flags & MS_REMOUNT:
        disk = drive.disk if drive is not None else None
        mounted = drive is not None and disk is not None and (
            point is disk.mount_.root or (drive.at == b"/" and point is px.fs.root))
        return 0 if mounted else -errno.EINVAL
    if flags & (MS_BIND | MS_PROPAGATION):
        return -errno.EINVAL
    fstype = px.cstr(p, a[2]) if a[2] else b""
    if fstype != b"ext2" or drive is None:
        return -errno.ENODEV
    err = _check_source(px, p, px.cstr(p, a[0]) if a[0] else b"")
    if err:
        return err
    if not point.is_dir:
        return -errno.ENOTDIR
    if drive.disk is not None:
        return -errno.EBUSY
    if point.mount is not None or point is px.fs.root:
        return -errno.EINVAL     # a directory of a mounted file system, or / (a RAM root)
    path = px.fs.path_of(point)
    try:
        drive.mount(px.fs, path, readonly=bool(flags & MS_RDONLY))
    except fs.FsError as e:
        return -e.errno
    return 0


@sys(166)
def sys_umount2(px: "Personality", p: "Process", a: list[int]) -> Any:
    """umount2(target, flags) (module docstring)."""
    flags = a[1]
    if flags & ~(MNT_FORCE | MNT_DETACH | MNT_EXPIRE | UMOUNT_NOFOLLOW) or \
            flags & MNT_EXPIRE and flags & (MNT_FORCE | MNT_DETACH):
        return -errno.EINVAL
    try:
        node = px.fs.walk(px.cstr(p, a[0]), p.cwd, follow=not flags & UMOUNT_NOFOLLOW)
    except fs.FsError as e:
        return -e.errno
    drive = px.drive
    if drive is None or drive.disk is None:
        return -errno.EINVAL
    if drive.at == b"/":
        return -errno.EBUSY if node is px.fs.root else -errno.EINVAL
    if node is not drive.disk.mount_.root:
        return -errno.EINVAL
    if flags & MNT_EXPIRE:
        return -errno.EAGAIN     # Linux's first MNT_EXPIRE only marks the mount
    try:
        drive.umount()
    except fs.FsError as e:
        return -e.errno
    return 0

