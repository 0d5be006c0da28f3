"""Real-time disk scheduling for the block server (Reuther & Pohlack, RTSS 2003, in small).

Mechanism. A client may reserve a request rate (`rate` requests of up to `sectors` sectors
per second, each with a relative deadline `deadline_ms`). From the first reservation on,
every request of every client goes through this scheduler instead of straight to the block
layer: the scheduler keeps the disk's queue short (DEV_DEPTH requests at the device) and
picks, each time a slot frees, the reserved request with the earliest deadline, else the
oldest best-effort one. A reserved client's requests beyond its rate (a token bucket of
`rate` per second, burst BURST_S × rate, at least BURST_MIN) are served as best effort, so no
client takes more than it reserved ahead of the others; best effort gets whatever the
reservations leave.

Admission: the disk's capacity is measured, not declared: at a client's first reservation
for a request size the scheduler times CALIBRATE reads of that size (device time only:
from dispatch to completion with nothing else at the device) through the client's own
buffer and range; a reservation is admitted while Σ rate × service time over all
reservations stays within UTIL_MAX of the disk (refused with the numbers otherwise).

Best effort held back (the reserved clients are periodic): each reserved arrival predicts
the client's next (`due`: its earliest arrivals, one period on); a best-effort request is
not dispatched from one best-effort service time (the recent p90 at the device) and
HOLD_GUARD_S before `due` until the reserved request arrives, or at most `late_s` (its
recent worst lateness) past `due`. One best-effort request at the device when a reserved
one arrives costs it a whole service time (2-3 ms with the bench's 2 ms disk), measured as
the largest part of the player's misses. A reserved client whose calls come to the server's
main thread (no reserved gate: servers/block/server.py) needs that thread free for its
call too: a best-effort `collect` then waits at most until CALL_GUARD_S before `due`
(`best_wait_ms`); through its reserved gate it has the reserved thread to itself. `rt_status` shows per second (`timeline`) the reserved requests' time
queued and at the device and the best-effort requests' device time.

The server is one Python process: its main thread (best-effort calls), the reserved
thread (reserved sessions' calls), the interrupt thread (completions) and the dispatcher
take turns on the interpreter, so while reservations exist
the switch interval is shortened (hostsched.share_interpreter): a completion (interrupt
thread) and a dispatch (the work queue) would each wait up to 5 ms for the interpreter while
the main thread serves best-effort calls.

Ownership: queues, buckets, predictions and counters are guarded by `lock`; `_dispatch`
runs in the thread that submits (the main or the reserved thread), in the one that completes (the
disk's interrupt thread: a reserved client is answered first, then the next request goes
to the device) and on the scheduler's work queue (a DDEKit thread, "kworker/rtdisk"),
which the hold's timer thread ("rtdisk-hold") queues when a hold ends.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from servers.dde_linux import block as blk
from servers.dde_linux import workqueue as wq
from servers.rt import hostsched as hs

DEV_DEPTH = 1              # requests at the device at once while scheduling
UTIL_MAX = 0.8             # of the measured capacity that reservations may take
BURST_S = 0.1              # token bucket depth: 100 ms of the reserved rate, at least
BURST_MIN = 2.0            # two requests (a periodic client's jitter)
CALIBRATE = 8              # reads timed per request size
LAT_KEPT = 20_000          # latencies kept per client (p99)
HOLD_GUARD_S = 0.0005     # best effort must be done this long before a reserved arrival
HOLD_LATE = (0.001, 0.4)  # how long past its predicted time a reserved arrival is waited for:
                           # the recent arrivals' worst lateness and a guard, within 1 ms ..
                           # 0.4 period (measured: with their p95 a late call found a
                           # best-effort request at the device in half the late periods)
CALL_GUARD_S = 0.001      # a best-effort collect ends this long before a reserved call
BEST_Q = 0.9               # the quantile of recent best-effort device times a hold allows for
                           # (measured with p75: in 40 % of the late periods a best-effort
                           # request dispatched 3.6-7 ms before the reserved arrival was still
                           # at the device, its device time in the tail under load)
KEPT = 64                  # recent samples behind those estimates (lateness, device times)
TIMELINE_KEPT = 600        # seconds of per-second phase times kept
ENDED_KEPT = 16            # ended reservations still shown by rt_status


@dataclass
class Reservation:
    label: int
    rate: float            # requests per second
    sectors: int           # largest request it covers
    deadline_s: float
    service_s: float       # measured device time of one such request
    tokens: float = BURST_MIN
    last: float = field(default_factory=time.monotonic)
    lat: deque[float] = field(default_factory=lambda: deque(maxlen=LAT_KEPT))  # served as reserved
    served: int = 0        # requests served as reserved
    over: int = 0          # beyond the rate: served as best effort
    misses: int = 0        # completed after their deadline
    due: float | None = None    # the next request's earliest predicted arrival (absolute)
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=KEPT))
    late_s: float = HOLD_LATE[0]     # arrivals are waited for until due + late_s

    def arrived(self, now: float) -> None:
        """A request of this client arrived: predict the next one. The client is periodic
        (rate = 1/period); `due` follows its earliest arrivals (an early one moves it at
        once, a late one only a little: lateness is mostly jitter of that period's start)."""
        period = 1.0 / self.rate
        if self.due is None:
            self.due = now + period
            return
        err = now - self.due
        if err > period / 2:                         # periods without a request: skip them
            n = round(err / period)
            self.due += n * period
            err -= n * period
        self.lateness.append(max(0.0, err))
        base = now if err < 0 else self.due + err / 16
        self.due = base + period
        self.late_s = min(HOLD_LATE[1] * period,
                          max(HOLD_LATE[0], max(self.lateness) + HOLD_GUARD_S))

    def take(self, now: float) -> bool:
        burst = max(BURST_MIN, self.rate * BURST_S)
        self.tokens = min(burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Pending:
    sub: Any               # a blk Submission (op, sector, segs, end_io, data)
    label: int
    arrived: float
    deadline: float | None  # absolute, reserved requests only
    entries: int = 0       # its segments (the device's ring entries)
    dispatched: float = 0.0
    sent: float = 0.0      # its doorbell sent (blk_submit_batch returned)
    completed: float = 0.0  # its completion seen (the interrupt thread's end_io)
    answered: float = 0.0  # its client's end_io done (the session told)
    ahead: int = 0         # requests at the device when it arrived
    ahead_since: float = 0.0  # ... since when the last of them was (dispatched)
    due: float = 0.0       # its client's predicted arrival (the hold's reference)
    flush: bool = False    # a FLUSH (the host's fsync of the disk image: its own device time)


class DiskScheduler:
    def __init__(self, disk: blk.gendisk) -> None:
        self.disk = disk
        self.lock = threading.Condition()
        self.reserved: list[tuple[float, int, Pending]] = []     # heap by deadline; lock
        self.best: deque[Pending] = deque()                       # lock
        self.at_device = 0                                        # lock
        self.active = False
        self.reservations: dict[int, Reservation] = {}            # label -> its reservation
        self.service: dict[int, float] = {}                       # sectors -> seconds
        self.latency: dict[int, deque[float]] = {}                # label -> seconds; lock
        self.ended: list[Reservation] = []                        # the last ENDED_KEPT; lock
        self.seq = itertools.count()
        self.best_device: deque[float] = deque(maxlen=KEPT)       # seconds; lock
        self.flush_device: deque[float] = deque(maxlen=KEPT)      # ... of best-effort FLUSHes
        self.last: dict[int, Pending] = {}                        # label -> its last reserved
        self.last_dispatch = 0.0                                  # lock
        self.hold_until: float | None = None                      # lock
        self.stopped = False
        self.holds = 0                                            # best effort held back
        self.t0 = time.monotonic()
        # per second since t0: [reserved n, Σ queued s, Σ device s, max total s,
        #                       best-effort n, Σ device s, Σ entries, max device s]; lock
        self.timeline: dict[int, list[float]] = {}
        self.work = wq.work_struct(self._dispatch)
        self.queue = wq.create_workqueue("rtdisk")
        self.waker = threading.Thread(target=self._wake, name="rtdisk-hold", daemon=True)
        self.waker.start()

    # -- admission ---------------------------------------------------------------------------
    def used(self, without: int = -1) -> float:
        return sum(r.rate * r.service_s for r in self.reservations.values() if r.label != without)

    def admit(self, label: int, rate: float, sectors: int, deadline_ms: int,
              service_s: float) -> str | None:
        """None if the reservation fits the measured capacity (then it is made), else why."""
        u = rate * service_s
        have = self.used(without=label)
        if have + u > UTIL_MAX:
            return (f"{rate:g} requests/s of {sectors} sectors take {u:.3f} of the disk "
                    f"(measured {service_s * 1e3:.2f} ms each, {1 / service_s:.0f}/s); "
                    f"reserved {have:.3f}, at most {UTIL_MAX} may be")
        if deadline_ms / 1e3 < 2 * service_s:
            return (f"deadline {deadline_ms} ms is shorter than two requests' device time "
                    f"({2 * service_s * 1e3:.2f} ms)")
        with self.lock:
            self.reservations[label] = Reservation(label, rate, sectors, deadline_ms / 1e3,
                                                   service_s)
            self.active = True
        hs.share_interpreter()
        return None

    def release(self, label: int) -> None:
        with self.lock:
            r = self.reservations.pop(label, None)
            if r is not None:
                self.ended.append(r)
                del self.ended[:-ENDED_KEPT]

    # -- requests ------------------------------------------------------------------------------
    def enqueue(self, label: int, subs: list[Any]) -> None:
        """Queue a client's checked submissions; each ends through our `_done`."""
        now = time.monotonic()
        with self.lock:
            r = self.reservations.get(label)
            for op, sector, segs, end_io, data in subs:
                p = Pending(None, label, now, None, len(segs) if segs else 0,
                            flush=op == blk.REQ_OP_FLUSH)
                p.sub = (op, sector, segs, self._done, (p, end_io, data))
                count = sum(s.bv_len for s in segs) // 512 if segs else 0
                if r is not None and count <= r.sectors and r.take(now):
                    p.due = r.due or 0.0
                    r.arrived(now)
                    p.deadline = now + r.deadline_s
                    p.ahead, p.ahead_since = self.at_device, self.last_dispatch
                    self.last[label] = p
                    heapq.heappush(self.reserved, (p.deadline, next(self.seq), p))
                else:
                    if r is not None:
                        r.over += 1
                    self.best.append(p)
        self._dispatch(None)             # here: no hand-off to another thread on the way

    def _best_service(self, flush: bool = False) -> float:
        """A best-effort request's time at the device (dispatch to completion): the recent
        ones' BEST_Q quantile — of FLUSHes for a FLUSH (the host's fsync of the image: a
        read or write is the latency and a copy, a FLUSH the latency and the host's disk;
        drops.toml with a 2 ms disk: FLUSHes p50 4.0, p90 5.6, largest 11.4 ms at the device,
        reads and writes 2.5, 2.9, 7.7 ms); before any, a reservation's calibrated service
        time."""
        kept = self.flush_device if flush and self.flush_device else self.best_device
        if kept:
            s = sorted(kept)
            return s[min(len(s) - 1, int(len(s) * BEST_Q))]
        return max((r.service_s for r in self.reservations.values()), default=0.0)

    def _hold(self, now: float, p: Pending) -> float | None:
        """Until when best effort (`p`, the next) must wait (None: it may go now): a
        best-effort request is not dispatched when it would still be at the device as a
        reserved client's next request arrives — from its predicted arrival less its kind's
        service time (and a guard) until the arrival, or until late_s past the prediction.
        The window leaves room after each reserved request (its service time, late_s and
        a guard): a request longer than that gap goes at its start rather than never."""
        until = None
        need = self._best_service(p.flush) + HOLD_GUARD_S
        for r in self.reservations.values():
            if r.due is None:
                continue
            room = 1.0 / r.rate - r.service_s - r.late_s - HOLD_GUARD_S
            if r.due - max(0.0, min(need, room)) <= now <= r.due + r.late_s:
                end = r.due + r.late_s
                until = end if until is None else max(until, end)
        return until

    def best_wait_ms(self, wait_ms: float, near_ms: float) -> float:
        """How long a best-effort client's collect may hold the server's one thread: until
        CALL_GUARD_S before each reserved client's predicted call, at most `near_ms` once
        that is near or past, or not predicted yet (the server must be free to take it)."""
        now = time.monotonic()
        with self.lock:
            for r in self.reservations.values():
                free_in = -1.0 if r.due is None else (r.due - CALL_GUARD_S - now) * 1e3
                wait_ms = min(wait_ms, free_in if free_in > near_ms else near_ms)
        return max(0.0, wait_ms)

    def _next(self) -> Pending | None:
        if self.reserved:
            return heapq.heappop(self.reserved)[2]
        if not self.best:
            return None
        until = self._hold(time.monotonic(), self.best[0])
        if until is not None:
            if self.hold_until is None:
                self.holds += 1
            if self.hold_until is None or until < self.hold_until:
                self.hold_until = until
                self.lock.notify_all()           # the waker: dispatch again at its end
            return None
        return self.best.popleft()

    def _wake(self) -> None:
        """The hold's timer (thread "rtdisk-hold"): at its end, dispatch again (on the work
        queue: the dispatch needs a DDEKit thread)."""
        with self.lock:
            while not self.stopped:
                if self.hold_until is None:
                    self.lock.wait(1.0)
                    continue
                left = self.hold_until - time.monotonic()
                if left > 0:
                    self.lock.wait(left)
                    continue
                self.hold_until = None
                wq.queue_work(self.queue, self.work)

    def _dispatch(self, _work: Any) -> None:
        while True:
            with self.lock:
                if self.at_device >= DEV_DEPTH:
                    return
                p = self._next()
                if p is None:
                    return
                self.at_device += 1
                p.dispatched = self.last_dispatch = time.monotonic()
            try:
                blk.blk_submit_batch(self.disk, [p.sub])
                p.sent = time.monotonic()
            except blk.BlkError:                  # the disk went away: an I/O error
                self._done_one(p)
                _, end_io, data = p.sub[4]
                end_io(SimpleNamespace(end_io_data=data), blk.BLK_STS_IOERR)

    def _done_one(self, p: Pending) -> float:
        now = time.monotonic()
        with self.lock:
            self.at_device -= 1
            lat = self.latency.setdefault(p.label, deque(maxlen=LAT_KEPT))
            lat.append(now - p.arrived)
            r = self.reservations.get(p.label)
            row = self.timeline.setdefault(int(now - self.t0), [0.0] * 8)
            dev = now - p.dispatched
            if p.deadline is not None:
                row[0] += 1
                row[1] += p.dispatched - p.arrived
                row[2] += dev
                row[3] = max(row[3], now - p.arrived)
            else:
                (self.flush_device if p.flush else self.best_device).append(dev)
                row[4] += 1
                row[5] += dev
                row[6] += p.entries
                row[7] = max(row[7], dev)
            if len(self.timeline) > TIMELINE_KEPT:
                del self.timeline[min(self.timeline)]
            if p.deadline is not None and r is not None:
                r.served += 1
                r.lat.append(now - p.arrived)
                if now > p.deadline:
                    r.misses += 1
        return now

    def _done(self, rq: blk.request, status: int) -> None:
        """A completion (the interrupt thread): the next request goes to the device from
        here; a reserved one's client is answered before that, a best-effort one's after."""
        p, end_io, data = rq.end_io_data
        p.completed = self._done_one(p)
        rq.end_io_data = data
        if p.deadline is None:
            self._dispatch(None)
            end_io(rq, status)
        else:
            try:
                end_io(rq, status)
                p.answered = time.monotonic()
            finally:
                self._dispatch(None)

    # -- capacity -------------------------------------------------------------------------------
    def time_requests(self, make: Callable[[Callable[[Any, int], None]], Any],
                      n: int = CALIBRATE) -> float:
        """Device time of one request: `make(end_io)` builds a submission; n of them, one
        at a time, the lower quartile (the host's load only ever adds to a sample)."""
        times: list[float] = []
        for _ in range(n):
            done = threading.Event()
            sub = make(lambda rq, st: done.set())
            with self.lock:
                while self.at_device:
                    self.lock.wait(0.01)
                self.at_device += 1
            t0 = time.monotonic()
            try:
                blk.blk_submit_batch(self.disk, [sub])
                done.wait(5)
            finally:
                with self.lock:
                    self.at_device -= 1
            times.append(time.monotonic() - t0)
        wq.queue_work(self.queue, self.work)
        times.sort()
        return times[len(times) // 4]

    def status(self) -> dict[str, Any]:
        with self.lock:
            rows = []
            for r in [*self.ended, *self.reservations.values()]:
                rows.append({"ended": r not in self.reservations.values(), "label": r.label, "rate": r.rate, "sectors": r.sectors,
                             "deadline_ms": r.deadline_s * 1e3, "service_ms":
                             round(r.service_s * 1e3, 3), "served": r.served, "over": r.over,
                             "misses": r.misses, "p99_ms": p99_ms(r.lat),
                             "late_ms": round(r.late_s * 1e3, 3)})
            every = {str(k): p99_ms(v) for k, v in self.latency.items()}
            return {"active": self.active, "unit": "of the disk", "capacity": UTIL_MAX,
                    "reserved": round(self.used(), 4), "reservations": rows,
                    "timeline": {str(k): _row(v) for k, v in sorted(self.timeline.items())},
                    "holds": self.holds, "p99_ms": every, "queued": len(self.reserved) + len(self.best),
                    "best_device_ms": {"rw": _spread_ms(self.best_device),
                                       "flush": _spread_ms(self.flush_device)},
                    "service_ms": {str(k): round(v * 1e3, 3) for k, v in self.service.items()}}

    def shutdown(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()
        wq.destroy_workqueue(self.queue)


def _row(v: list[float]) -> dict[str, float]:
    rn, bn = max(1.0, v[0]), max(1.0, v[4])
    return {"reserved": int(v[0]), "queued_ms": round(v[1] / rn * 1e3, 2),
            "device_ms": round(v[2] / rn * 1e3, 2), "max_ms": round(v[3] * 1e3, 2),
            "best": int(v[4]), "best_device_ms": round(v[5] / bn * 1e3, 2),
            "best_entries": round(v[6] / bn, 1), "best_max_ms": round(v[7] * 1e3, 2)}


def _spread_ms(xs: Any) -> dict[str, float | None]:
    """The recent device times' median, BEST_Q quantile and largest, ms."""
    s = sorted(xs)
    if not s:
        return {"p50": None, "q": None, "max": None}
    return {k: round(s[min(len(s) - 1, int(len(s) * f))] * 1e3, 3)
            for k, f in (("p50", 0.5), ("q", BEST_Q), ("max", 1.0))}


def p99_ms(xs: Any) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3, 3)
