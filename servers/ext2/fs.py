"""The ext2 file system: operations by inode number and name, the way VFS calls them.

    fs = Ext2(ImageDevice("disk.img"))           # mount (refuses what layout rejects)
    ino = fs.create(ROOT_INO, "f", 0o644); fs.write(ino, 0, b"hi"); fs.read(ino, 0, 2)
    fs.mkdir / symlink / link / unlink / rmdir / rename / truncate / setattr / stat
    fs.resolve("/a/b") -> ino; fs.listdir(ino); fs.statfs(); fs.sync(); fs.unmount()

Mechanism. Names are bytes on disk; this API takes str (UTF-8, surrogateescape both ways).
Each operation checks everything first (names, types, emptiness, loops) and only then
changes the volume, so a refused call changes nothing; the one failure left after the
checks is running out of space, undone where it can strike (a new inode whose entry cannot
be added is freed again). Link counts follow ext2: a directory has 2 + its subdirectories,
'..' counts in the parent. Timestamps: ctime/mtime on change; atime is not updated on read
(noatime), which ext2 allows and which keeps reads from dirtying inode blocks.

Open files: `open(ino)` / `close(ino)` count references. Unlinking the last name of an open
inode keeps it (links 0, still allocated) until the last close; `unmount` frees such
orphans. A crash with orphans leaves inodes e2fsck reclaims (no journal, no orphan list).

`readonly=True` (a read-only device, or `mount -o ro`): nothing is ever written, the
superblock not even marked mounted; every changing call fails with EROFS first.

Durability: nothing is on the device until `sync`, `fsync` (which syncs the whole
volume: simple, and what an ext2 without a journal can promise anyway) or `unmount`.

Ownership: one thread; callers serialise (the personality has one serving thread).
"""
from __future__ import annotations

import errno
import stat as st
import time

from .api import Stat, StatFs, _b, _mutates, _s
from .blockmap import FileMap
from .device import Device
from .dirs import Directories, check_name
from .layout import (FAST_LINK_MAX, FILETYPE, LARGE_FILE, ROOT_INO, FsError, Inode,
                     ftype_of)
from .rename import rename_entry
from .volume import Volume

MAX_SYMLINKS = 40


class Ext2:
    def __init__(self, dev: Device, cache_blocks: int = 8192, readonly: bool = False) -> None:
        self.vol = Volume(dev, cache_blocks)
        self.readonly = readonly
        self.fm = FileMap(self.vol)
        sb = self.vol.sb
        self.dirs = Directories(self.fm, bool(sb.get("feature_incompat") & FILETYPE))
        self.large_file = bool(sb.get("feature_ro_compat") & LARGE_FILE)
        self.opens: dict[int, int] = {}          # ino -> open references
        self.orphans: set[int] = set()           # links 0, kept while open
        self.mounted = True
        if not readonly:
            self.vol.mark_mounted()

    # -- inodes ------------------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        ind = self.vol.read_inode(ino)
        if ind.links == 0 and ino not in self.orphans and ino != ROOT_INO:
            raise FsError(errno.ENOENT, f"inode {ino} is not in use")
        return ind

    def _save(self, ind: Inode) -> None:
        self.vol.write_inode(ind)

    def _dir(self, ino: int) -> Inode:
        d = self.inode(ino)
        if not st.S_ISDIR(d.mode):
            raise FsError(errno.ENOTDIR, f"inode {ino} is not a directory")
        return d

    def stat(self, ino: int) -> Stat:
        i = self.inode(ino)
        rdev = i.block[0] if st.S_ISCHR(i.mode) or st.S_ISBLK(i.mode) else 0
        return Stat(ino, i.mode, i.links, i.uid, i.gid, i.size, i.atime, i.mtime, i.ctime,
                    i.sectors, rdev)

    # -- names -------------------------------------------------------------------------
    def lookup(self, dir_ino: int, name: str | bytes) -> int:
        """The inode `name` names in the directory; FsError(ENOENT) if none."""
        ino = self.dirs.lookup(self._dir(dir_ino), _b(name))
        if not ino:
            raise FsError(errno.ENOENT, f"{_s(_b(name))!r} not found")
        return ino

    def listdir(self, ino: int) -> list[tuple[str, int]]:
        """(name, inode) of every entry but '.' and '..', in directory order."""
        return [(_s(e.name), e.ino) for _, e in self.dirs.entries(self._dir(ino))
                if e.name not in (b".", b"..")]

    def resolve(self, path: str, follow: bool = True, cwd: int = ROOT_INO) -> int:
        """The inode of `path` (absolute, or relative to `cwd`), following symlinks (the
        last one only when `follow`); ELOOP after MAX_SYMLINKS."""
        return self._walk(path, follow, cwd, [0])

    def _walk(self, path: str, follow: bool, cwd: int, hops: list[int]) -> int:
        cur = ROOT_INO if path.startswith("/") else cwd
        parts = [p for p in path.split("/") if p and p != "."]
        for k, part in enumerate(parts):
            nxt = self.lookup(cur, part)
            ind = self.inode(nxt)
            if st.S_ISLNK(ind.mode) and (follow or k < len(parts) - 1):
                hops[0] += 1
                if hops[0] > MAX_SYMLINKS:
                    raise FsError(errno.ELOOP, f"too many symlinks in {path!r}")
                nxt = self._walk(_s(self.readlink(nxt)), True, cur, hops)
            cur = nxt
        return cur

    def resolve_parent(self, path: str, cwd: int = ROOT_INO) -> tuple[int, str]:
        """(directory inode, last name) of `path`, for create/unlink-like calls."""
        head, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise FsError(errno.EINVAL, f"{path!r} names no entry")
        base = (head or "/") if path.startswith("/") else (head or ".")
        return self.resolve(base, True, cwd), name

    # -- creating ----------------------------------------------------------------------
    def _new_inode(self, parent: int, mode: int, uid: int, gid: int) -> Inode:
        ino = self.vol.alloc_inode(st.S_ISDIR(mode), parent)
        ind = Inode.fresh(ino, self.vol.inode_size)
        now = int(time.time())
        ind.mode, ind.uid, ind.gid, ind.links = mode, uid, gid, 1
        ind.atime = ind.ctime = ind.mtime = now
        return ind

    def _add(self, d: Inode, name: bytes, ind: Inode) -> None:
        """Enter a new inode in `d`; on ENOSPC the inode (and its blocks) is freed again."""
        try:
            self.dirs.add(d, name, ind.ino, ftype_of(ind.mode))
        except FsError:
            self.fm.truncate(ind, 0)
            self.vol.free_inode(ind.ino, st.S_ISDIR(ind.mode))
            self._save(d)
            raise
        d.mtime = d.ctime = int(time.time())
        self._save(ind)
        self._save(d)

    def _check_new(self, dir_ino: int, name: str | bytes) -> tuple[Inode, bytes]:
        d, raw = self._dir(dir_ino), _b(name)
        check_name(raw)
        if self.dirs.lookup(d, raw):
            raise FsError(errno.EEXIST, f"{_s(raw)!r} exists")
        return d, raw

    @_mutates
    def create(self, dir_ino: int, name: str | bytes, mode: int = 0o644, uid: int = 0,
               gid: int = 0, rdev: int = 0) -> int:
        """A new file (regular unless `mode` says fifo/socket/device: mknod); its inode."""
        d, raw = self._check_new(dir_ino, name)
        if not st.S_IFMT(mode):
            mode |= st.S_IFREG
        if st.S_ISDIR(mode) or st.S_ISLNK(mode):
            raise FsError(errno.EINVAL, "create makes files; use mkdir or symlink")
        ind = self._new_inode(dir_ino, mode, uid, gid)
        if st.S_ISCHR(mode) or st.S_ISBLK(mode):
            ind.block[0] = rdev
        self._add(d, raw, ind)
        return ind.ino

    @_mutates
    def mkdir(self, dir_ino: int, name: str | bytes, mode: int = 0o755, uid: int = 0,
              gid: int = 0) -> int:
        d, raw = self._check_new(dir_ino, name)
        ind = self._new_inode(dir_ino, st.S_IFDIR | (mode & 0o7777), uid, gid)
        try:
            self.dirs.init(ind, dir_ino)
        except FsError:
            self.vol.free_inode(ind.ino, True)
            raise
        ind.links = 2
        self._add(d, raw, ind)
        d = self.inode(dir_ino)
        d.links += 1
        self._save(d)
        return ind.ino

    @_mutates
    def symlink(self, dir_ino: int, name: str | bytes, target: str | bytes, uid: int = 0,
                gid: int = 0) -> int:
        d, raw = self._check_new(dir_ino, name)
        tgt = _b(target)
        if not tgt or len(tgt) >= self.vol.bs:
            raise FsError(errno.ENAMETOOLONG, f"symlink target of {len(tgt)} bytes")
        ind = self._new_inode(dir_ino, st.S_IFLNK | 0o777, uid, gid)
        if len(tgt) <= FAST_LINK_MAX:       # fast: the target in i_block itself
            padded = tgt.ljust(60, b"\0")
            ind.block = [int.from_bytes(padded[4 * i:4 * i + 4], "little") for i in range(15)]
            ind.size = len(tgt)
        else:
            try:
                self.fm.write(ind, 0, tgt)
            except FsError:
                self.vol.free_inode(ind.ino, False)
                raise
        self._add(d, raw, ind)
        return ind.ino

    def readlink(self, ino: int) -> bytes:
        ind = self.inode(ino)
        if not st.S_ISLNK(ind.mode):
            raise FsError(errno.EINVAL, f"inode {ino} is not a symlink")
        acl = self.vol.bs // 512 if ind.file_acl else 0
        if ind.sectors - acl == 0:
            return b"".join(b.to_bytes(4, "little") for b in ind.block)[:ind.size]
        return self.fm.read(ind, 0, ind.size)

    @_mutates
    def link(self, ino: int, dir_ino: int, name: str | bytes) -> None:
        d, raw = self._check_new(dir_ino, name)
        ind = self.inode(ino)
        if st.S_ISDIR(ind.mode):
            raise FsError(errno.EPERM, "hard links to directories are not allowed")
        if ind.links >= 65000:
            raise FsError(errno.EMLINK, f"inode {ino} has {ind.links} links")
        self.dirs.add(d, raw, ino, ftype_of(ind.mode))
        ind.links += 1
        ind.ctime = d.mtime = d.ctime = int(time.time())
        self._save(ind)
        self._save(d)

    # -- removing ----------------------------------------------------------------------
    @_mutates
    def unlink(self, dir_ino: int, name: str | bytes) -> None:
        d, raw = self._dir(dir_ino), _b(name)
        ino = self.dirs.lookup(d, raw)
        if not ino:
            raise FsError(errno.ENOENT, f"{_s(raw)!r} not found")
        if st.S_ISDIR(self.inode(ino).mode):
            raise FsError(errno.EISDIR, f"{_s(raw)!r} is a directory (rmdir)")
        self.dirs.remove(d, raw)
        d.mtime = d.ctime = int(time.time())
        self._save(d)
        self._drop_link(ino)

    @_mutates
    def rmdir(self, dir_ino: int, name: str | bytes) -> None:
        d, raw = self._dir(dir_ino), _b(name)
        if raw in (b".", b".."):
            raise FsError(errno.EINVAL, f"cannot remove {_s(raw)!r}")
        ino = self.dirs.lookup(d, raw)
        if not ino:
            raise FsError(errno.ENOENT, f"{_s(raw)!r} not found")
        sub = self._dir(ino)
        if not self.dirs.is_empty(sub):
            raise FsError(errno.ENOTEMPTY, f"directory {_s(raw)!r} is not empty")
        self.dirs.remove(d, raw)
        d.links -= 1
        d.mtime = d.ctime = int(time.time())
        self._save(d)
        sub.links = 0
        self._release(sub)

    def _drop_link(self, ino: int) -> None:
        ind = self.inode(ino)
        ind.links -= 1
        ind.ctime = int(time.time())
        if ind.links > 0:
            self._save(ind)
        elif self.opens.get(ino):
            self.orphans.add(ino)
            self._save(ind)
        else:
            self._release(ind)

    def _release(self, ind: Inode) -> None:
        """Free an inode with no names and no opens: its blocks, xattr block, the inode."""
        if not (st.S_ISLNK(ind.mode) and ind.sectors == 0):
            self.fm.truncate(ind, 0)
        if ind.file_acl:
            self._put_xattr_block(ind.file_acl)
            ind.file_acl = 0
        ind.block = [0] * 15
        ind.size, ind.sectors, ind.links = 0, 0, 0
        ind.dtime = int(time.time())
        self._save(ind)
        self.dirs.forget(ind.ino)
        self.vol.free_inode(ind.ino, st.S_ISDIR(ind.mode))
        self.orphans.discard(ind.ino)

    def _put_xattr_block(self, blk: int) -> None:
        data = self.vol.cache.get(blk)
        refs = int.from_bytes(data[4:8], "little")
        if refs <= 1:
            self.vol.free_block(blk)
        else:
            data[4:8] = (refs - 1).to_bytes(4, "little")
            self.vol.cache.dirty(blk)

    @_mutates
    def rename(self, odir: int, oname: str | bytes, ndir: int, nname: str | bytes) -> None:
        """Move an entry, replacing a compatible target (rename.py)."""
        rename_entry(self, odir, _b(oname), ndir, _b(nname))

    # -- open references -------------------------------------------------------------
    def open(self, ino: int) -> None:
        self.inode(ino)
        self.opens[ino] = self.opens.get(ino, 0) + 1

    def close(self, ino: int) -> None:
        n = self.opens.get(ino, 0) - 1
        if n < 0:
            raise FsError(errno.EBADF, f"inode {ino} is not open")
        if n:
            self.opens[ino] = n
            return
        del self.opens[ino]
        if ino in self.orphans and not self.readonly:
            self._release(self.vol.read_inode(ino))

    # -- data --------------------------------------------------------------------------
    def read(self, ino: int, offset: int, size: int) -> bytes:
        ind = self.inode(ino)
        if st.S_ISDIR(ind.mode):
            raise FsError(errno.EISDIR, f"inode {ino} is a directory")
        return self.fm.read(ind, offset, size)

    def _check_size(self, size: int) -> None:
        limit = min(self.fm.max_blocks * self.vol.bs, (1 << 63) if self.large_file else 1 << 31)
        if size > limit:
            raise FsError(errno.EFBIG, f"size {size} past the file size limit {limit}")

    @_mutates
    def write(self, ino: int, offset: int, data: bytes) -> int:
        ind = self.inode(ino)
        if not st.S_ISREG(ind.mode):
            raise FsError(errno.EINVAL if not st.S_ISDIR(ind.mode) else errno.EISDIR,
                          f"inode {ino} is not a regular file")
        self._check_size(offset + len(data))
        try:
            n = self.fm.write(ind, offset, data)
        finally:
            ind.mtime = ind.ctime = int(time.time())
            self._save(ind)
        return n

    @_mutates
    def truncate(self, ino: int, size: int) -> None:
        ind = self.inode(ino)
        if not st.S_ISREG(ind.mode):
            raise FsError(errno.EINVAL, f"inode {ino} is not a regular file")
        self._check_size(size)
        if size < ind.size:
            bs = self.vol.bs
            self.fm.truncate(ind, -(-size // bs))
            tail = size % bs
            blk = self.fm.lookup(ind, size // bs) if tail else 0
            if blk:                          # zero the cut-off tail of the last block
                buf = self.vol.cache.get(blk)
                buf[tail:] = bytes(bs - tail)
                self.vol.cache.dirty(blk)
        ind.size = size                      # growing leaves a hole
        ind.mtime = ind.ctime = int(time.time())
        self._save(ind)

    @_mutates
    def setattr(self, ino: int, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, atime: int | None = None,
                mtime: int | None = None) -> None:
        """chmod (permission bits only), chown, utimes; ctime becomes now."""
        ind = self.inode(ino)
        if mode is not None:
            ind.mode = st.S_IFMT(ind.mode) | (mode & 0o7777)
        if uid is not None:
            ind.uid = uid
        if gid is not None:
            ind.gid = gid
        if atime is not None:
            ind.atime = atime
        if mtime is not None:
            ind.mtime = mtime
        ind.ctime = int(time.time())
        self._save(ind)

    # -- the volume ------------------------------------------------------------------
    def statfs(self) -> StatFs:
        sb = self.vol.sb
        free = sb.get("free_blocks_count")
        return StatFs(self.vol.bs, sb.get("blocks_count"), free,
                      max(0, free - sb.get("r_blocks_count")), sb.get("inodes_count"),
                      sb.get("free_inodes_count"), 255)

    def sync(self) -> None:
        if not self.readonly:
            self.vol.write_super(flush=True)

    def fsync(self, ino: int) -> None:
        """The whole volume (module docstring: durability)."""
        self.inode(ino)
        self.sync()

    def unmount(self) -> None:
        """Free the orphans, write everything, mark the file system clean, close."""
        if not self.mounted:
            return
        if self.readonly:
            self.vol.dev.close()
            self.mounted = False
            return
        for ino in sorted(self.orphans):
            self._release(self.vol.read_inode(ino))
        self.opens.clear()
        self.vol.write_super(flush=True, clean=True)
        self.vol.dev.close()
        self.mounted = False
