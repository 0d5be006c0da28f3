"""The personality's RAM file system: directories, files, symlinks, hard links, permissions.

Mechanism. Inodes live in memory (`Inode`); a directory maps names to inodes and knows its
parent (for ".." and getcwd). Paths are resolved as Linux does: from the root or a start
directory, component by component, following symlinks (at most `MAX_LINKS`), the last one
only when asked; "." and ".." are handled while walking. Errors are Linux errno values
(`FsError`), answered to the process as -errno by the system-call layer.

Permissions: every Linux process of this personality runs as root (uid 0), so mode bits
are kept and reported (stat, ls -l) but only "is it a directory / executable" is enforced.

Mounts: a RAM directory can be covered by an ext2 file system (`mount`, `umount`;
ext2fs.py): a walk that reaches it enters the mounted root, '..' there leads back to the
directory's parent, and every change whose directory is on the mounted file system is sent
to it (`node.mount` is None for RAM inodes). Links and renames across file systems answer
EXDEV; a covered directory cannot be removed or renamed (EBUSY). File bytes are written,
truncated and synced through `write_at`, `truncate` and `fsync`, which know both kinds.

Records the system calls return: `statfs_bytes` (struct statfs), `stat_bytes` (x86-64 struct stat, 144 bytes),
`statx_bytes` (struct statx, 256 bytes) and
`dirent64` (struct linux_dirent64).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import stat
import struct
import time
from collections.abc import Iterable
from typing import Any

from . import initramfs

MAX_LINKS = 40
_STAT = struct.Struct("<QQQIIIiQqqqQqQqQq24x")
_DIRENT = struct.Struct("<QqHB")


class FsError(Exception):
    def __init__(self, err: int, what: str = "") -> None:
        super().__init__(f"{errno.errorcode.get(err, err)}: {what}")
        self.errno = err


class Inode:
    _next = 1
    mount: Any = None                  # a RAM inode; an ext2 node (ext2fs.py) names its mount

    def __init__(self, mode: int, uid: int = 0, gid: int = 0, mtime: float | None = None) -> None:
        Inode._next += 1
        self.ino = Inode._next
        self.mode = mode
        self.uid, self.gid = uid, gid
        self.nlink = 0
        self.data = bytearray()
        self.entries: dict[str, Inode] = {}
        self.parent: Inode | None = None
        self.target = b""
        self.rdev = 0                  # a device node's (major << 8) | minor
        self.mounted: Any = None       # the ext2fs.Ext2Mount covering this directory
        self.mtime = self.ctime = self.atime = time.time() if mtime is None else mtime

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def size(self) -> int:
        if self.is_link:
            return len(self.target)
        if self.is_dir:
            return 4096
        return len(self.data)

    def touch(self) -> None:
        self.mtime = self.ctime = time.time()

    def hold(self) -> None:
        """An open description refers to it (a RAM inode lives while referenced anyway)."""

    def drop(self) -> None:
        """The last open description of it went."""


MAX_FILE = 64 << 20                # bytes of one RAM file: beyond, writes answer EFBIG


def write_at(node: Any, offset: int, data: bytes) -> int:
    """Write `data` into a file at `offset`: a RAM file's bytearray (the gap zero-filled) or
    a mounted file system's file (the gap a hole). Answers the bytes written or -errno."""
    if node.mount is not None:
        try:
            return int(node.write_at(offset, data))      # short on a full disk
        except FsError as e:
            return -e.errno
    end = offset + len(data)
    if end > MAX_FILE:
        return -errno.EFBIG
    if offset > len(node.data):
        node.data += b"\0" * (offset - len(node.data))
    node.data[offset:end] = data
    node.touch()
    return len(data)


def truncate(node: Any, length: int) -> None:
    if node.mount is not None:
        node.truncate(length)
    else:
        node.data = node.data[:length] + b"\0" * max(0, length - len(node.data))
    node.touch()


def fsync(node: Any) -> None:
    """Write a mounted file system's dirty blocks through (a RAM file has nothing to do)."""
    if node is not None and node.mount is not None:
        node.fsync()


def stat_bytes(node: Inode) -> bytes:
    """x86-64 struct stat."""
    size = node.size()

    def split(t: float) -> tuple[int, int]:
        return int(t), int((t % 1) * 1e9)
    a, m, c = split(node.atime), split(node.mtime), split(node.ctime)
    return _STAT.pack(0x4C34, node.ino, node.nlink, node.mode, node.uid, node.gid, 0, node.rdev,
                      size,
                      4096, (size + 511) // 512, a[0], a[1], m[0], m[1], c[0], c[1])


_STATX = struct.Struct("<IIQIIIHxxQQQQ" + "qIi" * 4 + "IIII" + "112x")
STATX_BASIC_STATS = 0x7FF


def statx_bytes(node: Inode) -> bytes:
    """x86-64 struct statx (256 bytes): the basic fields (no birth time)."""
    size = node.size()
    times = []
    for t in (node.atime, 0.0, node.ctime, node.mtime):      # atime, btime, ctime, mtime
        times += [int(t), int((t % 1) * 1e9), 0]
    return _STATX.pack(STATX_BASIC_STATS, 4096, 0, node.nlink, node.uid, node.gid, node.mode,
                       node.ino, size, (size + 511) // 512, 0, *times, node.rdev >> 8,
                       node.rdev & 0xFF, 0x4C, 0x34)


def dtype(node: Inode) -> int:
    return (node.mode >> 12) & 0xF


def dirent64(ino: int, off: int, typ: int, name: bytes) -> bytes:
    reclen = (_DIRENT.size + len(name) + 1 + 7) & ~7
    rec = _DIRENT.pack(ino, off, reclen, typ) + name + b"\0"
    return rec + b"\0" * (reclen - len(rec))


def covered(node: Any) -> Any:
    """What a walk sees at `node`: the root of the file system mounted on it, if any."""
    while node.mounted is not None:
        node = node.mounted.root
    return node


def _same_fs(a: Any, b: Any) -> None:
    if a.mount is not b.mount:
        raise FsError(errno.EXDEV, "across file systems")


class FileSystem:
    def __init__(self) -> None:
        self.root = Inode(stat.S_IFDIR | 0o755)
        self.root.parent = self.root
        self.root.nlink = 2
        self.mounts: list[Any] = []     # the ext2fs.Ext2Mount objects mounted, in order
        self.root_mount: Any = None     # the one mounted at / (`mount_root`), if any

    # -- building ---------------------------------------------------------------------
    def load(self, archive: bytes) -> int:
        """Unpack a newc archive into the tree; answers how many entries."""
        by_ino: dict[int, Inode] = {}
        n = 0
        for e in initramfs.read(archive):
            if e.name in (".", ""):
                continue
            parent, name = self.parent_of(e.name.encode(), self.root)
            if stat.S_ISREG(e.mode) and e.ino in by_ino and e.ino:
                node = by_ino[e.ino]
                if e.data:
                    node.data = bytearray(e.data)
                self.link_into(parent, name, node)
                n += 1
                continue
            if name in parent.entries:
                node = parent.entries[name]
                node.mode, node.uid, node.gid = e.mode, e.uid, e.gid
            else:
                node = Inode(e.mode, e.uid, e.gid, e.mtime or None)
                self.link_into(parent, name, node)
            if stat.S_ISREG(e.mode):
                node.data = bytearray(e.data)
                by_ino[e.ino] = node
            elif stat.S_ISLNK(e.mode):
                node.target = e.data
            n += 1
        return n

    # -- resolution -------------------------------------------------------------------------
    def walk(self, path: bytes, start: Inode, follow: bool = True, depth: int = 0) -> Inode:
        if not path:
            raise FsError(errno.ENOENT, "empty path")
        node = self.root if path.startswith(b"/") else start
        node = self._level(covered(node))
        parts = [p for p in path.split(b"/") if p]
        for i, part in enumerate(parts):
            if not node.is_dir:
                raise FsError(errno.ENOTDIR, part.decode(errors="replace"))
            if part == b".":
                continue
            if part == b"..":
                node = self._level(covered(node.parent or self.root))
                continue
            child = self._child(node, part.decode(errors="surrogateescape"))
            if child is None:
                raise FsError(errno.ENOENT, part.decode(errors="replace"))
            last = i == len(parts) - 1
            if child.is_link and (follow or not last):
                if depth >= MAX_LINKS:
                    raise FsError(errno.ELOOP, part.decode(errors="replace"))
                child = self.walk(child.target, node, True, depth + 1)
            node = self._level(covered(child))
        if path.endswith(b"/") and not node.is_dir:
            raise FsError(errno.ENOTDIR, path.decode(errors="replace"))
        return node

    def parent_of(self, path: bytes, start: Inode) -> tuple[Inode, str]:
        """The directory a new name would go in, and the name."""
        stripped = path.rstrip(b"/")
        if not stripped:
            raise FsError(errno.EEXIST if path else errno.ENOENT, "/")
        head, _, name = stripped.rpartition(b"/")
        if not head and stripped.startswith(b"/"):
            parent = self.root
        elif not head:
            parent = start
        else:
            parent = self.walk(head if head else b"/", start)
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR, head.decode(errors="replace"))
        if name in (b".", b".."):
            raise FsError(errno.EEXIST, name.decode())
        if len(name) > 255:
            raise FsError(errno.ENAMETOOLONG, "name")
        text = name.decode(errors="surrogateescape")
        if parent is self.root and self.root_mount is not None and text not in parent.entries:
            parent = self.root_mount.root           # a new top-level name goes to the disk
        return parent, text

    def path_of(self, node: Inode) -> bytes:
        parts: list[str] = []
        seen = 0
        top = self.root_mount.root if self.root_mount is not None else self.root
        while node is not self.root and node is not top and seen < 4096:
            parent = node.parent or self.root
            name = next((n for n, c in parent.entries.items()
                         if c is node or (c.mounted is not None and c.mounted.root is node)),
                        "?")
            parts.append(name)
            node = parent
            seen += 1
        return ("/" + "/".join(reversed(parts))).encode(errors="surrogateescape")

    # -- changes -----------------------------------------------------------------------------
    def link_into(self, parent: Inode, name: str, node: Inode) -> None:
        parent.entries[name] = node
        node.nlink += 1
        if node.is_dir:
            node.parent = parent
            node.nlink += 1            # its "."
            parent.nlink += 1          # its ".."
        parent.touch()

    def create(self, path: bytes, start: Inode, mode: int, exclusive: bool) -> Inode:
        parent, name = self.parent_of(path, start)
        old = parent.entries.get(name)
        if old is not None:
            if exclusive:
                raise FsError(errno.EEXIST, name)
            if old.is_link:
                return self.walk(path, start)
            return old
        if parent.mount is not None:
            return parent.mount.create(parent, name, mode)   # type: ignore[no-any-return]
        node = Inode(stat.S_IFREG | (mode & 0o7777))
        self.link_into(parent, name, node)
        return node

    def mkdir(self, path: bytes, start: Inode, mode: int) -> Inode:
        parent, name = self.parent_of(path, start)
        if name in parent.entries:
            raise FsError(errno.EEXIST, name)
        if parent.mount is not None:
            return parent.mount.mkdir(parent, name, mode)    # type: ignore[no-any-return]
        node = Inode(stat.S_IFDIR | (mode & 0o7777))
        self.link_into(parent, name, node)
        return node

    def symlink(self, target: bytes, path: bytes, start: Inode) -> None:
        parent, name = self.parent_of(path, start)
        if name in parent.entries:
            raise FsError(errno.EEXIST, name)
        if parent.mount is not None:
            return parent.mount.symlink(parent, name, target)  # type: ignore[no-any-return]
        node = Inode(stat.S_IFLNK | 0o777)
        node.target = target
        self.link_into(parent, name, node)

    def link(self, old: Inode, path: bytes, start: Inode) -> None:
        if old.is_dir:
            raise FsError(errno.EPERM, "hard link to a directory")
        parent, name = self.parent_of(path, start)
        if name in parent.entries:
            raise FsError(errno.EEXIST, name)
        _same_fs(old, parent)
        if parent.mount is not None:
            return parent.mount.link(old, parent, name)      # type: ignore[no-any-return]
        self.link_into(parent, name, old)

    def unlink(self, path: bytes, start: Inode, rmdir: bool) -> None:
        parent, name = self.parent_of(path, start)
        node = parent.entries.get(name)
        if node is None:
            raise FsError(errno.ENOENT, name)
        if node.mounted is not None:
            raise FsError(errno.EBUSY, f"{name}: a file system is mounted there")
        if parent.mount is not None:
            return parent.mount.unlink(parent, name, rmdir)  # type: ignore[no-any-return]
        if rmdir:
            if not node.is_dir:
                raise FsError(errno.ENOTDIR, name)
            if node.entries:
                raise FsError(errno.ENOTEMPTY, name)
            parent.nlink -= 1
        elif node.is_dir:
            raise FsError(errno.EISDIR, name)
        del parent.entries[name]
        node.nlink -= 2 if node.is_dir else 1
        parent.touch()

    def rename(self, old: bytes, new: bytes, start: Inode) -> None:
        op, oname = self.parent_of(old, start)
        node = op.entries.get(oname)
        if node is None:
            raise FsError(errno.ENOENT, oname)
        np_, nname = self.parent_of(new, start)
        _same_fs(op, np_)
        if node.mounted is not None:
            raise FsError(errno.EBUSY, f"{oname}: a file system is mounted there")
        if op.mount is not None:
            return op.mount.rename(op, oname, np_, nname)    # type: ignore[no-any-return]
        target = np_.entries.get(nname)
        if target is node:
            return
        if node.is_dir:                    # not into itself or below (POSIX: EINVAL)
            up, hops = np_, 0
            while up is not self.root and hops < 4096:
                if up is node:
                    raise FsError(errno.EINVAL, f"{oname}: into its own subtree")
                up, hops = up.parent or self.root, hops + 1
            if up is node:
                raise FsError(errno.EINVAL, f"{oname}: into its own subtree")
        if target is not None:
            if node.is_dir and not target.is_dir:
                raise FsError(errno.ENOTDIR, nname)
            if target.is_dir and (not node.is_dir or target.entries):
                raise FsError(errno.EISDIR if not node.is_dir else errno.ENOTEMPTY, nname)
            self.unlink(new, start, target.is_dir)
        del op.entries[oname]
        node.nlink -= 1
        if node.is_dir:
            op.nlink -= 1
            node.nlink -= 1
        self.link_into(np_, nname, node)

    def listing(self, node: Inode) -> Iterable[tuple[int, int, bytes]]:
        """(ino, d_type, name) of a directory, "." and ".." first."""
        if node.mount is not None:
            yield from node.mount.listing(node)
            return
        if node is self.root and self.root_mount is not None:
            yield from self._root_listing()
            return
        yield node.ino, 4, b"."
        yield (node.parent or self.root).ino, 4, b".."
        for name, child in list(node.entries.items()):
            yield child.ino, dtype(child), name.encode(errors="surrogateescape")

    # -- mounts ------------------------------------------------------------------------------
    def mount(self, path: bytes, fs_mount: Any) -> None:
        """Cover the RAM directory `path` with `fs_mount` (an ext2fs.Ext2Mount): walks then
        enter its root there, '..' at its root leads back to the directory's parent."""
        point = self.walk(path, self.root)
        if not point.is_dir:
            raise FsError(errno.ENOTDIR, path.decode(errors="replace"))
        if point.mount is not None or point is self.root:
            raise FsError(errno.EINVAL, "mount points are RAM directories other than /")
        point.mounted = fs_mount
        fs_mount.point = point
        self.mounts.append(fs_mount)

    def umount(self, path: bytes) -> None:
        """Uncover `path`: the mounted file system is synced and unmounted (EBUSY while a
        file of it is open)."""
        root = self.walk(path, self.root)
        m = root.mount
        if m is None or m.root is not root or m.point is None:
            raise FsError(errno.EINVAL, f"{path.decode(errors='replace')}: not a mount point")
        m.unmount()
        self.mounts.remove(m)

    def mount_root(self, fs_mount: Any, virtual: tuple[str, ...] = ("dev", "proc")) -> None:
        """Make `fs_mount` the root file system. The RAM root stays the top of the tree for
        the `virtual` directories only (/dev, /proc: made here if absent, built in RAM by
        make_devices and procfs as before); every other name at / is the disk's: lookups
        fall through to its root, new names are made there, and its root *is* '/' (walks
        and path_of never show it as a directory of its own)."""
        if self.root_mount is not None:
            raise FsError(errno.EBUSY, "a root file system is mounted already")
        for name in virtual:
            if name not in self.root.entries:
                self.link_into(self.root, name, Inode(stat.S_IFDIR | 0o755))
        fs_mount.point = self.root
        self.root_mount = fs_mount
        self.mounts.append(fs_mount)

    def _child(self, node: Any, name: str) -> Any:
        child = node.entries.get(name)
        if child is None and node is self.root and self.root_mount is not None:
            child = self.root_mount.root.entries.get(name)
        return child

    def _level(self, node: Any) -> Any:
        """The root of the root file system is '/' itself (the RAM root in front of it)."""
        if self.root_mount is not None and node is self.root_mount.root:
            return self.root
        return node

    def _root_listing(self) -> Iterable[tuple[int, int, bytes]]:
        yield self.root.ino, 4, b"."
        yield self.root.ino, 4, b".."
        for name, child in list(self.root.entries.items()):
            yield child.ino, dtype(child), name.encode(errors="surrogateescape")
        for ino, typ, name in self.root_mount.listing(self.root_mount.root):
            if name not in (b".", b"..") and \
                    name.decode(errors="surrogateescape") not in self.root.entries:
                yield ino, typ, name

    def sync(self) -> None:
        """sync(2): every mounted file system's dirty blocks to its disk."""
        for m in self.mounts:
            m.sync()


_STATFS = struct.Struct("<qqQQQQQiiqqq32x")
TMPFS_MAGIC, EXT2_SUPER_MAGIC = 0x01021994, 0xEF53


def statfs_bytes(node: Any) -> bytes:
    """x86-64 struct statfs (120 bytes) of the file system `node` is on: an ext2 mount's
    superblock numbers, or the RAM tree's (a tmpfs: no limit worth reporting but 64 MiB)."""
    if node.mount is not None:
        s = node.mount.statfs()
        return _STATFS.pack(EXT2_SUPER_MAGIC, s.bsize, s.blocks, s.bfree, s.bavail, s.files,
                            s.ffree, 0x4C, 0x35, s.namelen, s.bsize, 0)
    blocks = MAX_FILE // 4096
    return _STATFS.pack(TMPFS_MAGIC, 4096, blocks, blocks, blocks, 65536, 65536, 0x4C, 0x34,
                        255, 4096, 0)
