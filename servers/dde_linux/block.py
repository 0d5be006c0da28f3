"""DDE/Linux block layer: gendisk, a blk-mq request queue, requests with segments and tags.

Driver side (Linux's blk-mq, one hardware queue):

    set = blk_mq_tag_set(ops=blk_mq_ops(queue_rq=my_queue_rq), queue_depth=32)
    blk_mq_alloc_tag_set(set)
    disk = blk_mq_alloc_disk(set, my_data)          # or alloc_disk() + blk_mq_init_queue(set)
    disk.disk_name = "l4disk0"; set_capacity(disk, sectors); add_disk(disk)
    def my_queue_rq(hctx, bd):                      # bd.rq, bd.last (ring the doorbell)
        rq = bd.rq; blk_mq_start_request(rq)
        req_op(rq), rq_data_dir(rq), blk_rq_pos(rq), blk_rq_sectors(rq), rq.tag
        for bv in rq_for_each_segment(rq): bv.bv_dma, bv.bv_len
        return BLK_STS_OK                           # BLK_STS_RESOURCE: no room, retried later
    blk_mq_end_request(rq, BLK_STS_OK | BLK_STS_IOERR)     # from the completion interrupt
    del_gendisk(disk); put_disk(disk); blk_mq_free_tag_set(set)

Upper side (Linux's submit_bio, for what sits on a disk: here the block device server):

    disk = get_disk("l4disk0")
    rq = blk_submit(disk, REQ_OP_WRITE, sector, [bio_vec(dma, length), ...], end_io, data)
    blk_submit_batch(disk, [(op, sector, segments, end_io, data), ...])   # one doorbell
    end_io(rq, status) runs once, from the thread that ended the request

Segments are bio_vecs holding bus addresses (mapped by the submitter with dma_map_single),
so a driver hands them to its device as they are: scatter-gather, no copy.

Contracts:
- Every request has a tag in 0..queue_depth-1, unique among requests in flight; at most
  queue_depth requests are in flight. `blk_submit` waits for a free tag (a completion frees
  one). Checked before a tag is taken (`BlkError`): the op, 1..max_segments segments of whole
  sectors whose sum is at most max_hw_sectors, the range inside the capacity; a FLUSH has no
  segments.
- queue_rq answering BLK_STS_RESOURCE puts the request on the hardware context's dispatch
  list; it is dispatched again after the next completion (from the "kblockd" work queue,
  never inside the completing thread, which may hold the driver's lock). Any other non-OK
  answer ends the request with that status.
- blk_mq_end_request calls end_io, then frees the tag. Ending a request twice is a bug
  (WARN, ignored). del_gendisk ends every request still in flight with BLK_STS_IOERR.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from . import workqueue as _wq
from .kernel import KERN_INFO, WARN_ON, jiffies, printk

SECTOR_SHIFT, SECTOR_SIZE = 9, 512
READ, WRITE = 0, 1
REQ_OP_READ, REQ_OP_WRITE, REQ_OP_FLUSH = 0, 1, 2
REQ_FUA = 1 << 17
BLK_STS_OK, BLK_STS_NOTSUPP, BLK_STS_TIMEOUT, BLK_STS_RESOURCE, BLK_STS_IOERR = 0, 1, 2, 9, 10
BLK_STS_DEV_RESOURCE = 13
BLK_MQ_F_SHOULD_MERGE = 0x1


class BlkError(ValueError):
    """A request the block layer refuses before it reaches the driver (the submitter's bug)."""


@dataclass
class bio_vec:
    bv_dma: int                  # bus address of the segment
    bv_len: int                  # bytes
    bv_virt: int = 0             # the submitter's address of it (0: not needed)


EndIo = Callable[["request", int], Any]


@dataclass
class request:
    q: "request_queue"
    tag: int
    cmd_flags: int
    sector: int                  # first sector (blk_rq_pos)
    data_len: int                # bytes (blk_rq_bytes)
    bio_vecs: list[bio_vec]
    end_io: EndIo | None
    end_io_data: Any = None
    pdu: dict[str, Any] = field(default_factory=dict)   # the driver's per-request data
    started: bool = False
    start_time: int = 0
    ended: bool = False
    status: int = BLK_STS_OK

    @property
    def nr_sectors(self) -> int:
        return self.data_len >> SECTOR_SHIFT


def req_op(rq: request) -> int:
    return rq.cmd_flags & 0xFF


def rq_data_dir(rq: request) -> int:
    return WRITE if req_op(rq) == REQ_OP_WRITE else READ


def blk_rq_pos(rq: request) -> int:
    return rq.sector


def blk_rq_bytes(rq: request) -> int:
    return rq.data_len


def blk_rq_sectors(rq: request) -> int:
    return blk_rq_bytes(rq) >> SECTOR_SHIFT


def blk_rq_nr_phys_segments(rq: request) -> int:
    return len(rq.bio_vecs)


def rq_for_each_segment(rq: request) -> Iterator[bio_vec]:
    return iter(rq.bio_vecs)


def blk_mq_rq_to_pdu(rq: request) -> dict[str, Any]:
    return rq.pdu


# -- the driver's side ------------------------------------------------------------------------
@dataclass
class blk_mq_queue_data:
    rq: request
    last: bool


@dataclass
class blk_mq_ops:
    queue_rq: Callable[["blk_mq_hw_ctx", blk_mq_queue_data], int]
    commit_rqs: Callable[["blk_mq_hw_ctx"], Any] | None = None
    complete: Callable[[request], Any] | None = None


@dataclass
class blk_mq_tag_set:
    ops: blk_mq_ops
    queue_depth: int = 32
    nr_hw_queues: int = 1
    cmd_size: int = 0
    flags: int = 0
    driver_data: Any = None
    allocated: bool = False


def blk_mq_alloc_tag_set(set_: blk_mq_tag_set) -> int:
    if not 1 <= set_.queue_depth <= 4096 or set_.nr_hw_queues != 1:
        return -22
    set_.allocated = True
    return 0


def blk_mq_free_tag_set(set_: blk_mq_tag_set) -> None:
    set_.allocated = False


@dataclass
class queue_limits:
    max_segments: int = 128
    max_hw_sectors: int = 2048
    logical_block_size: int = SECTOR_SIZE
    write_cache: bool = False


class blk_mq_hw_ctx:
    def __init__(self, q: "request_queue") -> None:
        self.queue = q
        self.driver_data: Any = None
        self.dispatch: deque[request] = deque()     # requests the driver had no room for


class request_queue:
    """One hardware queue; `lock` guards the tags, the in-flight table and the dispatch list."""

    def __init__(self, set_: blk_mq_tag_set, queuedata: Any = None) -> None:
        self.tag_set = set_
        self.queuedata = queuedata
        self.limits = queue_limits()
        self.hctx = blk_mq_hw_ctx(self)
        self.hctx.driver_data = set_.driver_data
        self.lock = threading.Condition()
        self.free_tags = list(range(set_.queue_depth - 1, -1, -1))   # lock
        self.inflight: dict[int, request] = {}                        # tag -> request; lock
        self.dying = False
        self.kick = _wq.work_struct(lambda w: self.run_hw_queue())
        self.stats = {"submitted": 0, "completed": 0, "errors": 0, "requeued": 0,
                      "max_inflight": 0}

    # Submission: the caller holds no driver lock; queue_rq runs in the caller's thread.
    def dispatch(self, rqs: Sequence[request]) -> None:
        ops = self.tag_set.ops
        queued_any = rang = False
        for i, rq in enumerate(rqs):
            with self.lock:
                if self.hctx.dispatch:          # keep the order: behind the waiting ones
                    self.hctx.dispatch.append(rq)
                    continue
            st = ops.queue_rq(self.hctx, blk_mq_queue_data(rq, i == len(rqs) - 1))
            if st in (BLK_STS_RESOURCE, BLK_STS_DEV_RESOURCE):
                with self.lock:
                    self.hctx.dispatch.append(rq)
                    self.stats["requeued"] += 1
            elif st != BLK_STS_OK:
                blk_mq_end_request(rq, st)
            else:
                queued_any = True
                rang = i == len(rqs) - 1
        if queued_any and not rang and ops.commit_rqs is not None:
            ops.commit_rqs(self.hctx)           # ring the doorbell for what went in
        if rqs and len(self.hctx.dispatch) and not self.inflight_started():
            _wq.schedule_work(self.kick)

    def inflight_started(self) -> bool:
        with self.lock:
            return any(r.started for r in self.inflight.values())

    def run_hw_queue(self) -> None:
        with self.lock:
            waiting = list(self.hctx.dispatch)
            self.hctx.dispatch.clear()
        if waiting:
            self.dispatch(waiting)


def blk_mq_init_queue(set_: blk_mq_tag_set) -> request_queue:
    return request_queue(set_)


def blk_queue_max_segments(q: request_queue, n: int) -> None:
    q.limits.max_segments = n


def blk_queue_max_hw_sectors(q: request_queue, n: int) -> None:
    q.limits.max_hw_sectors = n


def blk_queue_logical_block_size(q: request_queue, n: int) -> None:
    q.limits.logical_block_size = n


def blk_queue_write_cache(q: request_queue, wc: bool, fua: bool) -> None:
    q.limits.write_cache = wc


def blk_mq_start_request(rq: request) -> None:
    rq.started = True
    rq.start_time = jiffies()


def blk_mq_end_request(rq: request, status: int) -> None:
    q = rq.q
    with q.lock:
        if WARN_ON(rq.ended):
            return
        rq.ended, rq.status = True, status
        q.stats["completed"] += 1
        if status != BLK_STS_OK:
            q.stats["errors"] += 1
    try:
        if rq.end_io is not None:
            rq.end_io(rq, status)
    finally:
        with q.lock:
            q.inflight.pop(rq.tag, None)
            q.free_tags.append(rq.tag)
            q.lock.notify_all()
            again = bool(q.hctx.dispatch)
        if again:
            _wq.schedule_work(q.kick)


def blk_mq_complete_request(rq: request) -> None:
    ops = rq.q.tag_set.ops
    if ops.complete is not None:
        ops.complete(rq)
    else:
        blk_mq_end_request(rq, rq.status)


def blk_mq_tag_to_rq(q: request_queue, tag: int) -> request | None:
    with q.lock:
        return q.inflight.get(tag)


# -- gendisk ----------------------------------------------------------------------------------
@dataclass
class gendisk:
    disk_name: str = ""
    major: int = 0
    first_minor: int = 0
    minors: int = 1
    queue: request_queue | None = None
    private_data: Any = None
    fops: Any = None
    capacity: int = 0                  # sectors
    ro: bool = False
    added: bool = False


_lock = threading.Lock()
_disks: dict[str, gendisk] = {}        # added disks by name; _lock
_majors = itertools.count(240)         # Linux's "local/experimental" majors


def alloc_disk(minors: int = 1) -> gendisk:
    return gendisk(minors=minors)


def blk_alloc_disk(queuedata: Any = None) -> gendisk:
    return gendisk(private_data=queuedata)


def blk_mq_alloc_disk(set_: blk_mq_tag_set, queuedata: Any = None) -> gendisk:
    return gendisk(queue=request_queue(set_, queuedata), private_data=queuedata)


def register_blkdev(major: int, name: str) -> int:
    return next(_majors) if major == 0 else major


def unregister_blkdev(major: int, name: str) -> None:
    pass


def set_capacity(disk: gendisk, sectors: int) -> None:
    disk.capacity = int(sectors)


def get_capacity(disk: gendisk) -> int:
    return disk.capacity


def set_disk_ro(disk: gendisk, ro: bool) -> None:
    disk.ro = bool(ro)


def add_disk(disk: gendisk) -> int:
    if not disk.disk_name or disk.queue is None:
        return -22
    with _lock:
        if disk.disk_name in _disks:
            return -17
        _disks[disk.disk_name] = disk
    disk.added = True
    printk(KERN_INFO + "%s: %d sectors (%d MiB)", disk.disk_name, disk.capacity,
           disk.capacity >> 11)
    return 0


def del_gendisk(disk: gendisk) -> None:
    with _lock:
        _disks.pop(disk.disk_name, None)
    disk.added = False
    q = disk.queue
    if q is None:
        return
    with q.lock:
        q.dying = True
        left = list(q.inflight.values()) + list(q.hctx.dispatch)
        q.hctx.dispatch.clear()
    for rq in left:
        if not rq.ended:
            blk_mq_end_request(rq, BLK_STS_IOERR)


def put_disk(disk: gendisk) -> None:
    disk.queue = None


def get_disk(name: str) -> gendisk | None:
    with _lock:
        return _disks.get(name)


def disks() -> list[gendisk]:
    with _lock:
        return list(_disks.values())


# -- the upper side: submitting requests --------------------------------------------------------
Submission = tuple[int, int, Sequence[bio_vec], EndIo | None, Any]


def _check(disk: gendisk, op: int, sector: int, segs: Sequence[bio_vec]) -> int:
    q = disk.queue
    if q is None or not disk.added or q.dying:
        raise BlkError(f"{disk.disk_name}: the disk is gone")
    if op == REQ_OP_FLUSH:
        if segs:
            raise BlkError("a flush carries no data")
        return 0
    if op not in (REQ_OP_READ, REQ_OP_WRITE):
        raise BlkError(f"unknown op {op}")
    if op == REQ_OP_WRITE and disk.ro:
        raise BlkError(f"{disk.disk_name} is read-only")
    if not 1 <= len(segs) <= q.limits.max_segments:
        raise BlkError(f"{len(segs)} segments: 1..{q.limits.max_segments}")
    n = sum(s.bv_len for s in segs)
    if any(s.bv_len <= 0 or s.bv_len % SECTOR_SIZE for s in segs):
        raise BlkError("segments must be whole sectors")
    if n >> SECTOR_SHIFT > q.limits.max_hw_sectors:
        raise BlkError(f"{n >> SECTOR_SHIFT} sectors: more than {q.limits.max_hw_sectors}")
    if sector < 0 or sector + (n >> SECTOR_SHIFT) > disk.capacity:
        raise BlkError(f"sectors {sector}+{n >> SECTOR_SHIFT} beyond {disk.capacity}")
    return n


def _make(disk: gendisk, sub: Submission, checked: bool = False) -> request:
    op, sector, segs, end_io, data = sub
    n = sum(s.bv_len for s in segs) if checked else _check(disk, op, sector, segs)
    q = disk.queue
    assert q is not None
    with q.lock:
        while not q.free_tags:
            q.lock.wait(1.0)
            if q.dying:
                raise BlkError(f"{disk.disk_name}: the disk is gone")
        tag = q.free_tags.pop()
        rq = request(q, tag, op, sector, n, list(segs), end_io, data)
        q.inflight[tag] = rq
        q.stats["submitted"] += 1
        q.stats["max_inflight"] = max(q.stats["max_inflight"], len(q.inflight))
    return rq


def blk_submit(disk: gendisk, op: int, sector: int, segments: Sequence[bio_vec],
               end_io: EndIo | None, data: Any = None) -> request:
    rq = _make(disk, (op, sector, segments, end_io, data))
    assert disk.queue is not None
    disk.queue.dispatch([rq])
    return rq


def blk_submit_batch(disk: gendisk, subs: Sequence[Submission]) -> list[request]:
    """Several requests, all checked first (BlkError: none is submitted), dispatched with one
    `last` (the driver rings its doorbell once). More than the free tags: in rounds."""
    for op, sector, segs, _, _ in subs:
        _check(disk, op, sector, segs)
    q = disk.queue
    assert q is not None
    out: list[request] = []
    pending: list[request] = []
    for sub in subs:
        with q.lock:
            full = not q.free_tags
        if full and pending:
            q.dispatch(pending)
            pending = []
        rq = _make(disk, sub, checked=True)
        pending.append(rq)
        out.append(rq)
    if pending:
        q.dispatch(pending)
    return out
