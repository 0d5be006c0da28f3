"""The `block` device server: the l4disk driver, the DDE/Linux glue and the server in one task.

    [[task]]
    name = "block"
    run = "servers.block.server:main"
    args = ['{"5": {"disk": "disk0", "write": true}, "6": {"disk": "disk0", "first": 2048, "count": 1024, "write": false}}']
    devices = ["disk0"]                                  # io policy: the driver's devices
    provides = ["block"]
    memory = "1M"                                        # a moe session: attaching buffers
    caps = { sigma0 = { service = "sigma0", label = 3 } }   # DMA memory (the ring)

The policy (the task's argument, JSON) maps each client's gate label — the label its
route `block = { service = "block", label = 5 }` has — to a disk (the io device name
"disk0" or the gendisk name "l4disk0"), a range (`first`, `count` sectors; default the
whole disk) and whether it may write. A label without an entry is refused (DENIED).

How a request goes: the client's `submit` names sectors of its range and offsets into its
buffer dataspace, which the server attached in its own address space at `open`. Each is
checked (shape, range, policy) before any is submitted; then the server maps the buffer's
pages for DMA (dma_map_single: the task's VM translates them, faulting them in through moe
the first time) into segments, and hands all of them to the block layer in one batch
(blk_submit_batch: one doorbell). The disk DMAs into the client's pages directly; the IOMMU
allows it because this task maps them. The completion interrupt ends each request; its
end_io puts [tag, status] on the session's done list, which `collect` answers. `info`
says, besides the session's policy and counters, its requests' latency (`latency_ms`: n,
p50, p99, max of the latest LATENCY_KEPT, from submit to completion in this server — what a
client that does not wait for each request, like a pipelined player, cannot time itself).

Faults: a client that dies loses its dataspace (the launcher tells moe, which destroys it
and removes our region of it): the server notices its capability is gone (a sweep at least
every SWEEP_S, and before every open), waits for the session's requests in flight and
forgets it (counted as reaped). A malformed or out-of-range request is refused and counted
for its client only. The server killed mid-transfer is restarted by its policy: the new
driver resets the disk (servers/dde_linux/drivers/l4disk.py), clients get PeerDied, open
again and go on; every write acknowledged by `collect` was on the disk image before.

The main thread serves every client's gate, so a `collect` that waits holds up the others'
requests: with more than one session open, a collect waits at most SHARED_WAIT_MS (the
client library simply asks again).

Reserved sessions (a disk reservation, `reserve`) get a gate of their own, served by a
thread of their own, the reserved thread ("rt/block", ReservedGate): the reservation's
answer carries that gate and the client library sends its requests through it from then on.
From the first reservation on, the main thread is named "be/block": the CPU reservation
manager (servers/rt/server.py) boosts this process's threads to the real-time class but the
"be/" ones, so best-effort clients are served in the ordinary class beside every other
non-real-time load, and a reserved client's request never waits in the main thread's queue
(nor for a best-effort collect's wait). Both threads share the interpreter: the main
thread's work per call is short, and while it holds the interpreter's lock the reserved
thread waits for it (the switch interval is 0.5 ms while scheduling, hostsched.SWITCH_S).
`rt_status` says under `threads` which host thread served each client's last call, with
its policy then.

Ownership: the main DDEKit thread runs the protocol (sessions, counters, the reserved
gates); the reserved thread runs submit/collect for reserved sessions (sessions are only
read there; a session's requests are under its `cond`, the scheduler's under its lock); the
disk's interrupt thread runs end_io, which touches only a session's `inflight`/`done`/
`taken`/`latency` under its `cond`.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kernel.abi import PAGE_SIZE, MemRights, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error, NoCapability
from kernel.user.rpc import Call, Reply, RpcError
from servers.ddekit import env as ddekit_env
from servers.ddekit import thread as dthread
from servers.rt import hostsched as hs
from servers.dde_linux import block as blk
from servers.dde_linux import kernel
from servers.dde_linux.dma import DMA_FROM_DEVICE, DMA_TO_DEVICE, PinnedRange, pin_user_pages
from servers.moe.client import MoeSession

from .rtsched import DiskScheduler
from .protocol import BLOCK, FLUSH, MAX_BUFFER, MAX_WAIT_MS, READ, SECTOR, STATUS_IOERR, WRITE

DRIVER = "servers.dde_linux.drivers.l4disk"
SESSION_SLOTS = 1900            # the clients' buffer capabilities land from here on (each
                                # stays where it landed: the receive window moves on)
MAX_REQ_SECTORS = 256           # 128 KiB per request (33 page segments at most)
DEPTH = 64                      # requests in flight per client
SWEEP_S = 0.5
SHARED_WAIT_MS = 20             # longest collect wait while other sessions are open
SLOW_S = 0.0035                 # a reserved call this long in the server is logged (RT-SLOW)
SLOW_KEPT = 4096                # ... at most this many waiting for the main thread to print
RT_SHARED_WAIT_MS = 1           # ... for a best-effort client while reservations exist
TAG_MAX = 2 ** 31 - 1
LATENCY_KEPT = 20_000           # a session's latest request latencies (submit to completion)
RT_THREAD = hs.RESERVED_PREFIX + "block"   # the reserved sessions' thread (host name)
BE_THREAD = hs.BEST_EFFORT_PREFIX + "block"  # the main thread, once that one exists
OPS = {READ: blk.REQ_OP_READ, WRITE: blk.REQ_OP_WRITE, FLUSH: blk.REQ_OP_FLUSH}
COUNTERS = ("submitted", "completed", "errors", "malformed", "out_of_range", "denied_writes",
            "refused", "sessions")


@dataclass
class Policy:
    disk: str
    first: int
    count: int | None
    write: bool

    def describe(self, sectors: int) -> dict[str, Any]:
        return {"disk": self.disk, "first": self.first, "count": sectors, "write": self.write}


def _at(xs: list[float], q: float) -> float | None:
    """The `q` quantile of the sorted seconds `xs`, in ms (3 digits); None if empty."""
    return round(xs[min(len(xs) - 1, int(len(xs) * q))] * 1e3, 3) if xs else None


def parse_policy(text: str) -> dict[int, Policy]:
    raw = json.loads(text or "{}")
    if not isinstance(raw, dict):
        raise ValueError("block policy must be a JSON object {label: {disk, first, count, write}}")
    out = {}
    for k, v in raw.items():
        if not str(k).isdigit() or int(k) == 0 or not isinstance(v, dict) or "disk" not in v:
            raise ValueError(f"block policy entry {k!r}: must be \"<label >= 1>\": {{\"disk\": ...}}")
        extra = set(v) - {"disk", "first", "count", "write"}
        if extra:
            raise ValueError(f"block policy entry {k!r}: unknown keys {sorted(extra)}")
        count = v.get("count")
        out[int(k)] = Policy(str(v["disk"]), int(v.get("first", 0)),
                             None if count is None else int(count), bool(v.get("write", False)))
    return out


@dataclass
class Session:
    label: int
    policy: Policy
    disk: blk.gendisk
    first: int                        # absolute first sector of the range
    sectors: int                      # sectors in the range
    slot: int                         # our copy of the buffer's capability
    addr: int                         # where the buffer is attached in our space
    size: int
    pinned: PinnedRange | None = None  # the buffer's bus addresses (dma.py)
    cond: threading.Condition = field(default_factory=threading.Condition)
    inflight: set[int] = field(default_factory=set)           # tags; cond
    done: deque[list[int]] = field(default_factory=deque)     # [tag, status]; cond
    taken: dict[int, float] = field(default_factory=dict)     # tag -> when submitted; cond
    latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_KEPT))  # s; cond


class BlockServer:
    def __init__(self, l4: L4, policy: dict[int, Policy]) -> None:
        self.l4 = l4
        self.policy = policy
        self.moe = MoeSession(l4, l4.caps["moe"], recv_slot=3500, timeout=30_000)
        self.sessions: dict[int, Session] = {}                # label -> session
        self.counters: dict[int, dict[str, int]] = {}         # label -> counters
        self.reaped = 0
        self.last_sweep = time.monotonic()
        self.stopping = False
        self.recv_slot = self._free_slot()        # the receive window of the next request
        self.rewindow = False                     # the window moved: serve() again
        self.scheds: dict[str, DiskScheduler] = {}  # disk name -> its real-time scheduler
        self.rt_thread: dthread.Thread | None = None  # serves the reserved gates (main: makes it)
        self.rt_gates: dict[int, int] = {}          # label -> our slot of its reserved gate
        self.rt_tids: dict[str, int] = {}           # "reserved"/"best_effort" -> host TID
        self.served: dict[int, dict[str, Any]] = {}  # label -> the thread of its last call
        self.slow: deque[dict[str, Any]] = deque(maxlen=SLOW_KEPT)  # reserved thread -> main
        for lab, p in policy.items():
            if self._disk(p.disk) is None:
                raise ValueError(f"block policy for label {lab}: no disk {p.disk!r} "
                                 f"(disks: {[d.disk_name for d in blk.disks()]})")

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _disk(name: str) -> blk.gendisk | None:
        d = blk.get_disk(name)
        if d is not None:
            return d
        for d in blk.disks():
            dd = d.private_data
            if getattr(getattr(dd, "pdev", None), "name", None) == name:
                return d
        return None

    def _count(self, label: int, what: str, n: int = 1) -> None:
        c = self.counters.setdefault(label, dict.fromkeys(COUNTERS, 0))
        c[what] += n

    def _session(self, call: Call) -> Session:
        s = self.sessions.get(call.label)
        if s is None:
            raise RpcError("NO_SESSION", "no open session: open first (again, after a restart)")
        return s

    def _refuse(self, label: int, counter: str, error: str, why: str) -> RpcError:
        self._count(label, counter)
        self._count(label, "refused")
        return RpcError(error, why)

    def _free_slot(self, also: int = -1) -> int:
        slot = SESSION_SLOTS
        used = {s.slot for s in self.sessions.values()} | {also}
        while True:
            if slot not in used:
                try:
                    self.l4.cap_inspect(slot)
                except NoCapability:
                    return slot
            slot += 1

    # -- ops ----------------------------------------------------------------------------
    def open(self, call: Call) -> dict[str, Any]:
        pol = self.policy.get(call.label)
        got = call.items[0][1]
        if pol is None:
            self.l4.cap_delete(got)
            raise RpcError("DENIED", f"the block policy has no entry for client {call.label}")
        self.sweep()
        old = self.sessions.pop(call.label, None)
        if old is not None:
            self._end(old)
        slot = got                    # a copy would die with it: keep it, move the window
        self.recv_slot = self._free_slot(also=slot)
        self.rewindow = True
        try:
            region = self.moe.stub.attach(None, int(MemRights.RW), _items=[map_cap(slot, 0x5)])
        except Exception as e:                  # noqa: BLE001 - not a live dataspace
            self.l4.cap_delete(slot)
            raise RpcError("NO_CAP", f"the buffer capability is not a live moe dataspace: {e}")
        addr, size = int(region["addr"]), int(region["size"])
        if size > MAX_BUFFER:
            self._detach(addr, slot)
            raise RpcError("INVALID", f"buffer of {size} bytes: at most {MAX_BUFFER}")
        disk = self._disk(pol.disk)
        assert disk is not None
        first = min(pol.first, disk.capacity)
        sectors = disk.capacity - first if pol.count is None else \
            max(0, min(pol.count, disk.capacity - first))
        self.sessions[call.label] = Session(call.label, pol, disk, first, sectors, slot, addr, size,
                                            pin_user_pages(None, addr, size))
        self._count(call.label, "sessions")
        return {"sectors": sectors, "sector_size": SECTOR, "writable": pol.write,
                "buffer": size, "max_sectors": MAX_REQ_SECTORS, "depth": DEPTH}

    def submit(self, call: Call, reqs: list) -> int:
        s = self._session(call)
        checked = [self._check(s, r) for r in self._shape(s, reqs)]
        subs, failed = [], []
        for tag, op, sector, count, offset in checked:
            segs = [] if op == FLUSH else self._segments(s, op, offset, count * SECTOR)
            if segs is None:
                failed.append(tag)           # the buffer is not mapped (its owner is dying)
                continue
            subs.append((OPS[op], s.first + sector, segs, self._end_io, (s, tag)))
        now = time.monotonic()
        with s.cond:
            s.inflight.update(t for t, *_ in checked)
            s.done.extend([t, STATUS_IOERR] for t in failed)
            s.inflight.difference_update(failed)
            s.taken.update((t, now) for t, *_ in checked if t not in failed)
        self._count(call.label, "submitted", len(checked))
        sched = self.scheds.get(s.disk.disk_name)
        if sched is not None and sched.active:
            sched.enqueue(s.label, subs)             # by deadline / best effort (rtsched.py)
            return len(checked)
        try:
            blk.blk_submit_batch(s.disk, subs)
        except blk.BlkError as e:            # the disk went away under us
            with s.cond:
                for _, _, _, _, (_, tag) in subs:
                    s.inflight.discard(tag)
                    s.taken.pop(tag, None)
                    s.done.append([tag, STATUS_IOERR])
            kernel.printk(kernel.KERN_ERR + "block: %s", e)
        return len(checked)

    def _shape(self, s: Session, reqs: list) -> list[list[int]]:
        if not 1 <= len(reqs) <= DEPTH:
            raise self._refuse(s.label, "malformed", "INVALID", f"1..{DEPTH} requests per submit")
        tags: set[int] = set()
        for r in reqs:
            if not (isinstance(r, list) and len(r) == 5 and all(type(v) is int for v in r)):
                raise self._refuse(s.label, "malformed", "INVALID",
                                   "a request is [tag, op, sector, count, offset] (ints)")
            if not 0 <= r[0] <= TAG_MAX or r[0] in tags:
                raise self._refuse(s.label, "malformed", "INVALID", f"tag {r[0]} bad or repeated")
            tags.add(r[0])
        with s.cond:
            busy = tags & s.inflight
            n = len(s.inflight)
        if busy:
            raise self._refuse(s.label, "malformed", "INVALID", f"tags {sorted(busy)[:5]} in flight")
        if n + len(reqs) > DEPTH:
            raise self._refuse(s.label, "malformed", "INVALID", f"more than {DEPTH} in flight")
        return reqs

    def _check(self, s: Session, r: list[int]) -> tuple[int, int, int, int, int]:
        tag, op, sector, count, offset = r
        if op not in OPS:
            raise self._refuse(s.label, "malformed", "INVALID", f"op {op}: 1 read, 2 write, 3 flush")
        if op == WRITE and not s.policy.write:
            raise self._refuse(s.label, "denied_writes", "READ_ONLY",
                               f"client {s.label} may not write {s.policy.disk}")
        if op == FLUSH:
            if sector or count or offset:
                raise self._refuse(s.label, "malformed", "INVALID", "a flush is [tag, 3, 0, 0, 0]")
            return tag, op, 0, 0, 0
        if not 1 <= count <= MAX_REQ_SECTORS or offset < 0 or offset % SECTOR \
                or offset + count * SECTOR > s.size:
            raise self._refuse(s.label, "malformed", "INVALID",
                               f"count {count} (1..{MAX_REQ_SECTORS}) at buffer offset {offset} "
                               f"(sector aligned, inside {s.size} bytes)")
        if sector < 0 or sector + count > s.sectors:
            raise self._refuse(s.label, "out_of_range", "RANGE",
                               f"sectors {sector}+{count} outside the client's {s.sectors}")
        return tag, op, sector, count, offset

    def _segments(self, s: Session, op: int, offset: int, n: int) -> list[blk.bio_vec] | None:
        """The buffer bytes [offset, offset+n) as DMA segments (physically adjacent pages
        merged): dma_map_sg over the client's pages, None if one is not mapped."""
        va = s.addr + offset
        assert s.pinned is not None
        runs = s.pinned.map_sg(offset, n, DMA_FROM_DEVICE if op == READ else DMA_TO_DEVICE)
        if not runs:
            return None
        segs = []
        for pa, length in runs:
            segs.append(blk.bio_vec(pa, length, va))
            va += length
        return segs

    def _end_io(self, rq: blk.request, status: int) -> None:
        s, tag = rq.end_io_data
        now = time.monotonic()
        with s.cond:
            s.inflight.discard(tag)
            s.done.append([tag, 0 if status == blk.BLK_STS_OK else STATUS_IOERR])
            taken = s.taken.pop(tag, None)
            if taken is not None:
                s.latency.append(now - taken)
            s.cond.notify_all()

    def collect(self, call: Call, least: int, wait_ms: int, own_thread: bool = False
                ) -> list[list[int]]:
        s = self._session(call)
        if least < 0 or not 0 <= wait_ms <= MAX_WAIT_MS:
            raise self._refuse(s.label, "malformed", "INVALID",
                               f"min >= 0, wait_ms 0..{MAX_WAIT_MS}")
        self._note_thread(s.label)
        wait: float = wait_ms
        if len(self.sessions) > 1 and not own_thread:   # one thread serves all: others wait
            wait = min(wait, SHARED_WAIT_MS)
        sched = self.scheds.get(s.disk.disk_name)
        if sched is not None and sched.active and s.label not in sched.reservations \
                and any(lab not in self.rt_gates for lab in sched.reservations):
            # a reserved client may call on this thread: wait until just before it is due
            wait = sched.best_wait_ms(wait, RT_SHARED_WAIT_MS)
        deadline = time.monotonic() + wait / 1e3
        with s.cond:
            while len(s.done) < least and s.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.cond.wait(left)
            out = list(s.done)
            s.done.clear()
        self._count(s.label, "completed", len(out))
        self._count(s.label, "errors", sum(1 for _, st in out if st))
        return out

    def exchange(self, call: Call, reqs: list, least: int, wait_ms: int,
                 own_thread: bool = False) -> tuple[int, list[list[int]]]:
        accepted = self.submit(call, reqs) if reqs else 0
        return accepted, self.collect(call, least, wait_ms, own_thread)

    def note_slow(self, label: int, t_in: float) -> None:
        """A reserved call that took SLOW_S or more in this server: one log line
        "RT-SLOW {label, ahead, ahead_since, due, t}" with its last reserved request's
        stage times `t` (host monotonic s: call in, queued, dispatched, doorbell sent,
        completion seen, client told, answer out), `ahead` the requests at the device when
        it came (the last dispatched at `ahead_since`), `due` its predicted arrival. Kept
        here (the reserved thread), printed by the main thread (`tick`): the reserved
        answer never waits for the log. `l4run bench rt` places late periods by them."""
        t_out = time.monotonic()
        if t_out - t_in < SLOW_S:
            return
        s = self.sessions.get(label)
        sched = self.scheds.get(s.disk.disk_name) if s is not None else None
        p = sched.last.get(label) if sched is not None else None
        if p is None or p.arrived < t_in:
            stages = [t_in, 0.0, 0.0, 0.0, 0.0, 0.0, t_out]
        else:
            stages = [t_in, p.arrived, p.dispatched, p.sent, p.completed, p.answered, t_out]
        self.slow.append({"label": label, "ahead": p.ahead if p else -1,
                          "ahead_since": round(p.ahead_since, 6) if p else 0,
                          "due": round(p.due, 6) if p else 0,
                          "t": [round(v, 6) for v in stages]})

    def _print_slow(self) -> None:
        while self.slow:
            print("RT-SLOW " + json.dumps(self.slow.popleft()), flush=True)

    def _note_thread(self, label: int) -> None:
        """Which host thread served `label`'s call, under which policy (rt_status `served`:
        the tests' evidence that best effort runs in the ordinary class)."""
        self.served[label] = hs.describe_thread(threading.get_native_id())

    def info(self, call: Call) -> dict[str, Any]:
        s = self.sessions.get(call.label)
        pol = self.policy.get(call.label)
        inflight, lat = 0, []
        if s is not None:
            with s.cond:
                inflight = len(s.inflight)
                lat = sorted(s.latency)
        return {"policy": None if pol is None else pol.describe(s.sectors if s else -1),
                "open": s is not None, "inflight": inflight,
                "latency_ms": {"n": len(lat), "p50": _at(lat, 0.5), "p99": _at(lat, 0.99),
                               "max": _at(lat, 1.0)},
                "counters": dict(self.counters.get(call.label, dict.fromkeys(COUNTERS, 0))),
                "server": self._server_info()}

    def _server_info(self) -> dict[str, Any]:
        return {"sessions": len(self.sessions), "reaped": self.reaped,
                "disks": {d.disk_name: dict(d.queue.stats) for d in blk.disks() if d.queue}}

    def release(self, call: Call) -> None:
        s = self._session(call)
        del self.sessions[call.label]
        self._end(s)

    # -- real-time disk scheduling (rtsched.py) ----------------------------------------------
    def reserve(self, call: Call, rate: float, sectors: int, deadline_ms: int) -> Reply:
        s = self._session(call)
        if not 0 < rate <= 100_000:
            raise RpcError("INVALID", f"client {s.label}: rate {rate} must be in (0, 100000] /s")
        if not 1 <= sectors <= MAX_REQ_SECTORS or sectors * SECTOR > s.size or sectors > s.sectors:
            raise RpcError("INVALID", f"client {s.label}: sectors {sectors} must be 1.."
                                      f"{MAX_REQ_SECTORS} and fit its buffer and range")
        if not 1 <= deadline_ms <= 10_000:
            raise RpcError("INVALID", f"client {s.label}: deadline_ms {deadline_ms} not in 1..10000")
        sched = self.scheds.get(s.disk.disk_name)
        if sched is None:
            sched = self.scheds[s.disk.disk_name] = DiskScheduler(s.disk)
        service = sched.service.get(sectors)
        if service is None:
            def make(end_io: Any) -> Any:
                segs = self._segments(s, READ, 0, sectors * SECTOR)
                if segs is None:
                    raise RpcError("INVALID", f"client {s.label}: its buffer is not mapped")
                return (OPS[READ], s.first, segs, end_io, None)
            service = sched.service[sectors] = sched.time_requests(make)
        why = sched.admit(s.label, float(rate), sectors, deadline_ms, service)
        if why is not None:
            self._count(s.label, "refused")
            raise RpcError("REFUSED", f"client {s.label} on {s.disk.disk_name}: {why}")
        gate = self._reserved_gate(s.label)
        return Reply({"rate": rate, "sectors": sectors, "deadline_ms": deadline_ms,
                      "service_ms": round(service * 1e3, 3), "reserved": round(sched.used(), 4),
                      "thread": RT_THREAD}, [map_cap(gate, int(Rights.INVOKE))])

    def unreserve(self, call: Call) -> None:
        s = self._session(call)
        sched = self.scheds.get(s.disk.disk_name)
        if sched is not None:
            sched.release(s.label)
        self._drop_gate(s.label)

    def rt_status(self, call: Call) -> dict[str, Any]:
        threads = {**self.rt_tids, "served": {str(k): v for k, v in self.served.items()}}
        return {name: {**sched.status(), "threads": threads}
                for name, sched in self.scheds.items()}

    # -- reserved sessions: a thread and a gate of their own -------------------------------
    def _reserved_gate(self, label: int) -> int:
        """The gate of `label`'s reserved session (made at its first reservation), served by
        the reserved thread RT_THREAD: the CPU manager boosts that thread while this main
        thread, named BE_THREAD from then on, serves best effort in the ordinary class."""
        if self.rt_thread is None:
            self.rt_thread = dthread.create(RT_THREAD, self._serve_reserved)
            hs.name_thread(BE_THREAD)
            self.rt_tids["best_effort"] = threading.get_native_id()
        gate = self.rt_gates.get(label)
        if gate is None:
            gate = self.rt_gates[label] = int(self.l4.create_gate(label, thread=self.rt_thread.slot))
        return gate

    def _drop_gate(self, label: int) -> None:
        gate = self.rt_gates.pop(label, None)
        if gate is not None:
            try:
                self.l4.cap_delete(gate)       # the client's copy goes with it
            except L4Error:
                pass

    def _serve_reserved(self, _arg: Any) -> None:
        """The reserved thread: serves the reserved gates (ReservedGate) until stopping."""
        hs.name_thread(RT_THREAD)
        self.rt_tids["reserved"] = threading.get_native_id()
        l4, impl = dthread.my_l4(), ReservedGate(self)
        while not self.stopping:
            l4.rt_try()        # to the kernel's real-time port once the CPU manager boosts us
            BLOCK.serve(l4, impl, until=lambda: self.stopping or l4.rt_due(),
                        timeout=SWEEP_S * 1e3)

    def stats(self, call: Call) -> dict[str, Any]:
        out: dict[str, Any] = {str(lab): dict(c) for lab, c in self.counters.items()}
        out["_server"] = self._server_info()
        return out

    # -- sessions that end ------------------------------------------------------------------
    def _end(self, s: Session) -> None:
        sched = self.scheds.get(s.disk.disk_name)
        if sched is not None:
            sched.release(s.label)
        self._drop_gate(s.label)
        with s.cond:
            deadline = time.monotonic() + 10
            while s.inflight and time.monotonic() < deadline:
                s.cond.wait(0.1)
        self._detach(s.addr, s.slot)

    def _detach(self, addr: int, slot: int) -> None:
        try:
            self.moe.detach(addr)
        except Exception:                   # noqa: BLE001 - moe removed it already (owner died)
            pass
        try:
            self.l4.cap_delete(slot)
        except L4Error:
            pass

    def sweep(self) -> None:
        """Forget the sessions whose buffer died with its client."""
        self.last_sweep = time.monotonic()
        for label, s in list(self.sessions.items()):
            try:
                self.l4.cap_inspect(s.slot)
                continue
            except NoCapability:
                pass
            except L4Error:
                pass
            del self.sessions[label]
            self._end(s)
            self.reaped += 1
            kernel.printk(kernel.KERN_INFO + "block: client %d is gone: its session is reaped",
                          label)

    def tick(self) -> bool:
        if self.slow:
            self._print_slow()
        if time.monotonic() - self.last_sweep > SWEEP_S:
            self.sweep()
        return self.stopping or self.rewindow

    def shutdown(self) -> None:
        for s in list(self.sessions.values()):
            self._end(s)
        self.sessions.clear()
        for sched in self.scheds.values():
            sched.shutdown()


class ReservedGate:
    """BLOCK as the reserved thread serves it, on a reserved session's own gate (its label
    is the session's): submit, collect and exchange without waiting behind best effort (a
    collect is never cut short for others: nobody else waits on this thread); `open` only
    through the session's main gate (it needs the main thread's receive window)."""

    def __init__(self, server: BlockServer) -> None:
        self.s = server

    def open(self, call: Call) -> None:
        raise RpcError("DENIED", "open through the block capability, not a reserved gate")

    def collect(self, call: Call, least: int, wait_ms: int) -> list[list[int]]:
        return self.s.collect(call, least, wait_ms, own_thread=True)

    def exchange(self, call: Call, reqs: list, least: int, wait_ms: int) -> tuple[int, list]:
        t_in = time.monotonic()
        out = self.s.exchange(call, reqs, least, wait_ms, own_thread=True)
        self.s.note_slow(call.label, t_in)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s, name)            # submit, info, release, reserve, ...


def _pager_for_buffers(l4: L4) -> None:
    """DDEKit's VM faults on a thread of its own; make moe its pager too, so the clients'
    buffers we attach (moe regions) fault in there like in the main thread."""
    env = ddekit_env.get()
    env.kcall(lambda svc: svc.thread_control(env._mem_slot, pager=l4.caps["moe"]))


def main(l4: L4, policy: str = "{}") -> int:
    rules = parse_policy(policy)
    kernel.boot(l4)
    try:
        _pager_for_buffers(l4)
        ret = kernel.load(DRIVER)
        if ret:
            kernel.printk(kernel.KERN_ERR + "block: the disk driver did not load: %d", ret)
            return 1
        server = BlockServer(l4, rules)
        kernel.printk(kernel.KERN_INFO + "block: serving %s to clients %s",
                      [d.disk_name for d in blk.disks()], sorted(rules))
        while not server.stopping:
            server.rewindow = False
            BLOCK.serve(l4, server, window=(server.recv_slot, 1), until=server.tick,
                        timeout=SWEEP_S * 1e3)
            if not server.rewindow:
                server.sweep()                  # idle: the wait timed out
        server.shutdown()
        return 0
    finally:
        kernel.shutdown()
