"""The personality's disk: ext2 on the DDE block server, mounted in its file tree.

    disk = Disk.open(l4)                  # capabilities "block" (the server) and "moe"
    disk.mount(fsys, b"/")                # the root file system (fs.FileSystem.mount_root)
    disk.mount(fsys, b"/mnt")             # or on a RAM directory
    disk.close()                          # unmount: sync, mark clean; release the session

Mechanism. The personality is a block client like any other (paper §4.1: an enlightened
stub driver): a `BlockClient` session with its shared buffer, `BlockClientDevice` over it,
the ext2 engine over that, `ext2fs.Ext2Mount` in the tree. Nothing touches the HAL. The
engine's buffer cache is write-back: blocks reach the disk on sync(2)/fsync(2)/syncfs(2),
when the cache evicts them, and at `close` (the personality's clean shutdown). A block
server restart is the client's business (it retries on the new session); ext2 has no
journal, so a personality killed with dirty blocks leaves an image for `e2fsck -fy`.

Ownership: the personality's serving thread.
"""
from __future__ import annotations

from typing import Any

from kernel.user.client import L4
from servers.block.client import BlockClient
from servers.ext2 import BlockClientDevice, Ext2

from .ext2fs import Ext2Mount

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
