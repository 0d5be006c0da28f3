"""Memory Nitpicker composes from and into in bulk: zero-copy views, held across a whole paint.

    pins = Pins(vm)
    pins.add(vaddr, size, writable)          # a client buffer, or the scan-out memory
    pins.remove(vaddr)
    with pins.held():                        # every region's views valid until the end
        pins.read_into(vaddr, dst)           # bytes of a region into dst (a memoryview)
        pins.write_from(vaddr, src)          # src into a writable region (the client's put)
        pins.view(vaddr)                     # the region as one memoryview (contiguous only)
        pins.bus(vaddr, n)                   # [vaddr, vaddr+n) as physical (address, length) runs

Why: a copy through the VM (`VM.read_into`, `VM.write`) walks the TLB page by page; a
full-screen frame is 768 pages, twice per frame (the client's buffer, the screen). Here each
region is walked once into its physically contiguous runs (memoryviews of our RAM view),
and a paint copies with memoryview slice assignments: one per run and row run. Nitpicker
reads client buffers and writes the screen so; its client library (client.py) writes its
buffer so (one slice copy for a whole frame when moe gave contiguous frames).

Contract (kernel/user/vm.py, "bulk access"): a view of our address space is valid only until
the next TLB shootdown is acknowledged. `held()` checks the epoch on entry (`VM.moved`;
rebuilding every region's runs, `VM.runs`, if it moved: a frame we lost faults there,
`PageFault`, before anything is touched) and then defers the acknowledgement for its
duration (`VM.deferred`): the kernel waits up to SHOOTDOWN_MS for it, a paint takes
milliseconds.
Inside `held()` nothing may call the VM (its own accesses would end the deferral early).
A region whose frames are gone is empty from the rebuild on: a buffer reads as nothing (the
screen keeps what was there), and a writable one (the scan-out memory: the fb server died)
raises `PageFault` naming it; the caller removes it.

Ownership: the thread of the VM (Nitpicker's main thread; a client's drawing thread).
"""
from __future__ import annotations

from bisect import bisect_right
from contextlib import contextmanager
from typing import Iterator

from kernel.user.vm import VM, PageFault


class Region:
    """[vaddr, vaddr+size) of ours as runs: starts (offsets into the region) and views."""

    def __init__(self, vaddr: int, size: int, writable: bool) -> None:
        self.vaddr, self.size, self.writable = vaddr, size, writable
        self.starts: list[int] = []
        self.views: list[memoryview] = []
        self.phys: list[int] = []              # each run's physical address

    def build(self, vm: VM) -> None:
        runs = vm.runs(self.vaddr, self.size, self.writable)
        self.starts = [pos for pos, _ in runs]
        self.views = [view for _, view in runs]
        self.phys = [vm.translate(self.vaddr + pos) for pos in self.starts]   # TLB hits

    def release(self) -> None:
        for v in self.views:
            v.release()
        self.starts, self.views, self.phys = [], [], []

    def bus(self, off: int, n: int) -> list[tuple[int, int]]:
        """[off, off+n) of the region as physical (address, length) pieces, run by run."""
        if off < 0 or n < 1 or off + n > self.size:
            return []
        out = []
        i = bisect_right(self.starts, off) - 1
        pos = 0
        while pos < n:
            o = off + pos - self.starts[i]
            k = min(n - pos, len(self.views[i]) - o)
            out.append((self.phys[i] + o, k))
            pos += k
            i += 1
        return out

    def _pieces(self, off: int, n: int) -> Iterator[tuple[memoryview, int, int, int]]:
        """[off, off+n) of the region as (run view, offset in it, offset in the span,
        length), run by run."""
        pos = 0
        i = bisect_right(self.starts, off) - 1
        while pos < n:
            o = off + pos - self.starts[i]
            run = self.views[i]
            k = min(n - pos, len(run) - o)
            yield run, o, pos, k
            pos += k
            i += 1

    def read_into(self, off: int, dst: memoryview) -> None:
        for run, o, pos, k in self._pieces(off, len(dst)):
            dst[pos:pos + k] = run[o:o + k]

    def write_from(self, off: int, src: memoryview) -> None:
        for run, o, pos, k in self._pieces(off, len(src)):
            run[o:o + k] = src[pos:pos + k]


class Pins:
    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self.regions: dict[int, Region] = {}       # by vaddr
        self.epoch = -1                            # the VM epoch the runs were built under
        self.depth = 0

    def add(self, vaddr: int, size: int, writable: bool = False) -> None:
        self.remove(vaddr)
        self.regions[vaddr] = Region(vaddr, size, writable)
        self.epoch = -1                            # build it at the next held()

    def remove(self, vaddr: int) -> None:
        r = self.regions.pop(vaddr, None)
        if r is not None:
            r.release()

    def _rebuild(self) -> None:
        self.epoch = self.vm.sync()                # acknowledge what moved (drops the TLB)
        lost = []
        for r in list(self.regions.values()):
            r.release()
            try:
                r.build(self.vm)
            except PageFault:
                r.release()                        # gone: read as nothing from now on
                if r.writable:
                    lost.append(r.vaddr)
        if lost:
            raise PageFault(f"pinned memory gone at {', '.join(hex(v) for v in lost)}")

    @contextmanager
    def held(self) -> Iterator[None]:
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        while True:
            with self.vm.deferred():               # a shootdown signal waits for us now
                if not self.vm.moved(self.epoch):
                    self.depth = 1
                    try:
                        yield
                    finally:
                        self.depth = 0
                    return
            self._rebuild()                        # outside: it walks through the VM

    def region(self, vaddr: int) -> Region:
        r = self.regions.get(vaddr)
        if r is None:
            for r in self.regions.values():
                if r.vaddr <= vaddr < r.vaddr + r.size:
                    return r
            raise KeyError(f"no pinned region holds {vaddr:#x}")
        return r

    def read_into(self, vaddr: int, dst: memoryview) -> None:
        """Inside held(): len(dst) bytes from vaddr (one region) into dst."""
        assert self.depth, "read_into outside held()"
        r = self.region(vaddr)
        if r.views:
            r.read_into(vaddr - r.vaddr, dst)

    def write_from(self, vaddr: int, src: memoryview) -> None:
        """Inside held(): src into the writable region at vaddr (PageFault if it is gone or
        was not pinned writable)."""
        assert self.depth, "write_from outside held()"
        r = self.region(vaddr)
        if not r.writable or not r.views:
            raise PageFault(f"{vaddr:#x}: " + ("pinned read-only" if r.views else
                                                "its frames are gone"))
        if vaddr + len(src) > r.vaddr + r.size:
            raise PageFault(f"{vaddr:#x}+{len(src)} runs past the pinned region at "
                            f"{r.vaddr:#x}+{r.size:#x}")
        r.write_from(vaddr - r.vaddr, src)

    def bus(self, vaddr: int, n: int) -> list[tuple[int, int]]:
        """Inside held(): [vaddr, vaddr+n) (in one region) as physical (address, length)
        pieces, one per run of contiguous frames (for a device that reads it); [] if the
        region's frames are gone or the range leaves it."""
        assert self.depth, "bus outside held()"
        r = self.region(vaddr)
        return r.bus(vaddr - r.vaddr, n) if r.views else []

    def view(self, vaddr: int) -> memoryview:
        """Inside held(): the region at vaddr as one memoryview (it must be one run)."""
        assert self.depth, "view outside held()"
        r = self.regions[vaddr]
        if len(r.views) != 1:
            raise PageFault(f"{vaddr:#x}+{r.size:#x} is not backed by contiguous frames")
        return r.views[0]
