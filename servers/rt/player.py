"""The DROPS demonstration's player (paper §4.2, Fig. 3): a periodic real-time job that uses
three managed resources every period, beside non-real-time load.

    player(l4, period_us, seconds, reserve, chunk, compute_us, frame, budget_us, lead)

Each period (default 10 ms) it reads `chunk` sectors from the block server (capability
"block", one exchange call), `lead` periods ahead (default 1: the period's exchange submits
the read of the chunk it will play next period and collects the one it plays now, which
had a whole period — its disk reservation's deadline — to come; 0: it waits for each read
in the period that plays it, so the disk has only what the rest of the period leaves),
computes `compute_us` of its own CPU time (a fixed amount of
work), and sends one frame of `frame` bytes through ORe (capability "net") towards the
uplink; with a capability "gui" (Nitpicker) it then draws the frame in its window
(`Screen`: written into its buffer and posted in the session's flip ring, no call while
Nitpicker keeps up); then it sleeps to its next release (servers/rt/client.py Periodic:
a period whose work ends after its deadline is a miss). With `reserve` = "1" it first asks for:
- a CPU reservation for its thread (capability "rt": budget_us every period),
- a disk reservation (one request per period, deadline one period),
- a network reservation (frame bytes per period, as bytes/s),
and runs best effort with "0". A media player reads ahead like this for the same reason:
the disk manager promises each request its deadline, not less; a player that needs the data
sooner than the deadline it reserved misses whenever a request uses its time (measured with
lead 0, four bench runs: 11-26 misses in 10,000 periods, the late periods' reads 8.2-8.8 ms
on average — inside their 10 ms deadline, often behind a best-effort request at the
non-preemptive device; with lead 1: 4). Every REPORT periods it tells the CPU manager its periods and
misses (`l4run rt` shows them). At the end it prints

    RT-PLAYER {periods, misses, worst_us, disk_p99_ms, disk_max_ms, disk_wait_p99_ms,
               net_share, reservations,
               misses_per_100, late_ms, stalls, drawn, gui}

disk_p99_ms, disk_max_ms: its reads' latency from submit to completion, as the block server
timed them (`info` latency_ms; ahead of time the player does not wait for each);
disk_wait_p99_ms: how long it waited for its data in a period. late_ms: the late periods'
mean time, per phase — the start past the release, the wait for the disk, the computation, the send — and their own CPU time, and the drawing (ms): where a
miss comes from. stalls: the first STALLS late periods one by one ([s since the start, ms
late, then the same five phases and the drawing in ms]), to place a cluster of misses in
time; drawn: frames drawn in Nitpicker; gui: frames skipped (the one before not shown yet)
and the calls drawing needed (kicks: Nitpicker was idle; waits: the frame before was not
shown within the ring's wait); late_at: the same periods'
release and phase boundaries (host monotonic s), to place them beside the servers' stage
times (the block server's RT-SLOW lines, the HAL disk's `trace`).

net_share: the bytes ORe forwarded for it (its session's tx_bytes) over frame × periods.
"""
from __future__ import annotations

import itertools
import json
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure
from kernel.user.vm import VM
from servers.block.client import READ, BlockClient
from servers.nic.client import NicSession
from servers.ore.protocol import ORE

from .client import Periodic, RtClient
from .demo import spin_cpu

REPORT = 100
STALLS = 1000                            # late periods kept in `stalls` and `late_at`
DST = b"\x02\x99\x00\x00\x00\x01"        # nobody's: ORe floods it to the uplink


class Screen:
    """The player's window in Nitpicker (capability "gui", its buffer bought with the
    task's "moe" session): each frame a test picture — colour bars that scroll by one pixel
    a period — and a bar of the misses so far, written into the buffer in one copy and
    submitted (servers/nitpicker/client.py `submit`)."""

    W, H, BAR = 160, 48, 6

    def __init__(self, l4: L4, vm: VM, x: int = 20, y: int = 20) -> None:
        from servers.nitpicker.client import GuiSession, rgb
        self.gui = GuiSession(l4, "gui", vm=vm)
        self.gui.buffer(self.W, self.H)
        self.view = self.gui.view("player")
        self.view.geometry(x, y, self.W, self.H)
        self.view.stack("front")
        colours = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
                   (192, 0, 192), (192, 0, 0), (0, 0, 192), (16, 16, 16)]
        band = self.W // len(colours)
        row = b"".join(rgb(*c) * band for c in colours)
        self.row = row + rgb(0, 0, 0) * (self.W - band * len(colours))
        self.red, self.dark = rgb(224, 32, 32), rgb(24, 24, 24)
        self.drawn = self.skipped = 0

    def draw(self, n: int, misses: int) -> None:
        """Frame `n`, if the display has shown the one before (`GuiSession.ready`); else
        the frame is skipped (counted): a job with a deadline never waits for the display."""
        if not self.gui.ready():
            self.skipped += 1
            return
        shift = (n % self.W) * 4
        row = self.row[shift:] + self.row[:shift]
        bar_w = min(self.W, misses)
        bar = self.red * bar_w + self.dark * (self.W - bar_w)
        self.gui.put(0, 0, self.W, self.H, row * (self.H - self.BAR) + bar * self.BAR)
        self.gui.submit()
        self.drawn += 1

    def stats(self) -> dict[str, int]:
        return {"skipped": self.skipped, "kicks": self.gui.kicks, "waits": self.gui.waits,
                "reopened": self.gui.reopened}


def _try(fn: Any, *args: Any) -> Any:
    try:
        out = fn(*args)
        return out._asdict() if hasattr(out, "_asdict") else out
    except RemoteFailure as e:
        return {"error": e.error, "reason": e.reason}


def player(l4: L4, period_us: str = "10000", seconds: str = "10", reserve: str = "1",
           chunk: str = "16", compute_us: str = "2000", frame: str = "1250",
           budget_us: str = "5000", lead: str = "1") -> int:
    period, sectors, size, ahead = int(period_us), int(chunk), int(frame), int(lead)
    vm = VM(l4)                          # one memory attachment per task: both share it
    slots = ahead + 1                    # chunks in its buffer: the one played, those ahead
    bc = BlockClient(l4, buffer=max(64 << 10, sectors * 512 * slots), vm=vm)
    nic = NicSession(l4, l4.caps["net"], vm=vm)
    ore: Any = ORE.client(l4, l4.caps["net"], timeout=5000)
    rt = RtClient(l4) if "rt" in l4.caps else None
    screen = Screen(l4, vm) if "gui" in l4.caps else None
    res: dict[str, Any] = {}
    if reserve == "1":
        if rt is not None:
            res["cpu"] = _try(rt.reserve, period, int(budget_us))
        res["disk"] = _try(bc.reserve, 1e6 / period, sectors, max(1, period // 1000))
        res["net"] = _try(ore.reserve, nic.sid, size * 1e6 / period)
    cpu_ok = rt is not None and "error" not in res.get("cpu", {"error": 1})
    if cpu_ok:      # reserved: its IPC through the kernel's real-time port, where there is one
        res["rt_port"] = l4.rt_try() or l4.rt_refusal
    print(f"RT-PLAYER-START {json.dumps(res)}", flush=True)
    pkt = DST + nic.mac + b"\x88\xb5" + bytes(size - 14)

    done: set[int] = set()                       # tags completed, not yet played
    coming: list[int] = []                       # tags submitted ahead, oldest first
    chunks = itertools.count()                   # chunk k goes to buffer slot k % slots

    def read(sector: int) -> None:
        """Submit the read of `sector` and wait for the oldest read in flight (this one,
        with lead 0) in the same call."""
        tag = bc.tag()
        reqs = [[tag, READ, sector, sectors, next(chunks) % slots * sectors * 512]]
        coming.append(tag)
        want = coming.pop(0) if len(coming) > ahead else None
        while want is not None and want not in done:
            done.update(t for t, _ in bc.exchange(reqs, 1, 1000))
            reqs = []
        if reqs:                                  # the one it needs came in an earlier call
            bc.submit(reqs)
        if want is not None:
            done.discard(want)
    # One period's work before the first period, unmeasured, as a player starts before it
    # plays: its first read, send and drawing fault in buffers and build the display's
    # pins (without it 10 of the first 100 periods missed, under 1 in 1,000 after).
    sector = 0
    for _ in range(ahead + 1):           # the pipeline filled: `lead` chunks on their way
        read(sector)
        sector = (sector + sectors) % 4096
    nic.send([pkt])
    if screen is not None:
        screen.draw(0, 0)
    time.sleep(0.1)                      # the primed frame forwarded before tx0 is read
    tx0 = int(ore.stats(nic.sid)["tx_bytes"])
    lat: list[float] = []
    job = Periodic(period)
    end = time.monotonic() + float(seconds)
    windows: list[int] = []                      # misses per REPORT periods
    last_misses = 0
    # where the time of late periods went: the start (past the release), the disk read,
    # the computation, the send; and the period's own CPU time (a budget overrun throttles)
    phases = [0.0] * 6
    stalls: list[list[float]] = []               # the first STALLS late periods, each:
    # [s since start, ms late at the end, start, disk, compute, send, cpu, draw (ms)]
    late_at: list[list[float]] = []              # ... their release, t0..t3 (monotonic s)
    t_begin = time.monotonic()
    while time.monotonic() < end:
        t0 = time.monotonic()
        c0 = time.thread_time()
        start_late = t0 - job.release
        read(sector)
        t1 = time.monotonic()
        lat.append(t1 - t0)
        sector = (sector + sectors) % 4096
        spin_cpu(float(compute_us))
        t2 = time.monotonic()
        nic.send([pkt])
        t3 = time.monotonic()
        if screen is not None:
            screen.draw(job.periods, job.misses)
        t4 = time.monotonic()
        cpu = time.thread_time() - c0
        late = t4 - job.release - job.deadline
        release = job.release
        if not job.next():
            parts = (start_late, t1 - t0, t2 - t1, t3 - t2, cpu, t4 - t3)
            for i, v in enumerate(parts):
                phases[i] += v
            if len(stalls) < STALLS:
                stalls.append([round(t0 - t_begin, 3), round(late * 1e3, 2),
                               *(round(v * 1e3, 2) for v in parts)])
                late_at.append([round(v, 6) for v in (release, t0, t1, t2, t3)])
        if job.periods % REPORT == 0:
            windows.append(job.misses - last_misses)
            last_misses = job.misses
            if cpu_ok:
                rt.report(res["cpu"]["id"], job.take())  # type: ignore[union-attr]
    if cpu_ok:
        rt.report(res["cpu"]["id"], job.take())          # type: ignore[union-attr]
    sent = int(ore.stats(nic.sid)["tx_bytes"]) - tx0
    lat.sort()
    while coming:                                # the reads ahead: collected, not played
        done.update(t for t, _ in bc.collect(1, 1000))
        coming = [t for t in coming if t not in done]
    served = _try(bc.info).get("latency_ms", {})
    out = {"periods": job.periods, "misses": job.misses, "worst_us": int(job.worst * 1e6),
           "disk_p99_ms": served.get("p99"), "disk_max_ms": served.get("max"),
           "disk_wait_p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 2) if lat else None,
           "net_share": round(sent / max(1, size * job.periods), 4),
           "misses_per_100": windows, "reservations": res,
           "late_ms": {k: round(v * 1e3 / max(1, job.misses), 2) for k, v in
                       zip(("start", "disk", "compute", "send", "cpu", "draw"), phases)},
           "drawn": screen.drawn if screen is not None else 0,
           "gui": screen.stats() if screen is not None else None,
           "stalls": stalls, "late_at": late_at, "begin_monotonic": round(t_begin, 3)}
    print(f"RT-PLAYER {json.dumps(out)}", flush=True)
    if cpu_ok:
        rt.release(res["cpu"]["id"])                     # type: ignore[union-attr]
    bc.close()
    vm.close()
    return 0
