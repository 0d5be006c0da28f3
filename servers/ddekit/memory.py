"""DDEKit memory: DMA-able contiguous blocks, large blocks, slab caches, plain allocations.

    va = contig_alloc(size, align=4096, boundary=0, limit=None)   # physically contiguous
    contig_free(va)
    va = large_malloc(size); large_free(va)                       # page-granular, contiguous
    s = Slab(64); va = s.alloc(); s.free(va); s.destroy()         # fixed-size objects
    va = malloc(size); free(va)                                   # any size
    virt_to_phys(va) / phys_to_virt(pa) -> int | None             # the page table (pgtab)
    read(va, n) / write(va, data) / fill(va, n, byte)             # bytes at our addresses
    view(va, n, writable=False) -> memoryview                     # zero copy (rings, frames)
    b = block(va) -> Block | None: b.virt, b.phys, b.size, b.read(off, n), b.write(off, data)
    usage() -> {"blocks", "bytes"}                                # what we hold from sigma0

Where memory comes from: sigma0 (capability "sigma0"), one naturally aligned block of
2**order bytes per request, mapped by its reply into a receive window of our address space
(kernel.user.vm.window). A driver so holds exactly the frames it allocated through DDEKit and
nothing else of RAM (no mapping of all of RAM, no RAM file). Virtual addresses ("pointers")
are addresses in the task's L4 address space, handed out upwards from VBASE and never reused
(a stale pointer faults, it never reaches someone else's buffer); `read`/`write` reach them
through the task's VM and refuse any range outside one live region (`BadAddress`).

Contracts:
- Every block is recorded in the page table (servers/ddekit/pgtab.py) before it is handed
  out and cleared before it goes back to sigma0: once `*_free` returns, `virt_to_phys` of
  any of its addresses answers None and the frames are unmapped from us (sigma0's free is a
  recursive unmap; our VM acknowledges it before sigma0 answers).
- contig_alloc: `align` and `boundary` are powers of two; the block does not cross a
  multiple of `boundary` (0: no boundary); `limit` bounds the end of its physical range.
  Refusals: `ValueError` (bad arguments), `OutOfMemory` (sigma0 has no such block, or it lies
  above `limit`: given back at once).
- A slab returns a page to sigma0 when its last object is freed; `destroy` returns all.
  `free` of an address that was not handed out (or twice) raises `BadAddress`.
- A `view` is valid only while its block is live (after the free, touching it ends the
  process, like a pointer into a page given back); `read`/`write` are always safe.
- `ddekit.stop()` returns every block still held (a leaking driver still gives its quota back).
"""
from __future__ import annotations

import threading
from typing import Any

from kernel.abi import PAGE_SHIFT, PAGE_SIZE
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import window
from servers.sigma0.protocol import SIGMA0

from . import env as _env
from . import thread as _thread
from .pgtab import PageTable, Region

VBASE = 0x40_0000_0000           # first virtual address DDEKit hands out
MAX_ORDER = PAGE_SHIFT + 20      # sigma0's largest block
MALLOC_CLASSES = (16, 32, 64, 128, 256, 512, 1024, 2048)   # plain malloc's slab sizes


class OutOfMemory(MemoryError):
    """sigma0 had no suitable block (quota or fragmentation), or it broke `limit`."""


class BadAddress(ValueError):
    """An address or range that no live DDEKit allocation holds (the caller's bug)."""


pgtab = PageTable()
_lock = threading.Lock()
_next_virt = VBASE               # guarded by _lock
_orders: dict[int, int] = {}     # block virt -> order, guarded by _lock


def _order_for(n: int) -> int:
    return max(PAGE_SHIFT, (max(1, n) - 1).bit_length())


def _virt_window(order: int) -> int:
    global _next_virt
    with _lock:
        va = -(-_next_virt // (1 << order)) << order
        _next_virt = va + (1 << order)
        return va


def _sigma0() -> Any:
    env = _env.get()
    return env.stub(SIGMA0, env.cap(_env.SIGMA0_CAP), _thread.my_l4())


def _block(size: int, align: int, kind: str, limit: int | None = None) -> int:
    order = _order_for(max(size, align))
    if order > MAX_ORDER:
        raise OutOfMemory(f"{size} bytes: more than sigma0's largest block (2**{MAX_ORDER})")
    va = _virt_window(order)
    s0 = _sigma0()
    try:
        got = s0.alloc(order, _window=window(va, order))
    except RemoteFailure as e:
        raise OutOfMemory(f"sigma0 gave no block of 2**{order} bytes: {e}") from None
    phys = int(got["phys"])
    if limit is not None and phys + size > limit:
        s0.free(phys, order)
        raise OutOfMemory(f"sigma0's block at {phys:#x}+{size:#x} lies above the limit {limit:#x}")
    pgtab.set_region(va, phys, 1 << order, kind)
    with _lock:
        _orders[va] = order
    return va


def _unblock(va: int, kind: str | None = None) -> None:
    r = pgtab.region(va)
    if r is None or r.virt != va or (kind is not None and r.kind != kind):
        raise BadAddress(f"{va:#x} is not the start of a live {kind or 'DDEKit'} block")
    pgtab.clear_region(va)
    with _lock:
        order = _orders.pop(va)
    _sigma0().free(r.phys, order)


# -- contiguous and large blocks ------------------------------------------------------------
def contig_alloc(size: int, align: int = PAGE_SIZE, boundary: int = 0,
                 limit: int | None = None) -> int:
    for name, v in (("align", align), ("boundary", boundary)):
        if v < 0 or v & (v - 1):
            raise ValueError(f"{name} {v} is not a power of two")
    if size <= 0:
        raise ValueError(f"size {size} <= 0")
    if boundary and _order_for(max(size, align)) > boundary.bit_length() - 1:
        raise ValueError(f"{size} bytes aligned to {align} cannot stay within a {boundary}-byte boundary")
    return _block(size, align, "contig", limit)


def contig_free(va: int) -> None:
    _unblock(va, "contig")


def large_malloc(size: int) -> int:
    if size <= 0:
        raise ValueError(f"size {size} <= 0")
    return _block(size, PAGE_SIZE, "large")


def large_free(va: int) -> None:
    _unblock(va, "large")


# -- slabs ------------------------------------------------------------------------------------
class Slab:
    """A cache of objects of `size` bytes carved from blocks (pages) of sigma0 memory.
    `contiguous` is accepted for DDEKit's interface: every slab page is contiguous here."""

    def __init__(self, size: int, contiguous: bool = False) -> None:
        if size <= 0:
            raise ValueError(f"object size {size} <= 0")
        self.size = -(-size // 8) * 8                   # 8-byte aligned objects
        self.page = 1 << _order_for(self.size)
        self.per_page = self.page // self.size
        self.data: Any = None
        self._lock = threading.Lock()
        self._free: dict[int, list[int]] = {}          # page virt -> free objects; _lock
        self._used: dict[int, int] = {}                # object virt -> page virt; _lock

    def alloc(self) -> int:
        with self._lock:
            for page, objs in self._free.items():
                if objs:
                    obj = objs.pop()
                    self._used[obj] = page
                    return obj
        page = _block(self.page, self.page, "slab")
        with self._lock:
            objs = [page + i * self.size for i in range(self.per_page - 1, -1, -1)]
            obj = objs.pop()
            self._free[page] = objs
            self._used[obj] = page
            return obj

    def free(self, va: int) -> None:
        with self._lock:
            page = self._used.pop(va, None)
            if page is None:
                raise BadAddress(f"{va:#x} is no live object of this {self.size}-byte slab")
            objs = self._free[page]
            objs.append(va)
            empty = len(objs) == self.per_page
            if empty:
                del self._free[page]
        if empty:
            _unblock(page, "slab")

    def destroy(self) -> None:
        with self._lock:
            pages = list(self._free)
            self._free.clear()
            self._used.clear()
        for p in pages:
            _unblock(p, "slab")

    def get_data(self) -> Any:
        return self.data

    def set_data(self, data: Any) -> None:
        self.data = data

    def objects(self) -> int:
        with self._lock:
            return len(self._used)


# -- plain allocations ------------------------------------------------------------------------
_classes: dict[int, Slab] = {}      # size class -> its slab; guarded by _lock
_plain: dict[int, Slab | None] = {}  # pointer -> its slab, None for a large block; _lock


def malloc(size: int) -> int:
    cls = next((c for c in MALLOC_CLASSES if size <= c), None)
    if cls is None:
        va = large_malloc(size)
        with _lock:
            _plain[va] = None
        return va
    with _lock:
        slab = _classes.setdefault(cls, Slab(cls))
    va = slab.alloc()
    with _lock:
        _plain[va] = slab
    return va


def free(va: int) -> None:
    with _lock:
        if va not in _plain:
            raise BadAddress(f"{va:#x} was not returned by malloc (or is freed already)")
        slab = _plain.pop(va)
    if slab is None:
        large_free(va)
    else:
        slab.free(va)


# -- translation and access ----------------------------------------------------------------
def virt_to_phys(va: int) -> int | None:
    return pgtab.virt_to_phys(va)


def phys_to_virt(pa: int) -> int | None:
    return pgtab.phys_to_virt(pa)


def _check(va: int, n: int) -> None:
    r = pgtab.region(va)
    if r is None or not r.contains(va, max(n, 1)):
        raise BadAddress(f"{va:#x}+{n:#x} is not inside one live DDEKit allocation")


def read(va: int, n: int) -> bytes:
    _check(va, n)
    env = _env.get()
    with env.mem_lock:
        return env.vm.read(va, n)


def write(va: int, data: bytes | bytearray | memoryview) -> None:
    _check(va, len(data))
    env = _env.get()
    with env.mem_lock:
        env.vm.write(va, data)


def fill(va: int, n: int, byte: int = 0) -> None:
    _check(va, n)
    env = _env.get()
    with env.mem_lock:
        env.vm.fill(va, n, byte)


def view(va: int, n: int, writable: bool = False) -> memoryview:
    _check(va, n)
    env = _env.get()
    with env.mem_lock:
        return env.vm.view(va, n, writable)


class Block:
    """The live allocation holding an address, as an object: its virtual and physical start,
    size and kind; reads and writes at offsets into it (checked like `read`/`write`)."""

    def __init__(self, region: Region) -> None:
        self.virt, self.phys, self.size, self.kind = region

    def phys_of(self, off: int) -> int:
        if not 0 <= off < self.size:
            raise BadAddress(f"offset {off:#x} outside the block's {self.size:#x} bytes")
        return self.phys + off

    def read(self, off: int, n: int) -> bytes:
        return read(self.virt + off, n)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        write(self.virt + off, data)

    def fill(self, off: int, n: int, byte: int = 0) -> None:
        fill(self.virt + off, n, byte)


def block(va: int) -> Block | None:
    """The live block (a sigma0 block, or a region the driver recorded) holding `va`."""
    r = pgtab.region(va)
    return None if r is None else Block(r)


def usage() -> dict[str, int]:
    with _lock:
        return {"blocks": len(_orders), "bytes": sum(1 << o for o in _orders.values())}


def release_all() -> None:
    """Give every block still held back to sigma0 (ddekit.stop registers this)."""
    with _lock:
        left = list(_orders)
        _classes.clear()
        _plain.clear()
    for va in left:
        try:
            _unblock(va)
        except Exception as e:            # noqa: BLE001 - stop goes on; sigma0 reaps at death
            print(f"ddekit: could not give back block {va:#x}: {e}", flush=True)
