"""Tasks that show the CPU reservation manager at work (tests/rt, configs/drops.toml).

    job(l4, period_us, budget_us, compute_us, seconds, reserve, call)
        a periodic job: each period it computes `compute_us` of its own CPU time (a fixed
        amount of work, whatever preempts it), and with `call` = "kv" also calls the kv
        server (capability "kv", servers/example) once, so its deadline depends on the kernel's
        IPC path and that server too. With `reserve` = "1" it first reserves budget_us every
        period_us for its thread (capability "rt"); "0" runs best effort. Prints
        `RT-JOB {json}` with periods, misses, worst lateness, the reservation's answer.
    hog(l4, seconds)
        the non-real-time load: spins for `seconds` (0: forever) in the ordinary class.
    overrun(l4, period_us, budget_us, seconds)
        reserves budget_us/period_us and then spins without end: the host must throttle it
        at its budget; prints `RT-OVERRUN {json}` with the CPU share it got.
    disk_hog(l4, seconds), net_flood(l4, seconds, size)
        best-effort disk (capability "block") and network (capability "net", ORe) load.
The player of configs/drops.toml is servers/rt/player.py.
"""
from __future__ import annotations

import json
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure

from .client import Periodic, RtClient

REPORT_EVERY = 50              # periods between reports to the manager


def spin_cpu(us: float) -> None:
    """Use `us` microseconds of this thread's CPU time."""
    end = time.thread_time() + us / 1e6
    while time.thread_time() < end:
        pass


def _reserve(l4: L4, period_us: int, budget_us: int) -> tuple[RtClient, Any, dict[str, Any]]:
    rt = RtClient(l4)
    try:
        res = rt.reserve(period_us, budget_us)
        return rt, res, dict(res._asdict())
    except RemoteFailure as e:
        return rt, None, {"error": e.error, "reason": e.reason}


def job(l4: L4, period_us: str = "10000", budget_us: str = "3000", compute_us: str = "1500",
        seconds: str = "5", reserve: str = "1", call: str = "") -> int:
    period, budget, compute = int(period_us), int(budget_us), float(compute_us)
    kv: Any = None
    if call == "kv":
        from servers.example.protocol import KV
        kv = KV.client(l4, l4.caps["kv"], timeout=5000)
    rt, res, answer = _reserve(l4, period, budget) if reserve == "1" else (None, None, {})
    print(f"RT-JOB-START {json.dumps(answer)}", flush=True)
    p = Periodic(period)
    end = time.monotonic() + float(seconds)
    calls = 0
    while time.monotonic() < end:
        spin_cpu(compute)
        if kv is not None:
            kv.put("frame", b"x" * 64)
            calls += 1
        p.next()
        if rt is not None and res is not None and p.periods % REPORT_EVERY == 0:
            rt.report(res, p.take())
    if rt is not None and res is not None:
        rt.report(res, p.take())
    out = {"periods": p.periods, "misses": p.misses, "worst_us": int(p.worst * 1e6),
           "calls": calls, "reservation": answer}
    print(f"RT-JOB {json.dumps(out)}", flush=True)
    if rt is not None and res is not None:
        rt.release(res)
    return 0


def hog(l4: L4, seconds: str = "0") -> int:
    end = time.monotonic() + float(seconds) if float(seconds) > 0 else float("inf")
    print("RT-HOG spinning", flush=True)
    while time.monotonic() < end:
        spin_cpu(10_000)
    return 0


def overrun(l4: L4, period_us: str = "10000", budget_us: str = "2000",
            seconds: str = "2") -> int:
    period, budget = int(period_us), int(budget_us)
    rt, res, answer = _reserve(l4, period, budget)
    print(f"RT-JOB-START {json.dumps(answer)}", flush=True)
    t0, c0 = time.monotonic(), time.thread_time()
    while time.monotonic() - t0 < float(seconds):
        pass
    share = (time.thread_time() - c0) / (time.monotonic() - t0)
    print(f"RT-OVERRUN {json.dumps({'share': round(share, 3), 'reservation': answer})}",
          flush=True)
    if res is not None:
        rt.release(res)
    return 0


def disk_hog(l4: L4, seconds: str = "0") -> int:
    """Best-effort disk load: 16 reads of 128 KiB in flight, over and over (0: forever)."""
    from servers.block.client import READ, BlockClient
    bc = BlockClient(l4, buffer=2 << 20)
    end = time.monotonic() + float(seconds) if float(seconds) > 0 else float("inf")
    n = 0
    while time.monotonic() < end:
        bc.stream(READ, 0, 4096, chunk=128, depth=16)
        n += 4096
    print(f"RT-DISK-HOG {json.dumps({'sectors': n})}", flush=True)
    bc.close()
    return 0


def net_flood(l4: L4, seconds: str = "0", size: str = "1400") -> int:
    """Best-effort network load: frames towards the uplink as fast as ORe takes them."""
    from servers.nic.client import NicSession
    nic = NicSession(l4, l4.caps["net"])
    frame = b"\x02\x99\x00\x00\x00\x02" + nic.mac + b"\x88\xb5" + bytes(int(size) - 14)
    end = time.monotonic() + float(seconds) if float(seconds) > 0 else float("inf")
    sent = 0
    while time.monotonic() < end:
        n = nic.send([frame] * 32)
        sent += n
        if n == 0:
            nic.wait(5)
    print(f"RT-NET-FLOOD {json.dumps({'sent': sent})}", flush=True)
    return 0
