"""The DDEKit page table: which virtual ranges of the driver are backed by which physical ones.

    pt.set_region(virt, phys, size, kind)   # record a physically contiguous region
    pt.clear_region(virt) -> Region         # forget it (before its memory goes back)
    pt.virt_to_phys(va) -> int | None       # None: no region holds va
    pt.phys_to_virt(pa) -> int | None
    pt.region(va) -> Region | None; pt.kind(va); pt.size(va)

Every block DDEKit gets from sigma0 is physically contiguous and is recorded here
(servers/ddekit/memory.py does it), so any address DDEKit handed out can be translated for a
device register or a descriptor; a driver may record regions it got elsewhere. Regions never
overlap, in virtual or in physical space (a second record of the same frames is refused:
phys→virt must have one answer). Look-ups of a cleared region fail (None), at once.

Contract: thread-safe (one lock around the two sorted indexes).
"""
from __future__ import annotations

import bisect
import threading
from typing import NamedTuple


class Region(NamedTuple):
    virt: int
    phys: int
    size: int
    kind: str           # "contig", "large", "slab", or the driver's own word

    def contains(self, va: int, n: int = 1) -> bool:
        return self.virt <= va and va + n <= self.virt + self.size


class PageTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_virt: list[tuple[int, Region]] = []     # sorted by virt; guarded by _lock
        self._by_phys: list[tuple[int, Region]] = []     # sorted by phys; guarded by _lock

    @staticmethod
    def _find(index: list[tuple[int, Region]], addr: int, phys: bool) -> Region | None:
        i = bisect.bisect_right(index, addr, key=lambda e: e[0]) - 1
        if i < 0:
            return None
        r = index[i][1]
        start = r.phys if phys else r.virt
        return r if start <= addr < start + r.size else None

    def set_region(self, virt: int, phys: int, size: int, kind: str = "contig") -> Region:
        if size <= 0 or virt < 0 or phys < 0:
            raise ValueError(f"bad region virt {virt:#x} phys {phys:#x} size {size}")
        r = Region(virt, phys, size, kind)
        with self._lock:
            for index, start in ((self._by_virt, virt), (self._by_phys, phys)):
                i = bisect.bisect_left(index, start, key=lambda e: e[0])
                near = [index[j][1] for j in (i - 1, i) if 0 <= j < len(index)]
                for o in near:
                    a, b = (o.virt, virt) if index is self._by_virt else (o.phys, phys)
                    if a < b + size and b < a + o.size:
                        raise ValueError(f"region virt {virt:#x} phys {phys:#x} +{size:#x} "
                                         f"overlaps {o}")
            bisect.insort(self._by_virt, (virt, r), key=lambda e: e[0])
            bisect.insort(self._by_phys, (phys, r), key=lambda e: e[0])
        return r

    def clear_region(self, virt: int) -> Region:
        """Forget the region starting at `virt`; KeyError if none starts there."""
        with self._lock:
            r = self._find(self._by_virt, virt, False)
            if r is None or r.virt != virt:
                raise KeyError(f"no region starts at virtual {virt:#x}")
            self._by_virt.remove((r.virt, r))
            self._by_phys.remove((r.phys, r))
            return r

    def region(self, va: int) -> Region | None:
        with self._lock:
            return self._find(self._by_virt, va, False)

    def virt_to_phys(self, va: int) -> int | None:
        r = self.region(va)
        return None if r is None else r.phys + (va - r.virt)

    def phys_to_virt(self, pa: int) -> int | None:
        with self._lock:
            r = self._find(self._by_phys, pa, True)
        return None if r is None else r.virt + (pa - r.phys)

    def kind(self, va: int) -> str | None:
        r = self.region(va)
        return None if r is None else r.kind

    def size(self, va: int) -> int | None:
        r = self.region(va)
        return None if r is None else r.size

    def regions(self) -> list[Region]:
        with self._lock:
            return [r for _, r in self._by_virt]
