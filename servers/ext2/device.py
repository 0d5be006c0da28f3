"""Block devices under the ext2 engine, and its buffer cache.

A `Device` reads and writes whole sectors (offsets and lengths multiples of SECTOR = 512)
and flushes its own write cache; `size` is its length in bytes. Two of them:
- `ImageDevice`: a host image file (tests, tools, `l4run mkrootfs --ext2` checks);
- `BlockClientDevice`: a session with the DDE `block` server (servers/block/client.py),
  data through the session's shared buffer in pieces of at most its size. A server
  restart during a call is survived: the client opens a session with the successor and
  this device makes the call again, so a write this device returned from is on the
  disk's side (and after a flush on the disk).

`BufferCache` holds file system blocks by number, write-back: `get` answers the block's
bytearray (read from the device on a miss), the caller changes it in place and calls
`dirty`; `fresh` answers a zeroed block without reading (a block about to be filled);
`prefetch` reads many blocks ahead, neighbours in one device request.
Dirty blocks reach the device only on `sync` (sorted, neighbours merged into one write,
then the device's flush) or when evicted. Eviction is LRU over at most `capacity` blocks.
Invariant: a block number is in `dirty` only while it is in the cache.

Ownership: one thread (the file system's owner); nothing here locks.
"""
from __future__ import annotations

import errno
import itertools
import os
from collections import OrderedDict
from typing import Any, Callable, Protocol

from .layout import FsError

SECTOR = 512
EVICT_BATCH = 256                   # blocks looked at for write-back when one is evicted


class Device(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class ImageDevice:
    """A host file as the disk (`readonly` opens it O_RDONLY)."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        self.size = os.fstat(self.fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.size:
            raise OSError(f"{self.path}: write past the end ({offset}+{len(data)} > {self.size})")
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BlockClientDevice:
    """The `block` server's disk through a BlockClient session (`bc`), owned by the caller.

    A call that ends in PeerDied (the server died during it: done or not, nobody knows) is
    made again, on the session the client opens with the restarted server; reads, writes
    of the same bytes and flushes may all be repeated. After RETRIES deaths in one call the
    error goes up. An I/O error status of the disk is FsError(EIO)."""

    RETRIES = 5

    def __init__(self, bc: Any, sectors: int | None = None) -> None:
        self.bc = bc
        self.retried = 0                    # calls made again after a server death
        n = sectors if sectors is not None else int(bc.session["sectors"])
        self.size = n * SECTOR
        self.chunk = (min(bc.buffer_size, int(bc.session.get("max_sectors", 1 << 30)) * SECTOR)
                      // SECTOR * SECTOR)

    def _again(self, call: Callable[[], Any]) -> Any:
        from kernel.user.errors import PeerDied
        for attempt in range(self.RETRIES + 1):
            try:
                return call()
            except PeerDied:
                if attempt == self.RETRIES:
                    raise
                self.retried += 1
            except IOError as e:            # BlockError: the disk answered an error status
                raise FsError(errno.EIO, f"block device: {e}") from None

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            n = min(self.chunk, length - len(out))
            sector = (offset + len(out)) // SECTOR
            out += self._again(lambda: self.bc.read(sector, n // SECTOR))
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        for pos in range(0, len(data), self.chunk):
            piece = data[pos:pos + self.chunk]
            self._again(lambda: self.bc.write((offset + pos) // SECTOR, piece))

    def flush(self) -> None:
        self._again(self.bc.flush)

    def close(self) -> None:
        """The session belongs to whoever made the client: nothing to release here."""


class BufferCache:
    def __init__(self, dev: Device, block_size: int, capacity: int = 8192) -> None:
        self.dev = dev
        self.bs = block_size
        self.capacity = capacity
        self.blocks: OrderedDict[int, bytearray] = OrderedDict()
        self.dirty_set: set[int] = set()
        self.reads = self.writes = 0

    def get(self, n: int) -> bytearray:
        b = self.blocks.get(n)
        if b is None:
            b = bytearray(self.dev.read(n * self.bs, self.bs))
            self.reads += 1
            self._insert(n, b)
        else:
            self.blocks.move_to_end(n)
        return b

    def fresh(self, n: int) -> bytearray:
        """Block `n` as zeros, dirty (its old contents are not read)."""
        b = bytearray(self.bs)
        if n in self.blocks:
            self.blocks[n][:] = b
            self.blocks.move_to_end(n)
            b = self.blocks[n]
        else:
            self._insert(n, b)
        self.dirty_set.add(n)
        return b

    def prefetch(self, numbers: list[int]) -> None:
        """Read the uncached blocks of `numbers` ahead, each run of neighbours in one device
        read (sequential file reads then cost one request per run, not per block)."""
        want = sorted({n for n in numbers if n and n not in self.blocks})[:self.capacity // 2]
        run: list[int] = []
        for n in want + [-2]:
            if run and (n != run[-1] + 1 or len(run) >= 256):
                data = self.dev.read(run[0] * self.bs, len(run) * self.bs)
                self.reads += 1
                for k, m in enumerate(run):
                    self._insert(m, bytearray(data[k * self.bs:(k + 1) * self.bs]))
                run = []
            run.append(n)

    def dirty(self, n: int) -> None:
        if n not in self.blocks:
            raise KeyError(f"block {n} marked dirty but not cached")
        self.dirty_set.add(n)

    def forget(self, n: int) -> None:
        """Drop block `n` unwritten (it was freed: its contents no longer matter)."""
        self.blocks.pop(n, None)
        self.dirty_set.discard(n)

    def _insert(self, n: int, b: bytearray) -> None:
        """Cache block `n`, evicting the oldest. A dirty one goes out with the next dirty
        ones in age order (EVICT_BATCH, written as runs of neighbours): a long write then
        costs a device request per run, not one per block."""
        self.blocks[n] = b
        while len(self.blocks) > self.capacity:
            old = next(iter(self.blocks))
            if old in self.dirty_set:
                self._write_runs([m for m in itertools.islice(self.blocks, EVICT_BATCH)
                                  if m in self.dirty_set])
            del self.blocks[old]

    def _write_runs(self, numbers: list[int]) -> None:
        run: list[int] = []
        for n in sorted(numbers) + [-2]:
            if run and n != run[-1] + 1:
                self.dev.write(run[0] * self.bs, b"".join(self.blocks[m] for m in run))
                self.writes += 1
                self.dirty_set.difference_update(run)
                run = []
            run.append(n)

    def sync(self) -> None:
        """Every dirty block to the device, then the device's flush."""
        if self.dirty_set:
            self._write_runs(list(self.dirty_set))
        self.dev.flush()
