"""Directories: linked entries in the directory's blocks.

Mechanism. A directory's data is whole blocks; each block is a chain of entries (inode,
rec_len, name_len, file type, name) whose rec_lens add up to the block size exactly. An
entry with inode 0 is unused. Adding a name takes the first unused entry big enough, or
splits an entry with slack (its record cut to its own size, the new entry takes the rest),
or appends a block holding only the new entry. Removing a name merges its record into the
entry before it in the block, or (first in its block) sets its inode to 0. Blocks are
never removed from a directory (Linux ext2 does the same), so a directory never has holes.

Lookups go through a name index per directory (name -> inode), built from the blocks at
the first lookup and kept in step by every change made here; `forget` drops it when the
directory is freed (its inode number may come back as another directory). Adding a name
tries the directory's last block first (where a growing directory has room), then the
others: so making n files in one directory costs O(n), not O(n^2), block parses.

Contract: the caller holds the directory's Inode and writes it back (size, i_blocks and
i_flags change here). A directory changed here loses INDEX_FL: an htree index's blocks
are valid linear entries, so it stays a correct, unindexed directory.

Ownership: the thread that owns the Ext2 instance.
"""
from __future__ import annotations

import errno
from collections.abc import Iterator

from .blockmap import FileMap
from .layout import (FT_DIR, INDEX_FL, DirEntry, FsError, Inode, pack_entry, parse_block,
                     rec_len_for)

NAME_MAX = 255


class Directories:
    def __init__(self, fm: FileMap, filetype: bool) -> None:
        self.fm = fm
        self.vol = fm.vol
        self.bs = fm.bs
        self.filetype = filetype
        self._index: dict[int, dict[bytes, int]] = {}

    def _names(self, d: Inode) -> dict[bytes, int]:
        names = self._index.get(d.ino)
        if names is None:
            names = self._index[d.ino] = {e.name: e.ino for _, e in self.entries(d)}
        return names

    def forget(self, ino: int) -> None:
        self._index.pop(ino, None)

    def _block(self, d: Inode, lblk: int) -> int:
        blk = self.fm.lookup(d, lblk)
        if blk == 0:
            raise FsError(errno.EIO, f"directory inode {d.ino} has a hole at block {lblk}")
        return blk

    def entries(self, d: Inode) -> Iterator[tuple[int, DirEntry]]:
        """(disk block, entry) for every used entry, in order."""
        for lblk in range(d.size // self.bs):
            blk = self._block(d, lblk)
            for e in parse_block(self.vol.cache.get(blk), self.filetype):
                if e.ino:
                    yield blk, e

    def lookup(self, d: Inode, name: bytes) -> int:
        return self._names(d).get(name, 0)

    def _write(self, blk: int, offset: int, ino: int, rec: int, name: bytes, ft: int) -> None:
        data = self.vol.cache.get(blk)
        raw = pack_entry(ino, rec, name, ft, self.filetype)
        data[offset:offset + len(raw)] = raw
        self.vol.cache.dirty(blk)

    def add(self, d: Inode, name: bytes, ino: int, ft: int) -> None:
        """Add `name` -> `ino`; the caller has checked it is not there. ENOSPC leaves the
        directory as it was."""
        check_name(name)
        names = self._names(d)
        need = rec_len_for(len(name))
        d.flags &= ~INDEX_FL
        n = d.size // self.bs
        for lblk in [n - 1, *range(n - 1)] if n else []:
            if self._add_in(self._block(d, lblk), need, name, ino, ft):
                names[name] = ino
                return
        blk, _ = self.fm.allocate(d, n)
        self.vol.cache.fresh(blk)
        self._write(blk, 0, ino, self.bs, name, ft)
        d.size += self.bs
        names[name] = ino

    def _add_in(self, blk: int, need: int, name: bytes, ino: int, ft: int) -> bool:
        for e in parse_block(self.vol.cache.get(blk), self.filetype):
            if e.ino == 0 and e.rec_len >= need:
                self._write(blk, e.offset, ino, e.rec_len, name, ft)
                return True
            used = rec_len_for(len(e.name))
            if e.ino and e.rec_len - used >= need:
                self._write(blk, e.offset, e.ino, used, e.name, e.ftype)
                self._write(blk, e.offset + used, ino, e.rec_len - used, name, ft)
                return True
        return False

    def remove(self, d: Inode, name: bytes) -> int:
        """Remove `name`; answers its inode number (ENOENT if absent)."""
        d.flags &= ~INDEX_FL
        for lblk in range(d.size // self.bs):
            blk = self._block(d, lblk)
            prev: DirEntry | None = None
            for e in parse_block(self.vol.cache.get(blk), self.filetype):
                if e.ino and e.name == name:
                    if prev is None:
                        self._write(blk, 0, 0, e.rec_len, b"", 0)
                    else:
                        self._write(blk, prev.offset, prev.ino, prev.rec_len + e.rec_len,
                                    prev.name, prev.ftype)
                    self._names(d).pop(name, None)
                    return e.ino
                prev = e
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory inode {d.ino}")

    def retarget(self, d: Inode, name: bytes, ino: int, ft: int) -> int:
        """Point the existing entry `name` at `ino`; answers the inode it named before."""
        for blk, e in self.entries(d):
            if e.name == name:
                self._write(blk, e.offset, ino, e.rec_len, name, ft)
                self._names(d)[name] = ino
                return e.ino
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory inode {d.ino}")

    def init(self, d: Inode, parent: int) -> None:
        """The first block of a new directory: '.' and '..'. ENOSPC: nothing allocated."""
        blk, _ = self.fm.allocate(d, 0)
        self.vol.cache.fresh(blk)
        self._write(blk, 0, d.ino, 12, b".", FT_DIR)
        self._write(blk, 12, parent, self.bs - 12, b"..", FT_DIR)
        d.size = self.bs
        self._index[d.ino] = {b".": d.ino, b"..": parent}

    def is_empty(self, d: Inode) -> bool:
        return all(e.name in (b".", b"..") for _, e in self.entries(d))


def check_name(name: bytes) -> None:
    if not name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"{name!r} cannot be a directory entry")
    if b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL, f"{name!r}: a name may hold neither '/' nor NUL")
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes (at most {NAME_MAX})")
