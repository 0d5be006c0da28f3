"""The task side of memory: an address-space view over the RAM, with a local TLB.

`VM(l4)` joins the RAM (MEM_ATTACH): it maps the kernel's RAM memfd, opened through
`/proc/<kernel pid>/fd/<n>` (nothing is named in /dev/shm). Every access goes through the
view — `read`, `write`, `view` (a zero-copy memoryview of a range) — and is translated by
the TLB, a cache of the kernel's page table: a miss, or a write to a page cached read-only,
is a page fault (MEM_FAULT). The kernel answers from its page table, or asks the thread's
pager and answers once the pager mapped the page. An unresolvable fault raises `PageFault`.

Shootdown contract (docs/MEMORY.md): the kernel bumps this task's epoch word in the RAM's
control area when it unmaps anything of ours. Each access first compares the word with the
epoch our TLB was filled under; if it moved, the TLB is dropped and the new epoch written
to our acknowledgement word. With `signal` (the default in the main thread) the kernel also
sends SHOOTDOWN_SIGNAL so an idle or computing task acknowledges at once; a signal arriving
in the middle of an access is acknowledged when the access ends. So once `mem_unmap`
returns, no access of ours uses the old translation.

A memoryview from `view()` bypasses the TLB: it is valid only until the next unmap of that
range is acknowledged (like a pointer into a page you may lose). One `VM` per task, used
from one thread at a time (its faults go through the `L4` thread it was made with).
"""
from __future__ import annotations

import mmap
import os
import signal as _signal
import struct
import threading
from typing import Any, Callable

from . import errors
from ..abi import (FIRST_FREE_SLOT, PAGE_SHIFT, PAGE_SIZE, SHOOTDOWN_SIGNAL, Item, MemRights)

_WORD = struct.Struct("<Q")
_R, _W, _RW = int(MemRights.R), int(MemRights.W), int(MemRights.RW)   # ints: IntFlag ops are slow
_MASK = PAGE_SIZE - 1


class PageFault(errors.PartnerError):
    """A page fault that the kernel and the pager could not resolve."""


def map_mem(vaddr: int, order: int, rights: int = MemRights.RW) -> list[int]:
    """Item: the receiver gets the flexpage [vaddr, 2**order) mapped with `rights`."""
    return [int(Item.MAP_MEM), vaddr, order, int(rights)]


def grant_mem(vaddr: int, order: int, rights: int = MemRights.RW) -> list[int]:
    """Item: the flexpage moves to the receiver (we lose it)."""
    return [int(Item.GRANT_MEM), vaddr, order, int(rights)]


def window(vaddr: int, order: int, cap_base: int = FIRST_FREE_SLOT,
           cap_count: int = 0) -> tuple[int, int, int, int]:
    """A receive window taking memory items into [vaddr, 2**order) (and caps, if counted)."""
    return (cap_base, cap_count, vaddr, order)


class VM:
    """This task's address space as seen through its TLB."""

    def __init__(self, l4: Any, signal: bool | None = None) -> None:
        main = threading.current_thread() is threading.main_thread()
        use_signal = main if signal is None else (signal and main)
        self.l4 = l4
        info = l4.mem_attach(use_signal)
        path = f"/proc/{info['kernel_pid']}/fd/{info['fd']}"
        fd = os.open(path, os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.ram = memoryview(self.mm)
        self.size = info["size"]
        self.frames = info["frames"]
        self._epoch_at = info["ctl_offset"] + info["slot"] * 16
        self._ack_at = self._epoch_at + 8
        self.tlb: dict[int, tuple[int, int]] = {}
        # The last physically contiguous run walked: (first vpage, first frame, pages, rights).
        # Part of the TLB: dropped with it.
        self.run: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.seen = 0
        self.in_access = False
        self.pending = False
        self.faults = 0
        self._old_handler: Any = None
        self._sync()
        if use_signal:
            self._old_handler = _signal.signal(SHOOTDOWN_SIGNAL, self._on_signal)

    # -- shootdown ----------------------------------------------------------------
    def _sync(self) -> None:
        e = _WORD.unpack_from(self.mm, self._epoch_at)[0]
        if e != self.seen:
            self.tlb.clear()
            self.run = (0, 0, 0, 0)
            self.seen = e
        _WORD.pack_into(self.mm, self._ack_at, e)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.in_access:
            self.pending = True
        else:
            self._sync()

    def flush(self) -> None:
        """Drop the whole TLB (after giving pages away ourselves, for instance)."""
        self.tlb.clear()
        self.run = (0, 0, 0, 0)
        self._sync()

    # -- translation --------------------------------------------------------------
    def _frame(self, vp: int, access: int, ip: int) -> int:
        while True:
            if _WORD.unpack_from(self.mm, self._epoch_at)[0] != self.seen:
                self._sync()
            ent = self.tlb.get(vp)
            if ent is not None and ent[1] & access == access:
                return ent[0]
            self.faults += 1
            try:
                frame, rights = self.l4.mem_fault(vp << PAGE_SHIFT, access, ip)
            except errors.L4Error as e:
                raise PageFault(f"page fault at 0x{vp << PAGE_SHIFT:x}: {e.reason}", e.err) from None
            self.tlb[vp] = (frame, rights)

    def translate(self, vaddr: int, access: int = _R, ip: int = 0) -> int:
        """The RAM offset backing `vaddr` for `access` (faulting it in if needed)."""
        return (self._frame(vaddr >> PAGE_SHIFT, int(access), ip) << PAGE_SHIFT) | (vaddr & _MASK)

    def _walk(self, vaddr: int, n: int, access: int, ip: int,
              fn: Callable[[int, int, int], None]) -> None:
        """Call fn(ram_offset, pos, length) over runs of physically contiguous pages."""
        if n < 0 or vaddr < 0:
            raise errors.InvalidArgument(f"bad range 0x{vaddr:x}+{n}")
        self.in_access = True
        try:
            pos = 0
            tlb = self.tlb
            while pos < n:
                va = vaddr + pos
                vp = va >> PAGE_SHIFT
                frame = self._frame(vp, access, ip)     # checks the epoch first
                length = min(PAGE_SIZE - (va & _MASK), n - pos)
                rvp, rframe, rcount, rrights = self.run
                if rvp <= vp < rvp + rcount and rframe + vp - rvp == frame \
                        and rrights & access == access:
                    # inside the cached run: it goes on to the run's end
                    length = min(length + (rvp + rcount - vp - 1) * PAGE_SIZE, n - pos)
                    vp = rvp + rcount - 1
                else:
                    # extend the run while the TLB has the next pages contiguous
                    first, ffirst, rights = vp, frame, tlb[vp][1]
                    nxt = frame + 1
                    while pos + length < n:
                        ent = tlb.get(vp + 1)
                        if ent is None or ent[0] != nxt or ent[1] & access != access:
                            break
                        vp += 1
                        nxt += 1
                        rights &= ent[1]
                        length = min(length + PAGE_SIZE, n - pos)
                    if vp > first:
                        self.run = (first, ffirst, vp - first + 1, rights)
                fn((frame << PAGE_SHIFT) | (va & _MASK), pos, length)
                pos += length
        finally:
            self.in_access = False
            if self.pending:
                self.pending = False
                self._sync()

    # -- access ---------------------------------------------------------------------
    def read(self, vaddr: int, n: int, ip: int = 0) -> bytes:
        out = bytearray(n)
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            out[pos:pos + length] = ram[off:off + length]
        self._walk(vaddr, n, _R, ip, copy)
        return bytes(out)

    def read_into(self, vaddr: int, buf: Any, ip: int = 0) -> None:
        mv = memoryview(buf).cast("B")
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            mv[pos:pos + length] = ram[off:off + length]
        self._walk(vaddr, len(mv), _R, ip, copy)

    def write(self, vaddr: int, data: Any, ip: int = 0) -> None:
        src = memoryview(data).cast("B")
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            ram[off:off + length] = src[pos:pos + length]
        self._walk(vaddr, len(src), _W, ip, copy)

    def fill(self, vaddr: int, n: int, byte: int = 0) -> None:
        ram = self.ram

        def put(off: int, pos: int, length: int) -> None:
            ram[off:off + length] = bytes([byte]) * length
        self._walk(vaddr, n, _W, 0, put)

    def view(self, vaddr: int, n: int, writable: bool = False) -> memoryview:
        """A zero-copy view of [vaddr, vaddr+n): the pages must be physically contiguous."""
        runs: list[tuple[int, int]] = []
        self._walk(vaddr, n, _RW if writable else _R, 0,
                   lambda off, pos, length: runs.append((off, length)))
        if len(runs) > 1:
            raise errors.InvalidArgument(f"0x{vaddr:x}+{n} is not backed by contiguous frames; "
                                         f"use read/write")
        off = runs[0][0] if runs else 0
        mv = self.ram[off:off + n]
        return mv if writable else mv.toreadonly()

    def mapped(self, vaddr: int, order: int = PAGE_SHIFT) -> list[list[int]]:
        """The kernel's page table (not the TLB) for a flexpage of ours."""
        return self.l4.mem_query(vaddr, order)

    def close(self) -> None:
        if self._old_handler is not None:
            _signal.signal(SHOOTDOWN_SIGNAL, self._old_handler)
            self._old_handler = None
        self.ram.release()
        self.mm.close()

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
