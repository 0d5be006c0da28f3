"""l4disk: the HAL block disk (hal/DEVICES.md, kind "disk"), a blk-mq driver.

The device works through a ring of 32-byte requests in DMA memory (Q_BASE/Q_SIZE, doorbell
Q_TAIL) in order, writes each entry's status word and raises its line when the ring runs
empty. We keep a ring of L4DISK_RING entries in coherent memory; a request becomes one entry
per segment (its sectors follow on from the previous entry's, which the device merges back
into one host I/O), its status words set to PENDING when written. The interrupt handler
walks the ring from the oldest entry while status words are no longer PENDING and ends each
request whose entries are all done: BLK_STS_IOERR if any of them failed. Several requests
are in flight: up to L4DISK_QUEUE_DEPTH tags, as long as the ring has room (else the block
layer retries after a completion).

Reset: a driver restarted after a crash finds the device possibly still working through
the dead driver's ring (its memory now refused by the IOMMU), and its interrupt line still
in service (the dead driver never sent EOI: no interrupt would be delivered again). Probe
ends that interrupt, abandons what the dead driver left queued (Q_TAIL := Q_HEAD: a ring
the IOMMU refuses would keep the device busy for good), gives the device the new ring (Q_BASE
is accepted only while the queue is idle; it resets head and tail) and clears any error,
retrying until all of it holds.

Lost interrupts (the HAL's `irq_lost` knob, or one raised while the line was masked): a
watchdog timer (mod_timer, like blk-mq's request timeout) reaps the ring every WATCHDOG_MS
while requests are in flight, so a completion is never missed for good.

Locking: `lock` guards the ring (tail, head, free entries, owners); queue_rq (any thread)
and the interrupt handler take it; requests are ended outside it.
"""
from __future__ import annotations

import struct
from typing import Any

from servers.dde_linux.block import (
    BLK_STS_IOERR, BLK_STS_OK, BLK_STS_RESOURCE, REQ_OP_FLUSH, REQ_OP_READ, REQ_OP_WRITE,
    SECTOR_SHIFT, blk_mq_alloc_disk, blk_mq_alloc_tag_set, blk_mq_end_request,
    blk_mq_free_tag_set, blk_mq_hw_ctx, blk_mq_ops, blk_mq_queue_data, blk_mq_start_request,
    blk_mq_tag_set, blk_queue_max_hw_sectors, blk_queue_max_segments, blk_queue_write_cache,
    blk_rq_pos, del_gendisk, gendisk, put_disk, req_op, request, rq_for_each_segment,
    set_capacity, add_disk)
from servers.dde_linux.device import (
    Device, dev_get_drvdata, dev_info, dev_set_drvdata, platform_device_id, platform_driver,
    platform_driver_register, platform_driver_unregister, platform_get_irq)
from servers.dde_linux.dma import (
    DMA_BIT_MASK, dma_alloc_coherent, dma_free_coherent, dma_set_mask)
from servers.dde_linux.io import IoMem, ioremap, iounmap, readq, writeq, writeq_posted
from servers.dde_linux.irq import IRQ_HANDLED, IRQ_NONE, free_irq, request_irq
from servers.dde_linux.kernel import (
    EBUSY, ENOMEM, KERN_ERR, jiffies, mem_read, mem_write, module_exit, module_init,
    msecs_to_jiffies, msleep, printk, time_after)
from servers.dde_linux.sync import spin_lock, spin_unlock, spinlock_t
from servers.dde_linux.timer import del_timer_sync, mod_timer, timer_list, timer_pending, timer_setup

# Registers (hal/DEVICES.md, "Block disk")
DISK_ERROR, DISK_IRQ_CTRL, DISK_SECTORS = 2, 4, 8
IRQ_CTRL_EOI = 3
DISK_Q_BASE, DISK_Q_SIZE, DISK_Q_TAIL, DISK_Q_HEAD = 13, 14, 15, 16
DISK_OP = {REQ_OP_READ: 1, REQ_OP_WRITE: 2, REQ_OP_FLUSH: 3}
DISK_MAX_SECTORS = 2048

L4DISK_RING = 1024                   # ring entries (the device's largest queue)
L4DISK_QUEUE_DEPTH = 64              # tags: requests in flight
L4DISK_MAX_SEGMENTS = 32             # ring entries one request may take
STATUS_PENDING = 0xFFFF_FFFF
ENTRY = struct.Struct("<IIQQII")     # op, count, lba, addr, status, 0
RESET_MS = 5000
WATCHDOG_MS = 250                    # reap the ring this often while requests are in flight


class l4disk_dev:
    def __init__(self, pdev: Device, regs: IoMem) -> None:
        self.pdev = pdev
        self.regs = regs
        self.lock = spinlock_t()
        self.ring_cpu = 0
        self.ring_dma = 0
        self.tail = 0                # next entry we fill; lock
        self.head = 0                # oldest entry not yet seen done; lock
        self.free = L4DISK_RING - 1  # one entry stays free (head == tail: empty); lock
        self.owner: list[request | None] = [None] * L4DISK_RING   # entry -> its request
        self.last: list[bool] = [False] * L4DISK_RING             # the request's last entry
        self.irq = -1
        self.tag_set: blk_mq_tag_set | None = None
        self.disk: gendisk | None = None
        self.watchdog = timer_list()
        timer_setup(self.watchdog, l4disk_watchdog, 0)
        self.watchdog.dd = self                                  # type: ignore[attr-defined]


_index = 0


# -- submission -----------------------------------------------------------------------------
def l4disk_queue_rq(hctx: blk_mq_hw_ctx, bd: blk_mq_queue_data) -> int:
    dd: l4disk_dev = hctx.driver_data
    rq = bd.rq
    op = DISK_OP[req_op(rq)]
    if req_op(rq) == REQ_OP_FLUSH:
        entries = [ENTRY.pack(op, 1, 0, 0, STATUS_PENDING, 0)]
    else:
        entries, lba = [], blk_rq_pos(rq)
        for bv in rq_for_each_segment(rq):
            count = bv.bv_len >> SECTOR_SHIFT
            entries.append(ENTRY.pack(op, count, lba, bv.bv_dma, STATUS_PENDING, 0))
            lba += count
    spin_lock(dd.lock)
    try:
        if dd.free < len(entries):
            return BLK_STS_RESOURCE
        blk_mq_start_request(rq)
        rq.pdu["error"] = 0
        first = dd.tail
        for i in range(len(entries)):
            idx = (first + i) % L4DISK_RING
            dd.owner[idx], dd.last[idx] = rq, i == len(entries) - 1
        l4disk_write_ring(dd, first, b"".join(entries))
        dd.tail = (first + len(entries)) % L4DISK_RING
        dd.free -= len(entries)
        if bd.last:
            writeq_posted(dd.regs, DISK_Q_TAIL, dd.tail)  # the doorbell
    finally:
        spin_unlock(dd.lock)
    if not timer_pending(dd.watchdog):
        mod_timer(dd.watchdog, jiffies() + msecs_to_jiffies(WATCHDOG_MS))
    return BLK_STS_OK


def l4disk_commit_rqs(hctx: blk_mq_hw_ctx) -> None:
    dd: l4disk_dev = hctx.driver_data
    spin_lock(dd.lock)
    try:
        writeq_posted(dd.regs, DISK_Q_TAIL, dd.tail)
    finally:
        spin_unlock(dd.lock)


def l4disk_write_ring(dd: l4disk_dev, first: int, data: bytes) -> None:
    """Entries from index `first`, wrapping at the end of the ring."""
    room = (L4DISK_RING - first) * ENTRY.size
    mem_write(dd.ring_cpu + first * ENTRY.size, data[:room])
    if len(data) > room:
        mem_write(dd.ring_cpu, data[room:])


# -- completion -------------------------------------------------------------------------------
def l4disk_irq(irq: int, dev_id: Any) -> int:
    dd: l4disk_dev = dev_id
    done = l4disk_reap(dd)
    if not done and readq(dd.regs, DISK_ERROR):
        l4disk_fail_all(dd)               # the device refused the ring itself (DMA_DENIED)
        return IRQ_HANDLED
    return IRQ_HANDLED if done else IRQ_NONE


def l4disk_watchdog(t: timer_list) -> None:
    dd: l4disk_dev = t.dd                                        # type: ignore[attr-defined]
    l4disk_reap(dd)
    spin_lock(dd.lock)
    busy = dd.free < L4DISK_RING - 1
    spin_unlock(dd.lock)
    if busy:
        mod_timer(t, jiffies() + msecs_to_jiffies(WATCHDOG_MS))


def l4disk_reap(dd: l4disk_dev) -> list[request]:
    """End every request whose ring entries the device has done; answers them."""
    done: list[request] = []
    spin_lock(dd.lock)
    try:
        busy = L4DISK_RING - 1 - dd.free
        ring = l4disk_read_ring(dd, dd.head, busy) if busy else b""
        n = 0
        while n < busy:
            status = int.from_bytes(ring[n * ENTRY.size + 24:n * ENTRY.size + 28], "little")
            if status == STATUS_PENDING:
                break                     # the device takes entries in order: the rest wait
            idx = (dd.head + n) % L4DISK_RING
            rq = dd.owner[idx]
            assert rq is not None
            if status:
                rq.pdu["error"] = status
            if dd.last[idx]:
                done.append(rq)
            dd.owner[idx] = None
            n += 1
        dd.head = (dd.head + n) % L4DISK_RING
        dd.free += n
    finally:
        spin_unlock(dd.lock)
    for rq in done:
        blk_mq_end_request(rq, BLK_STS_IOERR if rq.pdu["error"] else BLK_STS_OK)
    return done


def l4disk_read_ring(dd: l4disk_dev, first: int, n: int) -> bytes:
    room = min(n, L4DISK_RING - first)
    out = mem_read(dd.ring_cpu + first * ENTRY.size, room * ENTRY.size)
    if n > room:
        out += mem_read(dd.ring_cpu, (n - room) * ENTRY.size)
    return out


def l4disk_fail_all(dd: l4disk_dev) -> None:
    """End every request on the ring with an I/O error and start the ring afresh."""
    spin_lock(dd.lock)
    try:
        failed = [dd.owner[i] for i in range(L4DISK_RING) if dd.owner[i] is not None and dd.last[i]]
        dd.owner = [None] * L4DISK_RING
        dd.head = dd.tail = 0
        dd.free = L4DISK_RING - 1
    finally:
        spin_unlock(dd.lock)
    printk(KERN_ERR + "l4disk: device error %d: failing %d requests",
           readq(dd.regs, DISK_ERROR), len(failed))
    l4disk_reset(dd)
    for rq in failed:
        if rq is not None:
            blk_mq_end_request(rq, BLK_STS_IOERR)


# -- set-up and reset -------------------------------------------------------------------------
def l4disk_reset(dd: l4disk_dev) -> int:
    """Give the device our ring; it takes one only while idle (a dead driver's may still run)."""
    deadline = jiffies() + msecs_to_jiffies(RESET_MS)
    writeq(dd.regs, DISK_IRQ_CTRL, IRQ_CTRL_EOI)     # a dead driver's interrupt in service
    while True:
        # what a dead driver left queued is abandoned: its ring may be memory the IOMMU now
        # refuses, and the device would stay busy (never idle) with it
        writeq(dd.regs, DISK_Q_TAIL, readq(dd.regs, DISK_Q_HEAD))
        writeq(dd.regs, DISK_ERROR, 0)
        writeq(dd.regs, DISK_Q_BASE, dd.ring_dma)
        writeq(dd.regs, DISK_Q_SIZE, L4DISK_RING)
        if readq(dd.regs, DISK_Q_BASE) == dd.ring_dma and readq(dd.regs, DISK_Q_SIZE) == L4DISK_RING \
                and not readq(dd.regs, DISK_ERROR) and readq(dd.regs, DISK_Q_HEAD) == 0:
            return 0
        if time_after(jiffies(), deadline):
            return -EBUSY
        msleep(10)


def l4disk_probe(pdev: Device) -> int:
    global _index
    dd = l4disk_dev(pdev, ioremap(pdev))
    dev_set_drvdata(pdev, dd)
    dma_set_mask(pdev, DMA_BIT_MASK(64))
    dd.ring_cpu, dd.ring_dma = dma_alloc_coherent(pdev, L4DISK_RING * ENTRY.size)
    if not dd.ring_cpu:
        return -ENOMEM
    ret = l4disk_reset(dd)
    if ret:
        dma_free_coherent(pdev, L4DISK_RING * ENTRY.size, dd.ring_cpu, dd.ring_dma)
        return ret
    dd.irq = platform_get_irq(pdev, 0)
    ret = request_irq(dd.irq, l4disk_irq, 0, "l4disk", dd)
    if ret:
        dma_free_coherent(pdev, L4DISK_RING * ENTRY.size, dd.ring_cpu, dd.ring_dma)
        return ret
    dd.tag_set = blk_mq_tag_set(ops=blk_mq_ops(queue_rq=l4disk_queue_rq,
                                               commit_rqs=l4disk_commit_rqs),
                                queue_depth=L4DISK_QUEUE_DEPTH, driver_data=dd)
    blk_mq_alloc_tag_set(dd.tag_set)
    dd.disk = disk = blk_mq_alloc_disk(dd.tag_set, dd)
    assert disk.queue is not None
    blk_queue_max_segments(disk.queue, L4DISK_MAX_SEGMENTS)
    blk_queue_max_hw_sectors(disk.queue, DISK_MAX_SECTORS)
    blk_queue_write_cache(disk.queue, True, False)
    disk.disk_name = f"l4disk{_index}"
    _index += 1
    set_capacity(disk, readq(dd.regs, DISK_SECTORS))
    ret = add_disk(disk)
    if ret:
        l4disk_remove(pdev)
        return ret
    dev_info(pdev, "%s: ring of %d entries at %#x, irq %d", disk.disk_name, L4DISK_RING,
             dd.ring_dma, dd.irq)
    return 0


def l4disk_remove(pdev: Device) -> None:
    dd: l4disk_dev = dev_get_drvdata(pdev)
    del_timer_sync(dd.watchdog)
    if dd.disk is not None:
        del_gendisk(dd.disk)              # requests still in flight end with an I/O error
        put_disk(dd.disk)
    if dd.irq >= 0:
        free_irq(dd.irq, dd)
    if dd.tag_set is not None:
        blk_mq_free_tag_set(dd.tag_set)
    if dd.ring_cpu:
        dma_free_coherent(pdev, L4DISK_RING * ENTRY.size, dd.ring_cpu, dd.ring_dma)
    iounmap(dd.regs)


l4disk_driver = platform_driver(name="l4disk", probe=l4disk_probe, remove=l4disk_remove,
                                id_table=[platform_device_id("disk")])


@module_init
def l4disk_init() -> int:
    return platform_driver_register(l4disk_driver)


@module_exit
def l4disk_exit() -> None:
    platform_driver_unregister(l4disk_driver)
