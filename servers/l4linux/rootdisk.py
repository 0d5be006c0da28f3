"""The personality's disk: ext2 on the DDE block server, mounted in its file tree.

    disk = Disk.open(l4)                  # capabilities "block" (the server) and "moe"
    disk.mount(fsys, b"/")                # the root file system (fs.FileSystem.mount_root)
    disk.mount(fsys, b"/mnt")             # or on a RAM directory
    disk.close()                          # unmount: sync, mark clean; release the session

    drive = Drive(l4)                     # the personality's disk, /dev/l4disk (server.py)
    drive.mount(fsys, b"/mnt"); drive.umount(); drive.close()   # mount(2), umount2(2), down

Mechanism. The personality is a block client like any other (paper §4.1: an enlightened
stub driver): a `BlockClient` session with its shared buffer, `BlockClientDevice` over it,
the ext2 engine over that, `ext2fs.Ext2Mount` in the tree. Nothing touches the HAL. The
engine's buffer cache is write-back: blocks reach the disk on sync(2)/fsync(2)/syncfs(2),
when the cache evicts them, and at `close` (the personality's clean shutdown). A block
server restart is the client's business (it retries on the new session); ext2 has no
journal, so a personality killed with dirty blocks leaves an image for `e2fsck -fy`.

`Drive` is the personality's one disk: the block session, opened at the first mount and
kept (a task has one buffer view for the server; a remount reuses it), and at most one
mount of it at a time — ext2 has no locking between two mounts of the same disk.
`writeback()` is the flusher: the serving loop calls it when it has been idle a moment, so
a disk left alone soon has nothing dirty (ext2 has no journal: what the cache held when the
personality died is lost, and e2fsck -fy repairs the rest).

Ownership: the personality's serving thread.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from kernel.user.client import L4
from kernel.user.vm import VM
from servers.block.client import BlockClient
from servers.ext2 import BlockClientDevice, Ext2

from .ext2fs import Ext2Mount
from .fs import FsError

BUFFER = 256 * 1024                 # the shared buffer: one device request moves at most this


class Disk:
    def __init__(self, bc: BlockClient, mount: Ext2Mount, own_client: bool) -> None:
        self.bc = bc
        self.own_client = own_client        # close() ends the session only if we opened it
        self.mount_ = mount
        self.fsys: Any = None

    @classmethod
    def open(cls, l4: L4, cache_blocks: int = 8192, readonly: bool = False,
             client: BlockClient | None = None) -> "Disk":
        """Mount the disk of a new block session, or of `client` (a task has one address
        space view for its buffers: one session serves all its uses of the disk)."""
        bc = client if client is not None else BlockClient(l4, buffer=BUFFER)
        try:
            engine = Ext2(BlockClientDevice(bc), cache_blocks, readonly=readonly)
        except Exception:
            if client is None:
                bc.close()
            raise
        return cls(bc, Ext2Mount(engine), client is None)

    def mount(self, fsys: Any, at: bytes = b"/") -> Ext2Mount:
        if at.rstrip(b"/") == b"":
            fsys.mount_root(self.mount_)
        else:
            fsys.mount(at, self.mount_)
        self.fsys = fsys
        return self.mount_

    def sync(self) -> None:
        self.mount_.sync()

    def close(self) -> None:
        """Unmount (orphans freed, everything written, the superblock marked clean) and
        end the block session. Safe to call twice."""
        if self.mount_.fs.mounted:
            self.mount_.unmount(force=True)
            if self.fsys is not None and self.mount_ in self.fsys.mounts:
                self.fsys.mounts.remove(self.mount_)
                if self.fsys.root_mount is self.mount_:
                    self.fsys.root_mount = None
        if self.own_client:
            self.bc.close()


DEVICE = b"/dev/l4disk"             # the block device node mount(2) names (files.make_devices)


class Drive:
    """The block session of capability `cap` and its (one) ext2 mount (module docstring)."""

    def __init__(self, l4: L4, cap: str = "block", memory: Callable[[], VM] | None = None) -> None:
        """`memory`: the task's one VM (the personality's, which eth0's session shares),
        asked for at the first mount; without it the session makes its own."""
        if cap not in l4.caps:
            raise ValueError(f"no capability {cap!r}: the image's [linux] rootdisk routes it")
        self.l4 = l4
        self.cap = cap
        self.memory = memory
        self.bc: BlockClient | None = None
        self.disk: Disk | None = None
        self.at: bytes | None = None        # where it is mounted (b"/": the root)

    def mount(self, fsys: Any, at: bytes, readonly: bool = False) -> None:
        """Mount the disk at `at` (FsError EBUSY if it is mounted already)."""
        if self.disk is not None:
            raise FsError(errno.EBUSY, f"{DEVICE.decode()} is mounted on {self.at!r}")
        if self.bc is None:
            self.bc = BlockClient(self.l4, self.l4.caps[self.cap], buffer=BUFFER,
                                  vm=self.memory() if self.memory is not None else None)
        try:
            disk = Disk.open(self.l4, readonly=readonly, client=self.bc)
        except FsError:
            raise
        except Exception as e:               # not ext2, a bad superblock: the engine's words
            raise FsError(getattr(e, "errno", None) or errno.EINVAL, str(e)) from None
        disk.mount(fsys, at)
        self.disk, self.at = disk, at

    def umount(self) -> None:
        """Unmount (EBUSY while a file of it is open): written back, marked clean."""
        if self.disk is None:
            raise FsError(errno.EINVAL, "not mounted")
        self.disk.mount_.unmount()
        fsys = self.disk.fsys
        if fsys is not None and self.disk.mount_ in fsys.mounts:
            fsys.mounts.remove(self.disk.mount_)
            if fsys.root_mount is self.disk.mount_:
                fsys.root_mount = None
        self.disk, self.at = None, None

    def dirty(self) -> bool:
        vol = self.disk.mount_.fs.vol if self.disk is not None else None
        return vol is not None and bool(vol.cache.dirty_set or vol.gd_dirty)

    def writeback(self) -> None:
        if self.dirty():
            assert self.disk is not None
            self.disk.sync()

    def close(self) -> None:
        """The clean shutdown: unmount by force (the Linux processes are gone), end the
        session. Safe to call twice."""
        if self.disk is not None:
            self.disk.close()
            self.disk, self.at = None, None
        if self.bc is not None:
            self.bc.close()
            self.bc = None
