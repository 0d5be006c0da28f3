"""Tasks for tests/dde_linux/test_block.py, run inside real booted images.

    glue(l4)        the glue's core mechanisms in a driver task, then the l4disk driver
                    against the HAL disk through the block layer; prints "DDE-GLUE {json}"
    client(l4, ...) a block server client (servers/block/client.py) driven by commands in
                    the task's arguments; prints "BLOCK-CLIENT {json}" lines
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import traceback
from typing import Any, Callable

from kernel.user.client import L4
from servers.ddekit import thread as dthread
from servers.dde_linux import block as blk
from servers.dde_linux import kernel as k
from servers.dde_linux import sync, timer, workqueue
from servers.dde_linux.dma import DMA_FROM_DEVICE, dma_alloc_coherent, dma_free_coherent, \
    dma_map_single
from servers.sigma0.protocol import SIGMA0


def quota(l4: Any) -> dict[str, int]:
    s0: Any = SIGMA0.client(l4, l4.caps["sigma0"], timeout=30_000)
    return {"objects": l4.factory_info()["used"], "frames_free": s0.info()["free"]}


def check_waitqueue() -> dict[str, Any]:
    wq = sync.wait_queue_head_t()
    flag = {"v": False}
    got: list[float] = []

    def waiter(_: Any) -> None:
        t0 = time.monotonic()
        sync.wait_event(wq, lambda: flag["v"])
        got.append(time.monotonic() - t0)
    t = dthread.create("waiter", waiter)
    time.sleep(0.05)
    early = list(got)
    flag["v"] = True
    sync.wake_up(wq)
    joined = t.join(5)
    t0 = time.monotonic()
    timed_out = sync.wait_event_timeout(wq, lambda: False, k.msecs_to_jiffies(40))
    waited = time.monotonic() - t0
    left = sync.wait_event_timeout(wq, lambda: True, 10)
    return {"early": early, "woke": len(got) == 1 and joined, "timeout_answer": timed_out,
            "waited_ms": round(waited * 1e3, 1), "true_answer": left}


def check_completion() -> dict[str, Any]:
    c = sync.completion()
    order: list[str] = []

    def worker(_: Any) -> None:
        time.sleep(0.03)
        order.append("complete")
        sync.complete(c)
    dthread.create("completer", worker)
    sync.wait_for_completion(c)
    order.append("waited")
    timeout = sync.wait_for_completion_timeout(c, k.msecs_to_jiffies(30))
    sync.complete(c)
    sync.complete(c)
    two = [sync.try_wait_for_completion(c), sync.try_wait_for_completion(c),
           sync.try_wait_for_completion(c)]
    sync.complete_all(c)
    all_ = [sync.wait_for_completion_timeout(c, 1) > 0 for _ in range(3)]
    return {"order": order, "timeout": timeout, "counted": two, "all": all_}


def check_workqueue() -> dict[str, Any]:
    ran: list[tuple[str, str]] = []
    gate = sync.completion()

    def fn(w: workqueue.work_struct) -> None:
        ran.append((w.name, threading.current_thread().name))   # type: ignore[attr-defined]
        if w.name == "slow":                                     # type: ignore[attr-defined]
            sync.wait_for_completion_timeout(gate, k.HZ)
    works = {}
    for name in ("a", "b", "slow"):
        w = workqueue.work_struct()
        workqueue.INIT_WORK(w, fn)
        w.name = name                                            # type: ignore[attr-defined]
        works[name] = w
    first = workqueue.schedule_work(works["a"])
    q = workqueue.create_workqueue("test")
    workqueue.queue_work(q, works["slow"])
    time.sleep(0.05)
    again_running = workqueue.queue_work(q, works["slow"])        # running: queued again
    twice = workqueue.queue_work(q, works["slow"])                # pending now: no
    workqueue.queue_work(q, works["b"])
    sync.complete_all(gate)
    workqueue.flush_workqueue(q)
    workqueue.flush_scheduled_work()
    workqueue.destroy_workqueue(q)
    tl_ran: list[Any] = []
    t = workqueue.tasklet_struct()
    workqueue.tasklet_init(t, lambda d: tl_ran.append((d, threading.current_thread().name)), 7)
    workqueue.tasklet_schedule(t)
    _until(lambda: bool(tl_ran))
    workqueue.tasklet_kill(t)
    workqueue.tasklet_schedule(t)
    time.sleep(0.05)
    return {"ran": ran, "first": first, "again_running": again_running, "twice": twice,
            "tasklet": tl_ran}


def check_timers() -> dict[str, Any]:
    fired: list[tuple[str, int]] = []
    done = sync.completion()
    timers: dict[str, timer.timer_list] = {}

    def cb(t: timer.timer_list) -> None:
        fired.append((t.name, k.jiffies()))                         # type: ignore[attr-defined]
        if t.name == "rearm" and t.fired == 0:                      # type: ignore[attr-defined]
            timer.mod_timer(t, k.jiffies() + 2)
        if t.name == "last":                                        # type: ignore[attr-defined]
            sync.complete(done)
    now = k.jiffies()
    plan = {"c": 12, "a": 4, "b": 8, "moved": 2, "gone": 6, "rearm": 1, "last": 20}
    for name, dj in plan.items():
        t = timer.timer_list()
        timer.timer_setup(t, cb, 0)
        t.name = name                                               # type: ignore[attr-defined]
        timers[name] = t
        timer.mod_timer(t, now + dj)
    was_pending = timer.mod_timer(timers["moved"], now + 10)        # moved after b
    deleted = timer.del_timer(timers["gone"])
    ok = sync.wait_for_completion_timeout(done, 5 * k.HZ) > 0
    return {"order": [n for n, _ in fired], "done": ok, "was_pending": was_pending,
            "deleted": deleted, "deleted_again": timer.del_timer_sync(timers["gone"]),
            "pending_after": [n for n, t in timers.items() if timer.timer_pending(t)],
            "time_after": [k.time_after(now + 1, now), k.time_after(now, now + 1)]}


def check_kmalloc(l4: Any) -> dict[str, Any]:
    before = quota(l4)
    ptrs = [k.kmalloc(n, k.GFP_KERNEL) for n in (10, 100, 1000, 3000, 20000)]
    k.mem_write(ptrs[4] + 19990, b"0123456789")
    z = k.kzalloc(5000, k.GFP_KERNEL)
    zero = k.mem_read(z, 5000) == bytes(5000)
    k.memset(z, 0x5A, 100)
    holding = quota(l4)["frames_free"]
    usage = k.kmalloc_usage()
    rw = k.mem_read(ptrs[4] + 19990, 10) == b"0123456789" and k.mem_read(z, 2) == b"ZZ"
    for p in ptrs + [z]:
        k.kfree(p)
    try:
        k.kfree(ptrs[0])
        double = "accepted"
    except Exception as e:      # noqa: BLE001
        double = type(e).__name__
    k.kfree(0)
    after = quota(l4)
    return {"distinct": len(set(ptrs)) == 5, "zero": zero, "rw": rw, "usage": usage,
            "held_frames": before["frames_free"] - holding, "double_free": double,
            "back": after["frames_free"] == before["frames_free"],
            "usage_after": k.kmalloc_usage()}


def check_disk(image_sectors: int) -> dict[str, Any]:
    """The l4disk driver against the HAL disk through the block layer: write a pattern over
    several requests in flight, flush, read it back into other memory."""
    ret = k.load("servers.dde_linux.drivers.l4disk")
    disk = blk.get_disk("l4disk0")
    assert ret == 0 and disk is not None, ret
    n, per = 16, 64 * 1024
    src, src_dma = dma_alloc_coherent(None, n * per)
    dst, dst_dma = dma_alloc_coherent(None, n * per)
    pattern = bytes((i * 7 + i // 512) & 0xFF for i in range(n * per))
    k.mem_write(src, pattern)
    done = sync.completion()
    statuses: dict[int, int] = {}

    def end(rq: blk.request, st: int) -> None:
        statuses[rq.end_io_data] = st
        sync.complete(done)

    def segs(base: int, dma: int, i: int) -> list[blk.bio_vec]:      # 4 KiB segments
        return [blk.bio_vec(dma + i * per + o, 4096, base + i * per + o) for o in range(0, per, 4096)]
    t0 = time.monotonic()
    blk.blk_submit_batch(disk, [(blk.REQ_OP_WRITE, 128 + i * per // 512, segs(src, src_dma, i),
                                 end, i) for i in range(n)])
    for _ in range(n):
        sync.wait_for_completion(done)
    wrote_s = time.monotonic() - t0
    blk.blk_submit(disk, blk.REQ_OP_FLUSH, 0, [], end, "flush")
    sync.wait_for_completion(done)
    # one read of a kmalloc'd (slab) buffer, mapped with dma_map_single
    small = k.kmalloc(1024, k.GFP_KERNEL)
    h = dma_map_single(None, small, 1024, DMA_FROM_DEVICE)
    blk.blk_submit(disk, blk.REQ_OP_READ, 128, [blk.bio_vec(h, 1024, small)], end, "small")
    sync.wait_for_completion(done)
    small_ok = k.mem_read(small, 1024) == pattern[:1024]
    k.kfree(small)
    blk.blk_submit_batch(disk, [(blk.REQ_OP_READ, 128 + i * per // 512, segs(dst, dst_dma, i),
                                 end, 100 + i) for i in range(n)])
    for _ in range(n):
        sync.wait_for_completion(done)
    back = k.mem_read(dst, n * per)
    try:
        blk.blk_submit(disk, blk.REQ_OP_READ, image_sectors - 1, segs(dst, dst_dma, 0), end, "x")
        beyond = "accepted"
    except blk.BlkError as e:
        beyond = f"refused: {e}"
    q = disk.queue
    assert q is not None
    stats = dict(q.stats)
    dma_free_coherent(None, n * per, src, src_dma)
    dma_free_coherent(None, n * per, dst, dst_dma)
    k.unload()
    return {"statuses": sorted(set(statuses.values())), "count": len(statuses),
            "same": back == pattern, "small_ok": small_ok, "beyond": beyond, "stats": stats,
            "sha256": hashlib.sha256(pattern).hexdigest(), "first_sector": 128,
            "write_mb_s": round(n * per / wrote_s / 1e6, 1),
            "disk_gone": blk.get_disk("l4disk0") is None}


def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def glue(l4: L4, sectors: str = "4096") -> int:
    res: dict[str, Any] = {"quota_before": quota(l4)}
    k.boot(l4)
    res["quota_booted"] = quota(l4)
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("waitqueue", check_waitqueue), ("completion", check_completion),
        ("workqueue", check_workqueue), ("timers", check_timers),
        ("kmalloc", lambda: check_kmalloc(l4)), ("disk", lambda: check_disk(int(sectors)))]
    for name, fn in checks:
        try:
            res[name] = fn()
        except BaseException as e:          # noqa: BLE001 - report it, run the rest
            traceback.print_exc()
            res[name] = {"error": f"{type(e).__name__}: {e}"}
    k.shutdown()
    res["quota_after"] = quota(l4)
    print("DDE-GLUE " + json.dumps(res), flush=True)
    return 0


def victim(l4: L4) -> int:
    """A block client that opens a session with a 1 MiB buffer, reads once and then waits
    to be killed: the server must give its session up once its buffer dies with it."""
    from servers.block.client import BlockClient
    bc = BlockClient(l4, buffer=1 << 20)
    bc.read(0, 8)
    print("VICTIM-READY " + json.dumps(bc.info()), flush=True)
    while True:
        time.sleep(1)
