"""DDE/Linux DMA mapping: coherent buffers and streaming mappings, with bus addresses.

    cpu, handle = dma_alloc_coherent(dev, size)         # DDEKit contiguous memory
    dma_free_coherent(dev, size, cpu, handle)
    handle = dma_map_single(dev, cpu_addr, size, DMA_TO_DEVICE)   # DMA_MAPPING_ERROR on failure
    sg = dma_map_sg(dev, [(cpu_addr, len), ...], direction)       # [(bus, len)], [] on failure
    buf = pin_user_pages(dev, cpu_addr, size); buf.map_sg(offset, n, direction)   # cached
    dma_unmap_single(dev, handle, size, direction)
    dma_set_mask(dev, DMA_BIT_MASK(64)) -> 0
    dma_mapping_error(dev, handle) -> bool

A bus address is the physical address (the HAL has no address translation: its IOMMU only
checks, hal/iommu.py). Coherent memory is a DDEKit contiguous block (`contig_alloc`), so it is
in the driver's page table and the IOMMU lets the device reach it; nothing else of RAM is.

Streaming mappings take any address of the task: DDEKit memory (kmalloc, coherent blocks) by
DDEKit's page table; other memory the task maps — a client's dataspace a device server
attached, faulted in through its pager — by the task's VM (`translate`, for the access the
direction needs: the device writing memory needs the page writable). The range must be
physically contiguous (one page always is); else, or if nothing maps it, the answer is
DMA_MAPPING_ERROR. Direction: DMA_TO_DEVICE the device reads memory, DMA_FROM_DEVICE it writes.

Contract: a mapping stays valid only while the memory stays mapped; a page given back before
the device uses it is refused by the IOMMU (the request fails, nothing else is touched).
`dma_set_mask` accepts any mask covering the machine's RAM (every address here is below it).
"""
from __future__ import annotations

from typing import Any, Sequence

from kernel.abi import PAGE_SIZE, MemRights
from servers.ddekit import env as _env
from servers.ddekit import memory as _mem

DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE = 0, 1, 2, 3
DMA_MAPPING_ERROR = 2 ** 64 - 1
_R, _W = int(MemRights.R), int(MemRights.W)     # page-fault access kinds


def DMA_BIT_MASK(n: int) -> int:
    return 2 ** 64 - 1 if n >= 64 else (1 << n) - 1


def dma_set_mask(dev: Any, mask: int) -> int:
    dev.dma_mask = mask
    return 0


dma_set_mask_and_coherent = dma_set_mask


def dma_alloc_coherent(dev: Any, size: int, gfp: int = 0,
                       align: int = PAGE_SIZE) -> tuple[int, int]:
    """(cpu address, bus address) of `size` zeroed contiguous bytes; (0, DMA_MAPPING_ERROR)
    when sigma0 has none (Linux answers NULL)."""
    try:
        cpu = _mem.contig_alloc(size, align=align)
    except _mem.OutOfMemory:
        return 0, DMA_MAPPING_ERROR
    _mem.fill(cpu, size, 0)
    pa = _mem.virt_to_phys(cpu)
    assert pa is not None
    return cpu, pa


def dma_free_coherent(dev: Any, size: int, cpu_addr: int, dma_handle: int) -> None:
    if _mem.virt_to_phys(cpu_addr) != dma_handle:
        raise _mem.BadAddress(f"dma_free_coherent: {cpu_addr:#x} is not the coherent block "
                              f"of bus address {dma_handle:#x}")
    _mem.contig_free(cpu_addr)


def dma_map_single(dev: Any, cpu_addr: int, size: int, direction: int) -> int:
    if size <= 0:
        return DMA_MAPPING_ERROR
    r = _mem.pgtab.region(cpu_addr)
    if r is not None:                       # DDEKit memory: its page table knows
        return r.phys + (cpu_addr - r.virt) if r.contains(cpu_addr, size) else DMA_MAPPING_ERROR
    access = _R | (_W if direction in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL) else 0)
    env = _env.get()
    try:
        with env.mem_lock:
            first = env.vm.translate(cpu_addr, access)
            page = cpu_addr - cpu_addr % PAGE_SIZE + PAGE_SIZE
            while page < cpu_addr + size:   # every further page must follow physically
                if env.vm.translate(page, access) != first + (page - cpu_addr):
                    return DMA_MAPPING_ERROR
                page += PAGE_SIZE
    except Exception:                       # noqa: BLE001 - not mapped: Linux's mapping error
        return DMA_MAPPING_ERROR
    return first


def dma_map_sg(dev: Any, sgl: Sequence[tuple[int, int]], direction: int) -> list[tuple[int, int]]:
    """Map a scatter list of (cpu address, length) of any memory of the task (as
    dma_map_single) in one go: answers (bus address, length) runs, physically adjacent
    pieces merged (Linux's dma_map_sg may merge too), or [] if any page is not mapped."""
    access = _R | (_W if direction in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL) else 0)
    out: list[tuple[int, int]] = []
    env = _env.get()
    try:
        with env.mem_lock:
            translate = env.vm.translate
            for va, n in sgl:
                end = va + n
                while va < end:
                    r = _mem.pgtab.region(va) if va >= _mem.VBASE else None
                    if r is not None:
                        pa, chunk = r.phys + (va - r.virt), min(end, r.virt + r.size) - va
                    else:
                        pa = translate(va, access)
                        chunk = min(end, va - va % PAGE_SIZE + PAGE_SIZE) - va
                    if out and out[-1][0] + out[-1][1] == pa:
                        out[-1] = (out[-1][0], out[-1][1] + chunk)
                    else:
                        out.append((pa, chunk))
                    va += chunk
    except Exception:                       # noqa: BLE001 - not mapped: a mapping error
        return []
    return out


class PinnedRange:
    """A range of the task's memory a device server DMAs into again and again (a client's
    buffer): its pages' bus addresses are remembered, so mapping a piece of it costs no
    translation per page. Linux pins user pages for this (pin_user_pages); here the pages
    are the VM's, and what may move them is a shootdown (an unmap of ours): every remembered
    address is dropped when the VM's shootdown epoch moved since it was learnt (checked by
    translating the piece's first page, which syncs the epoch). The IOMMU still checks every
    command: a stale address could only be refused, never reach memory that is not ours."""

    def __init__(self, dev: Any, cpu_addr: int, size: int) -> None:
        self.dev, self.addr, self.size = dev, cpu_addr, size
        self.pages: dict[int, tuple[int, int]] = {}    # page index -> (bus addr, access)
        self.epoch = -1

    def map_sg(self, offset: int, n: int, direction: int) -> list[tuple[int, int]]:
        if offset < 0 or n <= 0 or offset + n > self.size:
            return []
        access = _R | (_W if direction in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL) else 0)
        env = _env.get()
        out: list[tuple[int, int]] = []
        va, end = self.addr + offset, self.addr + offset + n
        try:
            with env.mem_lock:
                first = env.vm.translate(va, access)      # syncs the epoch
                if env.vm.seen != self.epoch:
                    self.pages.clear()
                    self.epoch = env.vm.seen
                while va < end:
                    idx = (va - self.addr) // PAGE_SIZE
                    got = self.pages.get(idx)
                    if got is None or got[1] & access != access:
                        base = va - va % PAGE_SIZE
                        got = (first - va % PAGE_SIZE if base <= va == self.addr + offset
                               else env.vm.translate(base, access), access)
                        self.pages[idx] = got
                    pa = got[0] + va % PAGE_SIZE
                    chunk = min(end, va - va % PAGE_SIZE + PAGE_SIZE) - va
                    if out and out[-1][0] + out[-1][1] == pa:
                        out[-1] = (out[-1][0], out[-1][1] + chunk)
                    else:
                        out.append((pa, chunk))
                    va += chunk
        except Exception:                   # noqa: BLE001 - not mapped: a mapping error
            return []
        return out


def pin_user_pages(dev: Any, cpu_addr: int, size: int) -> PinnedRange:
    return PinnedRange(dev, cpu_addr, size)


def dma_unmap_sg(dev: Any, sgl: Sequence[tuple[int, int]], direction: int) -> None:
    """Nothing to undo (see dma_unmap_single)."""


def dma_unmap_single(dev: Any, dma_handle: int, size: int, direction: int) -> None:
    """Nothing to undo: no bounce buffers, no translation entries (the IOMMU only checks)."""


def dma_mapping_error(dev: Any, dma_handle: int) -> bool:
    return dma_handle == DMA_MAPPING_ERROR
