"""An ext2 file system mounted in the personality's tree: nodes that look like fs.Inode.

Mechanism. `Ext2Mount` wraps one mounted `servers.ext2.Ext2` (over the block server's
client, or an image file in tests) and hands out one `Ext2Node` per inode number (cached,
so `is` compares nodes as it does for RAM inodes). An `Ext2Node` has the surface the
system-call code uses on `fs.Inode` — ino, mode, uid, gid, nlink, rdev, the three times
(reading and setting), is_dir / is_link, size(), touch(), target, parent, entries (a read
view: get, in, items, len) and data (a `FileData` view: slices read and written, len,
+= appends, assignment truncates and writes) — each answered by the engine from the
buffer cache, so nothing is copied into the personality's memory.

Changes of the tree go through `fs.FileSystem`, which sends every operation whose directory
is an Ext2Node to its mount here (create, mkdir, symlink, link, unlink, rename, listing).
Open descriptions `hold` and `drop` their node: an unlinked file stays readable while open.
Errors of the engine are answered as fs.FsError with the same errno.

Ownership: the personality's single serving thread (the engine is not thread-safe).
"""
from __future__ import annotations

import errno
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from servers.ext2 import ROOT_INO, Ext2
from servers.ext2 import FsError as Ext2Error

from .fs import FsError


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except Ext2Error as e:
        raise FsError(e.errno or errno.EIO, e.strerror or str(e)) from None


class Ext2Mount:
    def __init__(self, engine: Ext2, point: Any = None) -> None:
        self.fs = engine
        self.point = point                  # the RAM directory it covers (None: not yet)
        self.nodes: dict[int, Ext2Node] = {}
        self.root = self.node(ROOT_INO)

    def node(self, ino: int) -> "Ext2Node":
        n = self.nodes.get(ino)
        if n is None:
            n = self.nodes[ino] = Ext2Node(self, ino)
        return n

    # -- the FileSystem operations, by directory node and name ---------------------------
    def lookup(self, d: "Ext2Node", name: str) -> "Ext2Node | None":
        with _errors():
            try:
                return self.node(self.fs.lookup(d.ino, name))
            except Ext2Error as e:
                if e.errno == errno.ENOENT:
                    return None
                raise

    def create(self, d: "Ext2Node", name: str, mode: int) -> "Ext2Node":
        with _errors():
            return self.node(self.fs.create(d.ino, name, stat.S_IFREG | (mode & 0o7777)))

    def mkdir(self, d: "Ext2Node", name: str, mode: int) -> "Ext2Node":
        with _errors():
            return self.node(self.fs.mkdir(d.ino, name, mode & 0o7777))

    def symlink(self, d: "Ext2Node", name: str, target: bytes) -> None:
        with _errors():
            self.fs.symlink(d.ino, name, target)

    def link(self, node: "Ext2Node", d: "Ext2Node", name: str) -> None:
        with _errors():
            self.fs.link(node.ino, d.ino, name)

    def unlink(self, d: "Ext2Node", name: str, rmdir: bool) -> None:
        with _errors():
            ino = self.fs.lookup(d.ino, name)
            (self.fs.rmdir if rmdir else self.fs.unlink)(d.ino, name)
            self._forget_if_gone(ino)

    def rename(self, od: "Ext2Node", oname: str, nd: "Ext2Node", nname: str) -> None:
        with _errors():
            old = self.fs.dirs.lookup(self.fs.inode(nd.ino), nname.encode(errors="surrogateescape"))
            self.fs.rename(od.ino, oname, nd.ino, nname)
            if old:
                self._forget_if_gone(old)

    def listing(self, d: "Ext2Node") -> Iterator[tuple[int, int, bytes]]:
        """(ino, d_type, name) of a directory, '.' and '..' first (as fs.listing)."""
        yield d.ino, 4, b"."
        parent = d.parent
        yield (parent.ino if parent is not None else d.ino), 4, b".."
        with _errors():
            for name, ino in self.fs.listdir(d.ino):
                yield ino, (self.fs.stat(ino).mode >> 12) & 0xF, \
                    name.encode(errors="surrogateescape")

    def _forget_if_gone(self, ino: int) -> None:
        """Drop the cached node of an inode the engine freed (a held one stays)."""
        n = self.nodes.get(ino)
        if n is None or n.holds:
            return
        try:
            self.fs.stat(ino)
        except Ext2Error:
            self.nodes.pop(ino, None)

    # -- the volume ------------------------------------------------------------------------
    def statfs(self) -> Any:
        return self.fs.statfs()

    def sync(self) -> None:
        with _errors():
            self.fs.sync()

    def unmount(self, force: bool = False) -> None:
        """Write everything and mark the disk clean. EBUSY while a file of it is open,
        unless `force` (the personality's shutdown: its processes are gone)."""
        if not force and any(n.holds for n in self.nodes.values()):
            raise FsError(errno.EBUSY, "files of this file system are open")
        with _errors():
            self.fs.unmount()
        if self.point is not None:
            self.point.mounted = None
        self.nodes.clear()


class FileData:
    """A file's bytes as the RAM inode's bytearray is used: slices, len, +=, bytes()."""

    def __init__(self, node: "Ext2Node") -> None:
        self.node = node

    def __len__(self) -> int:
        return self.node.size()

    def __getitem__(self, s: slice) -> bytes:
        start, stop, step = s.indices(len(self))
        if step != 1:
            raise ValueError("file data is read in contiguous slices")
        with _errors():
            return self.node.mount.fs.read(self.node.ino, start, max(0, stop - start))

    def __setitem__(self, s: slice, data: bytes) -> None:
        start = s.start or 0
        if s.stop is not None and s.stop - start != len(data):
            raise ValueError("file data is written over a slice of its own length")
        self.node.write_all(start, bytes(data))

    def __iadd__(self, data: bytes) -> "FileData":
        self.node.write_all(len(self), bytes(data))
        return self

    def __bytes__(self) -> bytes:
        return self[0:len(self)]


class Ext2Node:
    """One inode of a mounted ext2 (module docstring); compare with `is`."""

    def __init__(self, mount: Ext2Mount, ino: int) -> None:
        self.mount = mount
        self.ino = ino
        self.holds = 0
        self.mounted: Any = None            # nothing mounts on an ext2 directory (yet)

    def _st(self) -> Any:
        with _errors():
            return self.mount.fs.stat(self.ino)

    def _set(self, **kw: Any) -> None:
        with _errors():
            self.mount.fs.setattr(self.ino, **kw)

    mode = property(lambda self: self._st().mode,
                    lambda self, v: self._set(mode=v & 0o7777))
    uid = property(lambda self: self._st().uid, lambda self, v: self._set(uid=v))
    gid = property(lambda self: self._st().gid, lambda self, v: self._set(gid=v))
    nlink = property(lambda self: self._st().nlink)
    rdev = property(lambda self: self._st().rdev)
    atime = property(lambda self: float(self._st().atime),
                     lambda self, v: self._set(atime=int(v)))
    mtime = property(lambda self: float(self._st().mtime),
                     lambda self, v: self._set(mtime=int(v)))
    ctime = property(lambda self: float(self._st().ctime),
                     lambda self, v: None)     # ctime is the engine's: set on every change

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def size(self) -> int:
        return int(self._st().size)

    def touch(self) -> None:
        """The engine stamps mtime/ctime itself on every change: nothing more to do."""

    @property
    def target(self) -> bytes:
        with _errors():
            return self.mount.fs.readlink(self.ino)

    @property
    def parent(self) -> Any:
        """'..': the covering directory's parent at the mount's root."""
        if self.ino == ROOT_INO:
            point = self.mount.point
            return point.parent if point is not None else None
        if not self.is_dir:
            return None                     # a file's names are its links (as fs.Inode's)
        with _errors():
            return self.mount.node(self.mount.fs.lookup(self.ino, ".."))

    @property
    def entries(self) -> "Entries":
        return Entries(self)

    @property
    def data(self) -> FileData:
        return FileData(self)

    @data.setter
    def data(self, value: Any) -> None:
        """`node.data = b"..."`: the file becomes exactly those bytes (O_TRUNC, truncate)."""
        value = bytes(value)
        with _errors():
            self.mount.fs.truncate(self.ino, 0)
        if value:
            self.write_all(0, value)

    def write_at(self, offset: int, data: bytes) -> int:
        """Answers the bytes written: fewer than asked when the disk filled up on the way
        (a short write, as Linux's); none at all raises FsError(ENOSPC)."""
        with _errors():
            return self.mount.fs.write(self.ino, offset, data)

    def write_all(self, offset: int, data: bytes) -> None:
        n = self.write_at(offset, data)
        if n < len(data):
            raise FsError(errno.ENOSPC, f"short write: {n} of {len(data)} bytes")

    def truncate(self, length: int) -> None:
        with _errors():
            self.mount.fs.truncate(self.ino, length)

    def fsync(self) -> None:
        with _errors():
            self.mount.fs.fsync(self.ino)

    # -- open references (files.Open) ------------------------------------------------------
    def hold(self) -> None:
        with _errors():
            self.mount.fs.open(self.ino)
        self.holds += 1

    def drop(self) -> None:
        self.holds -= 1
        if not self.mount.fs.mounted:
            return                          # unmounted by force under an open description
        with _errors():
            self.mount.fs.close(self.ino)
        if not self.holds:
            self.mount._forget_if_gone(self.ino)


class Entries:
    """A directory's names as the RAM inode's dict is read: get, in, [], items, len."""

    def __init__(self, d: Ext2Node) -> None:
        self.d = d

    def get(self, name: str, default: Any = None) -> Any:
        n = self.d.mount.lookup(self.d, name)
        return default if n is None else n

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> Ext2Node:
        n = self.get(name)
        if n is None:
            raise KeyError(name)
        return n

    def items(self) -> list[tuple[str, Ext2Node]]:
        with _errors():
            return [(name, self.d.mount.node(ino)) for name, ino in
                    self.d.mount.fs.listdir(self.d.ino)]

    def __len__(self) -> int:
        with _errors():
            return len(self.d.mount.fs.listdir(self.d.ino))

    def __bool__(self) -> bool:
        return len(self) > 0
