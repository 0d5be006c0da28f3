"""An inode's block map: logical block -> disk block, through indirect blocks.

Mechanism. i_block[0..11] name the first 12 data blocks; i_block[12] an indirect block of
bs/4 block numbers, [13] a doubly and [14] a triply indirect one. A 0 anywhere is a hole:
it reads as zeros and owns no block. `lookup` walks the map; `allocate` fills the path to a
logical block, allocating (zeroed) indirect blocks on the way; `truncate` frees every data
block at or past a logical block and every indirect block left empty by that.

Contract: i_blocks (`inode.sectors`) counts every block the map owns, data and indirect,
in 512-byte units; the functions here keep it right and the caller writes the inode back.
`FileMap.read` / `write` move bytes at any offset (holes read as zeros; a write allocates
only the blocks it touches, so skipped ranges stay holes).

Ownership: the thread that owns the Ext2 instance.
"""
from __future__ import annotations

import errno
import struct

from .layout import DIND, IND, N_DIRECT, TIND, FsError, Inode
from .volume import Volume


class FileMap:
    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.bs = vol.bs
        self.per = vol.bs // 4
        p = self.per
        self.max_blocks = N_DIRECT + p + p * p + p * p * p

    def _path(self, lblk: int) -> tuple[int, list[int]]:
        """(i_block slot, indices in the indirect blocks on the way) for `lblk`."""
        p = self.per
        if lblk < N_DIRECT:
            return lblk, []
        lblk -= N_DIRECT
        if lblk < p:
            return IND, [lblk]
        lblk -= p
        if lblk < p * p:
            return DIND, [lblk // p, lblk % p]
        lblk -= p * p
        if lblk < p * p * p:
            return TIND, [lblk // (p * p), lblk // p % p, lblk % p]
        raise FsError(errno.EFBIG, f"logical block {lblk} past the triply indirect range")

    def _entry(self, blk: int, i: int) -> int:
        return int(struct.unpack_from("<I", self.vol.cache.get(blk), 4 * i)[0])

    def _set_entry(self, blk: int, i: int, value: int) -> None:
        struct.pack_into("<I", self.vol.cache.get(blk), 4 * i, value)
        self.vol.cache.dirty(blk)

    def lookup(self, inode: Inode, lblk: int) -> int:
        slot, idx = self._path(lblk)
        blk = inode.block[slot]
        for i in idx:
            if blk == 0:
                return 0
            blk = self._entry(blk, i)
        return blk

    def allocate(self, inode: Inode, lblk: int, goal: int = 0) -> tuple[int, bool]:
        """The disk block of `lblk`, allocated if it is a hole; (block, newly allocated).
        On ENOSPC nothing of this call stays allocated except indirect blocks already
        linked in (harmless: empty indirect blocks are valid and counted)."""
        slot, idx = self._path(lblk)
        goal = goal or self._goal(inode)
        blk = inode.block[slot]
        new = False
        if blk == 0:
            blk = self._new(inode, goal, zero=bool(idx))
            inode.block[slot] = blk
            new = True
        for depth, i in enumerate(idx):
            nxt = self._entry(blk, i)
            new = False
            if nxt == 0:
                nxt = self._new(inode, blk + 1, zero=depth < len(idx) - 1)
                self._set_entry(blk, i, nxt)
                new = True
            blk = nxt
        return blk, new

    def _goal(self, inode: Inode) -> int:
        return (inode.ino - 1) // self.vol.ipg * self.vol.bpg + self.vol.first_data

    def _new(self, inode: Inode, goal: int, zero: bool) -> int:
        blk = self.vol.alloc_block(goal)
        if zero:
            self.vol.cache.fresh(blk)
        inode.sectors += self.bs // 512
        return blk

    def _drop(self, inode: Inode, blk: int) -> None:
        self.vol.free_block(blk)
        inode.sectors -= self.bs // 512

    def truncate(self, inode: Inode, keep: int) -> None:
        """Free every block of logical number >= `keep` (and emptied indirect blocks)."""
        for i in range(max(keep, 0), N_DIRECT):
            if inode.block[i]:
                self._drop(inode, inode.block[i])
                inode.block[i] = 0
        p = self.per
        first = N_DIRECT
        for slot, level, span in ((IND, 1, p), (DIND, 2, p * p), (TIND, 3, p * p * p)):
            if inode.block[slot] and self._trunc(inode, inode.block[slot], level,
                                                 max(keep - first, 0)):
                self._drop(inode, inode.block[slot])
                inode.block[slot] = 0
            first += span

    def _trunc(self, inode: Inode, blk: int, level: int, keep: int) -> bool:
        """Free what of the subtree at `blk` lies at or past relative block `keep`;
        True when the indirect block itself is now empty (the caller frees it)."""
        span = self.per ** (level - 1)
        data = self.vol.cache.get(blk)
        entries = list(struct.unpack(f"<{self.per}I", data))
        for i, child in enumerate(entries):
            if child == 0 or (i + 1) * span <= keep:
                continue
            if level == 1:
                self._drop(inode, child)
                entries[i] = 0
            elif self._trunc(inode, child, level - 1, max(keep - i * span, 0)):
                self._drop(inode, child)
                entries[i] = 0
        data = self.vol.cache.get(blk)
        data[:] = struct.pack(f"<{self.per}I", *entries)
        self.vol.cache.dirty(blk)
        return not any(entries)

    def blocks(self, inode: Inode) -> list[int]:
        """Every block the map owns, data and indirect (for fsck-like checks and tests)."""
        out = [b for b in inode.block[:N_DIRECT] if b]
        for slot, level in ((IND, 1), (DIND, 2), (TIND, 3)):
            if inode.block[slot]:
                self._walk(inode.block[slot], level, out)
        return out

    def _walk(self, blk: int, level: int, out: list[int]) -> None:
        out.append(blk)
        for child in struct.unpack(f"<{self.per}I", self.vol.cache.get(blk)):
            if child:
                if level == 1:
                    out.append(child)
                else:
                    self._walk(child, level - 1, out)

    # -- bytes -------------------------------------------------------------------------
    def read(self, inode: Inode, offset: int, size: int) -> bytes:
        end = min(inode.size, offset + size)
        out = bytearray()
        pos = offset
        if end - pos > self.bs:
            self.vol.cache.prefetch([self.lookup(inode, lb) for lb in
                                     range(pos // self.bs, -(-end // self.bs))])
        while pos < end:
            lblk, off = divmod(pos, self.bs)
            n = min(self.bs - off, end - pos)
            blk = self.lookup(inode, lblk)
            out += self.vol.cache.get(blk)[off:off + n] if blk else bytes(n)
            pos += n
        return bytes(out)

    def write(self, inode: Inode, offset: int, data: bytes) -> int:
        """Write `data` at `offset`; answers the bytes written (short only on ENOSPC after
        some progress — with none, FsError(ENOSPC)). Updates size, not timestamps."""
        done, goal = 0, 0
        while done < len(data):
            pos = offset + done
            lblk, off = divmod(pos, self.bs)
            n = min(self.bs - off, len(data) - done)
            try:
                blk, new = self.allocate(inode, lblk, goal)
            except FsError as e:
                if e.errno != errno.ENOSPC or done == 0:
                    raise
                break
            cache = self.vol.cache
            buf = cache.fresh(blk) if new or n == self.bs else cache.get(blk)
            buf[off:off + n] = data[done:done + n]
            cache.dirty(blk)
            done += n
            goal = blk + 1
        inode.size = max(inode.size, offset + done)
        return done
