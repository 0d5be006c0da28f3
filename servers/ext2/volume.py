"""The volume: superblock, group descriptors, bitmaps, the inode table.

Mechanism. `Volume.open` reads the superblock (byte 1024) and the group descriptor table
(the block after the superblock's), checks them (layout.check_features and the geometry),
and marks the file system "not clean" on disk until `close` — so a crash leaves an image
e2fsck knows to check. Blocks and inodes are allocated from the bitmaps through the
buffer cache; every allocation and free changes three counts together: the bit, the
group's free count and the superblock's (plus used_dirs for directories). Those counts
are therefore always right in the cache, and on disk after a `sync`.

Allocation policy (simple, like ext2's own): a block near `goal` (the file's last block
or its inode's group), else the first group with room; a directory's inode in the group
with the most free inodes, a file's in its parent's group.

Inodes are read and written here (`read_inode` / `write_inode`) by number, into the
inode table blocks in the cache.

Ownership: the thread that owns the Ext2 instance.
"""
from __future__ import annotations

import errno
import re
import time

from .device import BufferCache, Device
from .layout import (SUPER_OFFSET, SUPER_SIZE, VALID_FS, FormatError, FsError, GroupDesc,
                     Inode, Superblock, check_features)

_NOT_FULL = re.compile(b"[^\xff]")


class Volume:
    def __init__(self, dev: Device, cache_blocks: int = 8192) -> None:
        self.dev = dev
        sb = Superblock(dev.read(SUPER_OFFSET, SUPER_SIZE))
        check_features(sb)
        self.sb = sb
        self.bs = sb.block_size
        self.blocks_count = sb.get("blocks_count")
        self.first_data = sb.get("first_data_block")
        self.bpg = sb.get("blocks_per_group")
        self.ipg = sb.get("inodes_per_group")
        self.inode_size = sb.get("inode_size")
        self.ngroups = sb.groups
        if self.blocks_count * self.bs > dev.size:
            raise FormatError(f"file system has {self.blocks_count} blocks of {self.bs} "
                              f"bytes but the device has only {dev.size} bytes")
        if self.ngroups * self.ipg != sb.get("inodes_count"):
            raise FormatError(f"{self.ngroups} groups of {self.ipg} inodes do not make "
                              f"s_inodes_count {sb.get('inodes_count')}")
        self.cache = BufferCache(dev, self.bs, cache_blocks)
        self.gdt_block = self.first_data + 1
        per = self.bs // GroupDesc.SIZE
        self.gdt_blocks = -(-self.ngroups // per)
        self.groups: list[GroupDesc] = []
        for g in range(self.ngroups):
            blk = self.cache.get(self.gdt_block + g // per)
            off = (g % per) * GroupDesc.SIZE
            self.groups.append(GroupDesc(blk[off:off + GroupDesc.SIZE]))
        self.was_clean = bool(sb.get("state") & VALID_FS)
        self.gd_dirty: set[int] = set()

    # -- superblock and descriptors --------------------------------------------------
    def mark_mounted(self) -> None:
        now = int(time.time())
        self.sb.set("state", self.sb.get("state") & ~VALID_FS)
        self.sb.set("mtime", now)
        self.sb.set("mnt_count", (self.sb.get("mnt_count") + 1) & 0xFFFF)
        self.write_super(flush=True)

    def write_super(self, flush: bool = False, clean: bool = False) -> None:
        """Descriptors into their cached blocks, the superblock straight to the device
        (it is not a file system block when blocks are larger than 1 KiB)."""
        per = self.bs // GroupDesc.SIZE
        for g in sorted(self.gd_dirty):
            n = self.gdt_block + g // per
            blk = self.cache.get(n)
            off = (g % per) * GroupDesc.SIZE
            blk[off:off + GroupDesc.SIZE] = self.groups[g].raw
            self.cache.dirty(n)
        self.gd_dirty.clear()
        self.cache.sync()
        if clean:
            self.sb.set("state", self.sb.get("state") | VALID_FS)
        self.sb.set("wtime", int(time.time()))
        if self.bs == SUPER_OFFSET:
            self.cache.forget(1)       # block 1 is the superblock: never write it twice
        self.dev.write(SUPER_OFFSET, bytes(self.sb.raw))
        if flush:
            self.dev.flush()

    def _count(self, g: int, field: str, sb_field: str | None, delta: int) -> None:
        gd = self.groups[g]
        gd.set(field, gd.get(field) + delta)
        self.gd_dirty.add(g)
        if sb_field:
            self.sb.set(sb_field, self.sb.get(sb_field) + delta)

    # -- blocks ----------------------------------------------------------------------
    def alloc_block(self, goal: int = 0) -> int:
        """A free block, marked used, near `goal`; FsError(ENOSPC) when there is none."""
        if self.sb.get("free_blocks_count") == 0:
            raise FsError(errno.ENOSPC, "no free blocks")
        goal = goal if self.first_data <= goal < self.blocks_count else self.first_data
        g0 = (goal - self.first_data) // self.bpg
        for i in range(self.ngroups + 1):
            g = (g0 + i) % self.ngroups
            if self.groups[g].get("free_blocks_count") == 0:
                continue
            start = (goal - self.first_data) % self.bpg if i == 0 else 0
            n = self._find_zero(g, self.groups[g].get("block_bitmap"), start,
                                min(self.bpg, self.blocks_count - self.first_data - g * self.bpg))
            if n is not None:
                self._count(g, "free_blocks_count", "free_blocks_count", -1)
                return self.first_data + g * self.bpg + n
        raise FsError(errno.ENOSPC, "no free blocks (counts say otherwise: run e2fsck)")

    def free_block(self, blk: int) -> None:
        if not self.first_data <= blk < self.blocks_count:
            raise FsError(errno.EIO, f"freeing block {blk} outside the file system")
        g, bit = divmod(blk - self.first_data, self.bpg)
        self._clear(self.groups[g].get("block_bitmap"), bit, f"block {blk}")
        self._count(g, "free_blocks_count", "free_blocks_count", 1)
        self.cache.forget(blk)

    # -- inodes ------------------------------------------------------------------------
    def alloc_inode(self, is_dir: bool, parent: int) -> int:
        if self.sb.get("free_inodes_count") == 0:
            raise FsError(errno.ENOSPC, "no free inodes")
        if is_dir:
            order = sorted(range(self.ngroups),
                           key=lambda g: -self.groups[g].get("free_inodes_count"))
        else:
            pg = (parent - 1) // self.ipg if parent else 0
            order = [(pg + i) % self.ngroups for i in range(self.ngroups)]
        first = self.sb.get("first_ino")
        for g in order:
            if self.groups[g].get("free_inodes_count") == 0:
                continue
            start = max(0, first - 1 - g * self.ipg)
            if start >= self.ipg:
                continue
            n = self._find_zero(g, self.groups[g].get("inode_bitmap"), start, self.ipg)
            if n is not None:
                self._count(g, "free_inodes_count", "free_inodes_count", -1)
                if is_dir:
                    self._count(g, "used_dirs_count", None, 1)
                return g * self.ipg + n + 1
        raise FsError(errno.ENOSPC, "no free inodes (counts say otherwise: run e2fsck)")

    def free_inode(self, ino: int, is_dir: bool) -> None:
        g, bit = divmod(ino - 1, self.ipg)
        self._clear(self.groups[g].get("inode_bitmap"), bit, f"inode {ino}")
        self._count(g, "free_inodes_count", "free_inodes_count", 1)
        if is_dir:
            self._count(g, "used_dirs_count", None, -1)

    def _inode_place(self, ino: int) -> tuple[int, int]:
        if not 1 <= ino <= self.ngroups * self.ipg:
            raise FsError(errno.EIO, f"inode number {ino} out of range")
        g, idx = divmod(ino - 1, self.ipg)
        blk, off = divmod(idx * self.inode_size, self.bs)
        return self.groups[g].get("inode_table") + blk, off

    def read_inode(self, ino: int) -> Inode:
        blk, off = self._inode_place(ino)
        data = self.cache.get(blk)
        return Inode(ino, bytes(data[off:off + self.inode_size]))

    def write_inode(self, inode: Inode) -> None:
        blk, off = self._inode_place(inode.ino)
        data = self.cache.get(blk)
        data[off:off + self.inode_size] = inode.pack()
        self.cache.dirty(blk)

    # -- bitmaps -----------------------------------------------------------------------
    def _find_zero(self, g: int, bitmap: int, start: int, limit: int) -> int | None:
        """The first clear bit in [start, limit) of a bitmap block, set; else wrap to 0."""
        bm = self.cache.get(bitmap)
        for lo, hi in ((start, limit), (0, start)):
            pos = lo // 8
            while True:
                m = _NOT_FULL.search(bm, pos, (limit + 7) // 8)
                if m is None:
                    break
                byte = m.start()
                for b in range(8):
                    n = byte * 8 + b
                    if lo <= n < hi and not bm[byte] >> b & 1:
                        bm[byte] |= 1 << b
                        self.cache.dirty(bitmap)
                        return n
                pos = byte + 1
                if pos * 8 >= hi:
                    break
        return None

    def _clear(self, bitmap: int, bit: int, what: str) -> None:
        bm = self.cache.get(bitmap)
        if not bm[bit // 8] >> (bit % 8) & 1:
            raise FsError(errno.EIO, f"freeing {what}, which is not in use (image damaged?)")
        bm[bit // 8] &= ~(1 << (bit % 8)) & 0xFF
        self.cache.dirty(bitmap)
