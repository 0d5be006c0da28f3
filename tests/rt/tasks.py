"""Test tasks of tests/rt: they ask the CPU reservation manager and print what it answered."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure
from servers.rt.client import RtClient


def _ask(rt: RtClient, *args: Any, **kw: Any) -> dict[str, Any]:
    try:
        return {"ok": dict(rt.reserve(*args, **kw)._asdict())}
    except RemoteFailure as e:
        return {"error": e.error, "reason": e.reason}


def asker(l4: L4, hold_s: str = "30") -> int:
    """Two big reservations for two sleeping threads of ours (admitted), a third that does
    not fit (refused with the sums), bad fields, another process's thread; then holds the
    reservations without releasing them, so the test can kill us and see them reaped."""
    rt = RtClient(l4)
    out: dict[str, Any] = {}
    stop = threading.Event()
    tids: list[int] = []

    def sleeper() -> None:
        tids.append(threading.get_native_id())
        stop.wait()
    ths = [threading.Thread(target=sleeper, daemon=True) for _ in range(3)]
    for t in ths:
        t.start()
    while len(tids) < 3:
        time.sleep(0.01)
    out["first"] = _ask(rt, 100_000, 90_000, tid=tids[0])
    out["second"] = _ask(rt, 100_000, 85_000, tid=tids[1])
    out["third"] = _ask(rt, 100_000, 10_000, tid=tids[2])
    out["twice"] = _ask(rt, 100_000, 1_000, tid=tids[0])
    out["budget"] = _ask(rt, 10_000, 20_000, tid=tids[2])
    out["period"] = _ask(rt, 10, 5, tid=tids[2])
    out["foreign"] = _ask(rt, 10_000, 1_000, tid=1)
    out["mine"] = rt.mine()
    print(f"RT-ASK {json.dumps(out)}", flush=True)
    time.sleep(float(hold_s))
    return 0


def disk_reader(l4: L4, reserve: str = "1", seconds: str = "3", period_ms: str = "20",
                after_s: str = "0") -> int:
    """Reads 8 sectors every period (with a reservation of 1000/period per second, deadline
    one period, and with capability "rt" a CPU reservation of a quarter of the period; or
    best effort), each request's latency measured, and the block server's own timing of
    them (`info` latency_ms, as `served`); prints RT-DISK."""
    from servers.block.client import READ, BlockClient
    from servers.rt.client import Periodic
    time.sleep(float(after_s))                   # the test sets the disk's latency first
    bc = BlockClient(l4, buffer=64 << 10)
    period = int(period_ms)
    out: dict[str, Any] = {}
    if reserve == "1" and "rt" in l4.caps:          # a real-time job: its CPU time too
        out["cpu"] = _ask(RtClient(l4), period * 1000, period * 250)
    if reserve == "1":
        try:
            out["reservation"] = bc.reserve(1000 / period, 8, period)
        except RemoteFailure as e:
            out["reservation"] = {"error": e.error, "reason": e.reason}
    try:
        out["too_much"] = bc.reserve(1_000_000 / 10, 8, period) and "admitted"
    except RemoteFailure as e:
        out["too_much"] = {"error": e.error, "reason": e.reason}
    if reserve == "1" and "error" not in out["reservation"]:
        bc.reserve(1000 / period, 8, period)            # too_much did not replace it
    lat: list[float] = []
    job = Periodic(period * 1000)
    end = time.monotonic() + float(seconds)
    sector = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        tag = bc.tag()
        got: list[list[int]] = []
        reqs = [[tag, READ, sector, 8, 0]]
        while not any(t == tag for t, _ in got):      # one call: submit and collect
            got += bc.exchange(reqs, 1, 1000)
            reqs = []
        lat.append(time.monotonic() - t0)
        sector = (sector + 8) % 4096
        job.next()
    lat.sort()
    out.update(n=len(lat), p99_ms=round(lat[int(len(lat) * 0.99)] * 1e3, 2),
               max_ms=round(lat[-1] * 1e3, 2), served=bc.info()["latency_ms"])
    print(f"RT-DISK {json.dumps(out)}", flush=True)
    bc.close()
    return 0


from servers.rt.demo import disk_hog  # noqa: E402  (the tests' disk load is the demo's)


def net_sender(l4: L4, mode: str = "steady", rate: str = "100000", size: str = "1000",
               seconds: str = "4", reserve: str = "1") -> int:
    """Frames to an unknown unicast MAC (ORe floods them to the uplink). "steady": one frame
    of `size` bytes every size/rate seconds, with a reservation of `rate` B/s when `reserve`
    is "1"; "flood": as fast as ORe takes them. Prints RT-NET {offered, sent, seconds}."""
    from servers.nic.client import NicSession
    from servers.ore.protocol import ORE
    nic = NicSession(l4, l4.caps["net"])
    out: dict[str, Any] = {"mode": mode}
    if mode == "steady" and reserve == "1":
        try:
            ore: Any = ORE.client(l4, l4.caps["net"], timeout=5000)
            out["reservation"] = list(ore.reserve(nic.sid, float(rate)))
        except RemoteFailure as e:
            out["reservation"] = {"error": e.error, "reason": e.reason}
    dst = b"\x02\x99\x00\x00\x00\x01"
    frame = dst + nic.mac + b"\x88\xb5" + bytes(int(size) - 14)
    t0 = time.monotonic()
    end = t0 + float(seconds)
    offered = sent = 0
    if mode == "steady":
        gap = int(size) / float(rate)
        nxt = t0
        while time.monotonic() < end:
            offered += 1
            sent += nic.send([frame])
            nxt += gap
            time.sleep(max(0.0, nxt - time.monotonic()))
    else:
        batch = [frame] * 32
        while time.monotonic() < end:
            n = nic.send(batch)
            offered += n
            sent += n
            if n == 0:
                nic.wait(5)
    out.update(offered=offered, sent=sent, seconds=round(time.monotonic() - t0, 3))
    print(f"RT-NET {json.dumps(out)}", flush=True)
    return 0
