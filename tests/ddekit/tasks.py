"""The DDEKit conformance checks, run inside a real driver task (configs/ddekit.toml).

    conformance(l4)      runs every check with DDEKit started, then stops DDEKit, and prints
                         one line "DDEKIT-RESULT {json}" that tests/ddekit/test_ddekit.py reads

Each check answers a dict of what it saw (the test asserts on it); an exception in a check
is reported as {"error": "..."} and the other checks still run. In the spirit of Genode's
dde_kit test: locks and semaphores, threads, timers, memory and its page table, DMA by the
disk into DDEKit memory, a bus scan, interrupts from the timer device, a refused device, and
the quota (kernel objects, sigma0 frames) the same before and after.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from typing import Any, Callable

import servers.ddekit as ddekit
from kernel.user.client import L4
from servers.ddekit import bus, initcall, interrupt, memory, sync, thread, timer
from servers.ddekit.pgtab import PageTable
from servers.sigma0.protocol import SIGMA0

DISK_READ, SECTORS = 1, 8


def quota(l4: Any) -> dict[str, int]:
    s0: Any = SIGMA0.client(l4, l4.caps["sigma0"], timeout=30_000)
    return {"objects": l4.factory_info()["used"], "frames_free": s0.info()["free"]}


def check_sync() -> dict[str, Any]:
    lock, total, per = sync.Lock(), [0], 200
    assert lock.try_lock() and not lock.try_lock()
    owner_ok = lock.owner() is thread.current()
    lock.unlock()

    def bump(_: Any) -> None:
        for _i in range(per):
            with lock:
                v = total[0]
                thread.yield_()
                total[0] = v + 1
    ts = [thread.create(f"bump{i}", bump) for i in range(4)]
    joined = all(t.join(20) for t in ts)

    sem = sync.Semaphore(0)
    t0 = time.monotonic()
    timed_out = not sem.down_timed(60)
    waited_ms = (time.monotonic() - t0) * 1e3
    got: list[int] = []

    def consumer(_: Any) -> None:
        for _i in range(3):
            sem.down()
            got.append(1)
    c = thread.create("consumer", consumer)
    for _i in range(3):
        sem.up()
    consumer_done = c.join(10)
    sem.up()
    down_try = sem.down_try() and not sem.down_try()

    cv, cl, woken = sync.Condvar(), sync.Lock(), []
    with cl:
        cv_timeout = not cv.wait_timed(cl, 30)

    def waiter(i: int) -> None:
        with cl:
            cv.wait(cl)
            woken.append(i)
    ws = [thread.create(f"cv{i}", waiter, i) for i in range(3)]
    time.sleep(0.1)
    with cl:
        cv.signal()
    time.sleep(0.1)
    one = len(woken)
    with cl:
        cv.broadcast()
    all_woken = all(w.join(10) for w in ws)
    try:
        lock.unlock()
        bad_unlock = "accepted"
    except sync.LockError:
        bad_unlock = "refused"
    return {"counter": total[0], "expected": 4 * per, "joined": joined, "owner_ok": owner_ok,
            "down_timed_timeout": timed_out, "waited_ms": round(waited_ms, 1),
            "consumed": len(got), "consumer_done": consumer_done, "down_try": down_try,
            "cv_timeout": cv_timeout, "signal_woke": one, "broadcast_woke": len(woken),
            "all_woken": all_woken, "bad_unlock": bad_unlock}


def check_threads() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    lk = sync.Lock()

    def body(i: int) -> None:
        me = thread.current()
        thread.set_my_data({"i": i})
        t0 = time.monotonic()
        thread.msleep(20)
        thread.usleep(2000)
        slept = (time.monotonic() - t0) * 1e3
        lk.lock()
        thread.sleep(lk)                  # until the main thread wakes us
        lk.unlock()
        seen[me.name] = {"data": thread.get_my_data(), "slept_ms": round(slept, 1),
                         "l4": me.l4 is not None and me.l4.thread_id == me.id}
        thread.exit()
        seen[me.name]["after_exit"] = True          # never reached
    ts = [thread.create(f"worker{i}", body, i) for i in range(3)]
    time.sleep(0.15)
    for t in ts:
        thread.wakeup(t)
    joined = all(t.join(10) for t in ts)
    datas = [t.get_data() for t in ts]
    return {"seen": seen, "joined": joined, "datas": datas, "names": [t.name for t in ts],
            "live_after": [t.name for t in thread.live()], "main": thread.current().name}


def check_timers() -> dict[str, Any]:
    fired: list[tuple[str, int]] = []
    done = sync.Semaphore(0)

    def hit(name: str) -> None:
        fired.append((name, timer.jiffies()))
        if name == "last":
            done.up()
    now = timer.jiffies()
    plan = {"a": now + 15, "b": now + 5, "c": now + 10, "d": now + 5, "last": now + 20,
            "gone": now + 8}
    ids = {n: timer.add(hit, n, j) for n, j in plan.items()}
    deleted = timer.delete(ids["gone"])
    ok = done.down_timed(5000)
    late = [n for n, j in fired if j < plan[n]]
    return {"hz": ddekit.HZ, "order": [n for n, _ in fired], "done": ok, "deleted": deleted,
            "deleted_again": timer.delete(ids["gone"]), "early": late,
            "pending_after": [n for n, i in ids.items() if timer.pending(i)]}


def check_memory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    slab = memory.Slab(64)
    objs = [slab.alloc() for _ in range(100)]         # two slab pages
    phys = [memory.virt_to_phys(o) for o in objs]
    out["slab_distinct"] = len(set(objs)) == 100 and None not in phys and len(set(phys)) == 100
    memory.write(objs[99], b"slab object 99")
    out["slab_rw"] = memory.read(objs[99], 14) == b"slab object 99"
    p42 = phys[42]
    out["slab_back"] = p42 is not None and memory.phys_to_virt(p42) == objs[42]
    for o in objs:
        slab.free(o)
    out["slab_cleared"] = [memory.virt_to_phys(o) for o in (objs[0], objs[99])]
    try:
        slab.free(objs[0])
        out["double_free"] = "accepted"
    except memory.BadAddress:
        out["double_free"] = "refused"
    slab.destroy()

    big = memory.large_malloc(20000)
    bp = memory.virt_to_phys(big)
    out["frames_free_holding"] = quota(thread.my_l4())["frames_free"]
    out["large"] = {"phys_ok": bp is not None and memory.virt_to_phys(big + 19999) == bp + 19999,
                    "back": memory.phys_to_virt(bp + 100) == big + 100 if bp is not None else False,
                    "kind": memory.pgtab.kind(big)}
    memory.write(big + 10000, b"large")
    out["large"]["rw"] = memory.read(big + 10000, 5) == b"large"
    memory.large_free(big)
    out["large"]["cleared"] = [memory.virt_to_phys(big),
                               None if bp is None else memory.phys_to_virt(bp + 100)]
    try:
        memory.read(big, 1)
        out["large"]["read_freed"] = "accepted"
    except memory.BadAddress:
        out["large"]["read_freed"] = "refused"

    c = memory.contig_alloc(12288, align=16384, boundary=65536)
    cp = memory.virt_to_phys(c)
    assert cp is not None
    out["contig"] = {"aligned": cp % 16384 == 0, "in_boundary": cp // 65536 == (cp + 12287) // 65536,
                     "contiguous": memory.virt_to_phys(c + 12287) == cp + 12287}
    blk = memory.block(c + 100)
    assert blk is not None
    blk.write(4096, b"through a block")
    out["contig"]["block"] = [blk.virt == c, blk.phys == cp, blk.size >= 12288,
                              memory.read(c + 4096, 15) == b"through a block",
                              bytes(memory.view(c + 4096, 7)) == b"through"]
    memory.contig_free(c)
    out["contig"]["cleared"] = memory.virt_to_phys(c)
    out["contig"]["block_cleared"] = memory.block(c) is None
    # sigma0 hands out the lowest free block: with `hold` taken, no free frame lies below
    # its end, so a block that must end there is refused (and given back at once)
    hold = memory.contig_alloc(4096)
    end = (memory.virt_to_phys(hold) or 0) + 4096
    try:
        memory.contig_alloc(4096, limit=end)
        out["contig"]["limit"] = "accepted"
    except memory.OutOfMemory as e:
        out["contig"]["limit"] = "refused" if "limit" in str(e) else str(e)
    memory.contig_free(hold)
    low = memory.contig_alloc(4096, limit=1 << 30)
    out["contig"]["within_limit"] = (memory.virt_to_phys(low) or 0) + 4096 <= 1 << 30
    memory.contig_free(low)
    try:
        memory.contig_alloc(1 << 17, boundary=1 << 16)
        out["contig"]["bad_boundary"] = "accepted"
    except ValueError:
        out["contig"]["bad_boundary"] = "refused"

    small, large = memory.malloc(100), memory.malloc(5000)
    memory.write(small, b"x" * 100)
    memory.write(large, b"y" * 5000)
    out["malloc"] = {"rw": memory.read(small, 100) == b"x" * 100
                     and memory.read(large, 5000) == b"y" * 5000,
                     "phys": None not in (memory.virt_to_phys(small), memory.virt_to_phys(large))}
    memory.free(small)
    memory.free(large)
    out["malloc"]["cleared"] = [memory.virt_to_phys(small), memory.virt_to_phys(large)]

    pt = PageTable()
    pt.set_region(0x1000_0000, 0x5000, 0x2000, "mine")
    own = [pt.virt_to_phys(0x1000_1234), pt.phys_to_virt(0x6000), pt.kind(0x1000_0000)]
    try:
        pt.set_region(0x2000_0000, 0x6000, 0x1000)
        overlap = "accepted"
    except ValueError:
        overlap = "refused"
    pt.clear_region(0x1000_0000)
    out["pgtab"] = {"own": own, "overlap": overlap,
                    "cleared": [pt.virt_to_phys(0x1000_1234), pt.phys_to_virt(0x6000)]}
    out["usage_after"] = memory.usage()
    return out


def check_dma() -> dict[str, Any]:
    disk = bus.request("disk0")
    line = disk.info.irq
    assert line is not None
    buf = memory.contig_alloc(SECTORS * 512)
    phys = memory.virt_to_phys(buf)
    assert phys is not None
    memory.fill(buf, SECTORS * 512, 0xEE)
    done = sync.Semaphore(0)
    h = interrupt.attach(line, lambda d: done.up(), None)
    disk.writes(LBA=0, COUNT=SECTORS, DMA_ADDR=phys, CMD=DISK_READ)
    completed = done.down_timed(10_000)
    status, error = disk.reads("STATUS", "ERROR")
    by_index = disk.read_at(disk.info.regs["SECTORS"]) == disk.read("SECTORS") == 2048
    data = memory.read(buf, SECTORS * 512)
    memory.contig_free(buf)
    # the freed frames are no longer ours: with an IOMMU the disk may not DMA into them
    disk.writes(ERROR=0, LBA=0, COUNT=1, DMA_ADDR=phys, CMD=DISK_READ)
    done.down_timed(10_000)
    freed_error = disk.read("ERROR")
    interrupt.detach(line, h)
    bus.release(disk)
    return {"completed": completed, "status": status, "dev_error": error, "phys": phys,
            "iommu": disk.iommu, "freed_dma_error": freed_error, "by_index": by_index,
            "sha256": hashlib.sha256(data).hexdigest(), "head": data[:16].hex()}


def check_bus() -> dict[str, Any]:
    scan = [{"name": d.name, "kind": d.kind, "vendor": d.vendor, "device": d.device,
             "class": d.class_code, "irq": d.irq, "dma": d.dma, "regs": len(d.regs)}
            for d in bus.scan()]
    try:
        bus.request("timer1")
        refused = "granted"
    except bus.DeviceDenied as e:
        refused = str(e)
    try:
        bus.request("nosuch9")
        missing = "granted"
    except bus.DeviceNotFound as e:
        missing = str(e)
    return {"scan": scan, "refused": refused, "missing": missing}


def check_irq() -> dict[str, Any]:
    t = bus.request("timer0")
    line = t.info.irq
    assert line is not None
    counts = {"a": 0, "b": 0}
    tls: list[str] = []

    def a(_: Any) -> None:
        counts["a"] += 1

    def b(_: Any) -> None:
        counts["b"] += 1
    ha = interrupt.attach(line, a, None, shared=True,
                          thread_init=lambda _: tls.append(thread.current().name))
    hb = interrupt.attach(line, b, None, shared=True)
    try:
        interrupt.attach(line, b, None, shared=False)
        busy = "accepted"
    except interrupt.LineBusy:
        busy = "refused"
    try:
        interrupt.attach(31, a)                        # no requested device has line 31
        no_line = "accepted"
    except interrupt.NoSuchLine:
        no_line = "refused"
    t.writes(PERIOD_US=4000, CTRL=3)                   # periodic, 250 Hz
    _until(lambda: counts["a"] >= 5)
    both = counts["a"] > 0 and counts["b"] > 0
    interrupt.disable(line)
    ticks0, c0 = t.read("TICKS"), dict(counts)
    time.sleep(0.15)
    ticks1, c1 = t.read("TICKS"), dict(counts)
    interrupt.enable(line)
    _until(lambda: counts["a"] >= c1["a"] + 3)
    interrupt.detach(line, hb)
    b_at, a_at = counts["b"], counts["a"]
    _until(lambda: counts["a"] >= a_at + 3)
    b_after = counts["b"]
    handled = interrupt.count(line)
    interrupt.detach(line)
    t.write("CTRL", 0)
    threads_left = [x.name for x in thread.live()]
    bus.release(t)
    return {"both_called": both, "busy": busy, "no_line": no_line, "thread_init": tls,
            "disabled_delta": c1["a"] - c0["a"], "ticks_while_disabled": ticks1 - ticks0,
            "resumed": counts["a"] - c1["a"] >= 3, "b_after_detach": b_after - b_at,
            "handled": handled, "threads_after_detach": threads_left}


def check_misc() -> dict[str, Any]:
    order: list[str] = []
    initcall.register(initcall.LATE, lambda: order.append("late"), "late")
    initcall.register(initcall.CORE, lambda: order.append("core"), "core")
    initcall.register(initcall.DEVICE, lambda: order.append("device1"), "device1")
    initcall.register(initcall.DEVICE, lambda: order.append("device2"), "device2")
    ran = [name for _, name, _ in initcall.run_all()]
    again = initcall.run_all()
    ddekit.assert_(True, "never")
    try:
        ddekit.assert_(1 == 2, "one is %s", "two")
        panicked = ""
    except ddekit.Panic as e:
        panicked = str(e)
    ddekit.printf("ddekit-test: printf %d %s", 42, "ok")
    return {"order": order, "ran": ran, "again": again, "panic": panicked}


def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


CHECKS = [("misc", check_misc), ("sync", check_sync), ("threads", check_threads),
          ("timers", check_timers), ("memory", check_memory), ("bus", check_bus),
          ("dma", check_dma), ("irq", check_irq)]


def conformance(l4: L4) -> int:
    results: dict[str, Any] = {"quota_before_start": quota(l4)}
    t0 = time.monotonic()
    ddekit.start(l4)
    results["quota_started"] = quota(l4)
    for name, fn in CHECKS:
        c0 = time.monotonic()
        try:
            results[name] = fn()
        except BaseException as e:              # noqa: BLE001 - report it, run the rest
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name + "_s"] = round(time.monotonic() - c0, 3)
    try:                      # the timer thread ends once idle (timer.IDLE_S)
        _until(lambda: not thread.live(), 5.0)
    except TimeoutError:
        pass
    results["live_threads"] = [t.name for t in thread.live()]
    results["quota_checked"] = quota(l4)
    ddekit.stop()
    results["quota_after_stop"] = quota(l4)
    results["seconds"] = round(time.monotonic() - t0, 3)
    print("DDEKIT-RESULT " + json.dumps(results), flush=True)
    return 0
