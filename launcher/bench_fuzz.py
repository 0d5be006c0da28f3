"""`l4run bench fuzz`: structure-aware fuzzing of the kernel's system calls, and its engine.

Mechanism: a `Fuzzer` boots nothing itself; it drives a live kernel (a
`kernel.user.testing.System`) through raw ZeroMQ connections of several live fuzz tasks,
each with two connected threads, wired to each other (gates to each other's threads, each
other's task capabilities; one task holds the kernel capability, one is sigma0 and owns the
RAM). Every request is built from the ABI's declaration: the fields of `abi.LAYOUTS[sysno]`
in wire order, each drawn by its name and type tag from what the sending task really holds
— the fuzzer keeps a model of every task's slots (gates, threads, tasks, IRQs, factories,
the kernel capability), the reply capabilities its threads received and the memory windows
that landed in it, learnt from the kernel's answers — and then, one time in three, one
field is turned into a near miss (slot ±1, an empty slot, a right missing, a stale or
unknown reply id, timeout 0, an out-of-range int, a window off by one). A few requests in
a hundred carry a field of the wrong type (the decoder's refusals). HELLO is exercised on
fresh connections with fresh, spent and random secrets.

Blocking calls have short timeouts (mostly 0..30 ms, rarely NEVER), and the fuzz threads
answer the calls they receive with the reply capabilities they got, so exchanges complete.
A task that dies (EXIT, destroying itself, a shootdown it did not acknowledge) or a thread
stuck for more than `STUCK_S` is replaced by a fresh one, wired like the first.

Contract: `Fuzzer.run(n)` sends `n` generated requests and answers a `Report`: requests per
call sent, and per call how many reached its handler — from the kernel's own counter
(KERNEL_INFO `stats.handled`) minus the root task's set-up calls, so only the fuzz's
requests count; HELLO, which the transport answers itself, is counted from the answers only
its handler gives (OK, or NOT_AUTH "unknown or already used secret"). Every answer must be a
well-formed `[err, ...]` array with a reason on errors, or the run fails (`FuzzError`).
`workload_ok` then checks that a plain client/server exchange still works.

Ownership: one Fuzzer per calling thread; it owns its sockets and closes them in `close()`.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from typing import Any, Callable, NamedTuple

import msgpack
import zmq

from kernel.abi import (FIRST_FREE_SLOT, LAYOUTS, MAX_ITEMS, MAX_SLOTS, MAX_TIMEOUT_MS, NEVER,
                        PAGE_SHIFT, SLOT_FACTORY, SLOT_KERNEL, SLOT_TASK, SLOT_THREAD, VA_BITS,
                        Err, Item, MemRights, Rights, Sys, encode_request, pack)
from kernel.user.client import L4
from kernel.user.testing import System

STUCK_S = 1.5            # a thread whose call is unanswered this long: its task is replaced
ANSWER_BOUND_S = 20.0    # a kernel that answers nothing this long has hung: the run fails
TASKS = 3
QUOTA = 160
HELLO_HANDLER_REASON = "unknown or already used secret"     # only transport._hello says this
IN_FLIGHT = "already has a call in flight"                   # a refusal, not the call's answer
WINDOW_BASE = 1 << 32    # where fuzz tasks open memory receive windows (16 MiB apart)
WINDOW_ORDER = 16
FAULT_OPS = ("list", "log", "add", "remove", "crash", "nope")

_ALL = int(Rights.ALL)
RIGHT_MASKS = [_ALL] * 4 + [_ALL & ~int(r) for r in Rights if r not in (Rights.NONE, Rights.ALL)] \
    + [0, int(Rights.INVOKE), int(Rights.INVOKE | Rights.GRANT)]
# which model kind a slot-valued field names, by field name (None: any held slot)
SLOT_FIELDS: dict[str, str | None] = {
    "cap": "gate", "gate": "gate", "thread": "thread", "irq": "irq", "factory": "factory",
    "task": "task", "kernel": "kernel", "src": None, "slot": None, "pager": "gate",
    "handler": "gate",
}


class FuzzError(AssertionError):
    """The kernel broke a contract: no answer, an odd answer, or it died."""


class Report(NamedTuple):
    requests: int
    sent: dict[str, int]            # requests generated per call
    reached: dict[str, int]         # requests that reached the call's handler
    ok: dict[str, int]              # requests answered OK (the well-formed ones that worked)
    kernel_bugs: int
    errors: dict[str, int]          # the kernel's error answers, by name (whole run)
    replaced: int                   # tasks replaced (died, or a thread stuck)
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "handlers_reached": sum(1 for s in Sys if self.reached.get(s.name, 0) > 0),
                "system_calls": len(Sys), "kernel_bugs": self.kernel_bugs,
                "per_call": {s.name: self.reached.get(s.name, 0) for s in Sys},
                "sent": self.sent, "ok": self.ok, "errors": self.errors, "tasks_replaced": self.replaced,
                "seconds": round(self.seconds, 2)}


class Conn:
    """One fuzz thread: a raw DEALER connection that said HELLO, and what it is owed."""

    def __init__(self, ctx: zmq.Context, sock_path: str, task: "FTask", secret: bytes,
                 root_slot: int) -> None:
        self.task = task
        self.root_slot = root_slot            # root's capability to this thread (0: none)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect("ipc://" + sock_path)
        self.sock.send(encode_request(Sys.HELLO, secret))
        if not self.sock.poll(int(ANSWER_BOUND_S * 1000)):
            raise FuzzError("HELLO not answered")
        hdr = msgpack.unpackb(self.sock.recv_multipart()[0], raw=False)
        self.alive = hdr[0] == 0
        self.outstanding: Sys | None = None   # the call whose answer we wait for
        self.since = 0.0
        self.replies: list[int] = []          # reply capabilities received, unused
        self.used: list[int] = []             # reply capabilities already used (stale)
        self.last: list[Any] = []             # the header of the outstanding request

    def close(self) -> None:
        self.sock.close(0)


class FTask:
    """A fuzz task: root's capabilities to it, and the model of its slots."""

    def __init__(self, index: int, name: str, slot: int, thread: int, task_id: int) -> None:
        self.index = index
        self.name = name
        self.slot = slot                      # root's capability to the task
        self.thread = thread                  # root's capability to its main thread
        self.task_id = task_id
        self.conns: list[Conn] = []
        self.slots: dict[int, str] = {SLOT_TASK: "task", SLOT_THREAD: "thread",
                                      SLOT_FACTORY: "factory"}
        self.windows: list[tuple[int, int]] = []   # memory that landed here (vaddr, order)
        self.secrets: list[bytes] = []        # secrets of threads it created (for HELLO)
        self.root_slots: list[int] = []       # root's slots made for it (deleted with it)
        self.next_slot = 16                   # where root maps things into it
        self.dead = False
        self.sigma0 = False

    def of(self, kind: str | None) -> list[int]:
        return [s for s, k in self.slots.items() if kind is None or k == kind]


class Fuzzer:
    def __init__(self, system: System, seed: int = 1, tasks: int = TASKS) -> None:
        self.sys = system
        self.root = system.root
        self.rng = random.Random(seed)
        self.ctx = zmq.Context()
        self.tasks: list[FTask] = []
        self.root_calls: dict[str, int] = {}  # root's own calls, subtracted from `handled`
        self.sent: dict[str, int] = {}
        self.ok: dict[str, int] = {}
        self.hello_reached = 0
        self.requests = 0
        self.replaced = 0
        self.serial = 0
        self.frames = 0                       # RAM frames (sigma0's identity map)
        # A process the fuzz tasks may legitimately TASK_WATCH (its exit would end them).
        self.sleeper = subprocess.Popen(["sleep", "3600"])
        self.base = self._handled()
        for i in range(tasks):
            self.tasks.append(self._new_task(i))
        self._wire_all()

    # -- root-side set-up (counted, so the fuzz's own share of `handled` is exact) -------
    def _root(self, sysno: Sys, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.root_calls[sysno.name] = self.root_calls.get(sysno.name, 0) + 1
        return fn(*args, **kw)

    def _try_root(self, sysno: Sys, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return self._root(sysno, fn, *args, **kw)
        except Exception:
            return None

    def _handled(self) -> dict[str, int]:
        info = self._root(Sys.KERNEL_INFO, self.root.kernel_info)
        return dict(info["stats"]["handled"])

    def _new_task(self, index: int) -> FTask:
        self.serial += 1
        new = self._root(Sys.TASK_CREATE, self.root.create_task, f"fuzz{index}.{self.serial}", QUOTA)
        t = FTask(index, f"fuzz{index}", new.slot, new.thread, new.task_id)
        t.root_slots += [new.slot, new.thread]
        t.conns.append(Conn(self.ctx, self.sys.sock, t, new.secret, new.thread))
        extra = self._root(Sys.THREAD_CREATE, self.root.create_thread, task=new.slot)
        t.root_slots.append(extra.slot)
        self._give(t, extra.slot, "thread")
        t.conns.append(Conn(self.ctx, self.sys.sock, t, extra.secret, extra.slot))
        own = self._root(Sys.GATE_CREATE, self.root.create_gate, 100 + index, thread=new.thread)
        t.root_slots.append(own)
        self._give(t, own, "gate")
        if index == 1:
            self._give(t, SLOT_KERNEL, "kernel", _ALL & ~int(Rights.DELETE))
        if index == 0:
            res = self._try_root(Sys.MEM_SIGMA0, self.root.mem_sigma0, new.slot)
            if res is not None:
                t.sigma0, self.frames = True, int(res["frames"])
        return t

    def _give(self, t: FTask, root_slot: int, kind: str, rights: int = _ALL) -> None:
        """Map root's `root_slot` into `t` (the next free slot root uses for it)."""
        for _ in range(8):
            dst, t.next_slot = t.next_slot, t.next_slot + 1
            if dst in t.slots:
                continue
            if self._try_root(Sys.TASK_MAP, self.root.task_map, t.slot, root_slot, dst, rights) is not None:
                t.slots[dst] = kind
                return

    def _wire_all(self) -> None:
        for t in self.tasks:
            self._wire(t)

    def _wire(self, t: FTask) -> None:
        """Connect `t` with every other live task: gates both ways, task capabilities."""
        for o in self.tasks:
            if o is t or o.dead:
                continue
            for a, b in ((t, o), (o, t)):
                if any(k == "gate:" + b.name for k in a.slots.values()):
                    continue
                g = self._try_root(Sys.GATE_CREATE, self.root.create_gate, 10 + b.index,
                                   thread=b.conns[self.rng.randrange(len(b.conns))].root_slot)
                if g is not None:
                    b.root_slots.append(g)
                    self._give(a, g, "gate")
                self._give(a, b.slot, "task")

    def _replace(self, t: FTask) -> None:
        self.replaced += 1
        for c in t.conns:
            c.close()
        self._try_root(Sys.OBJ_DESTROY, self.root.destroy, t.slot)
        for s in t.root_slots:
            self._try_root(Sys.CAP_DELETE, self.root.cap_delete, s)
        fresh = self._new_task(t.index)
        self.tasks[self.tasks.index(t)] = fresh
        self._wire(fresh)

    # -- field generators: one per field name / type tag of abi.LAYOUTS --------------
    def _slot(self, t: FTask, kind: str | None) -> int:
        r = self.rng
        pool = t.of(kind) or t.of(None)
        s = r.choice(pool)
        if r.random() < 0.15:
            s = r.choice([s + 1, s - 1, 0, r.randrange(FIRST_FREE_SLOT, 64), MAX_SLOTS])
        return s

    def _dst(self, t: FTask) -> int | None:
        r = self.rng.random()
        if r < 0.6:
            return None
        if r < 0.85:
            return self.rng.randrange(200, MAX_SLOTS - 1)
        return self.rng.choice([*t.of(None), FIRST_FREE_SLOT - 1, MAX_SLOTS, -1])

    def _timeout(self, sysno: Sys, name: str) -> int:
        """Short, so blocked calls end soon; long enough that partners meet: a receiver
        waits a while for a caller, a caller waits for the callee's reply."""
        r = self.rng
        if r.random() < 0.01:
            return NEVER
        if name == "rcv_timeout":
            return r.choice([0, 20, 60, 150])
        if sysno in (Sys.WAIT, Sys.REPLY_WAIT):
            return r.choice([0, 10, 40, 80])
        return r.choice([0, 0, 5, 30])

    def _items(self, t: FTask) -> list[list[int]]:
        r = self.rng
        x = r.random()
        if x < 0.7:
            return []
        if x < 0.85 or not (t.sigma0 or t.windows):
            kind = int(Item.MAP_CAP) if r.random() < 0.8 else int(Item.GRANT_CAP)
            return [[kind, self._slot(t, None), r.choice(RIGHT_MASKS)]
                    for _ in range(r.choice([1, 1, 2]))]
        vaddr, order = self._fpage(t)
        return [[r.choice([int(Item.MAP_MEM)] * 3 + [int(Item.GRANT_MEM)]), vaddr, order,
                 r.choice([int(MemRights.R), int(MemRights.RW), int(MemRights.RWX), 0])]]

    def _fpage(self, t: FTask) -> tuple[int, int]:
        r = self.rng
        if t.sigma0 and self.frames:
            order = r.choice([PAGE_SHIFT, PAGE_SHIFT, PAGE_SHIFT + 1, PAGE_SHIFT + 4])
            page = r.randrange(max(1, self.frames >> (order - PAGE_SHIFT)))
            return page << order, order
        if t.windows:
            return r.choice(t.windows)
        return WINDOW_BASE, PAGE_SHIFT

    def _window(self, t: FTask) -> list[int] | None:
        r = self.rng
        x = r.random()
        if x < 0.5:
            return None
        base = r.randrange(200, MAX_SLOTS - MAX_ITEMS)
        if x < 0.8:
            return [base, r.randint(1, 4)]
        return [base, r.randint(0, 2), WINDOW_BASE + (t.index << 24) + (r.randrange(4) << WINDOW_ORDER),
                WINDOW_ORDER]

    def _reply(self, c: Conn) -> int:
        r = self.rng
        if c.replies and r.random() < 0.85:
            return c.replies.pop(r.randrange(len(c.replies)) if r.random() < 0.3 else -1)
        return r.choice([*c.used[-3:], 0, r.randint(1000, 2000), 0])

    def field(self, sysno: Sys, name: str, kind: str, c: Conn) -> Any:
        """A well-formed value for field `name` (type tag `kind`) from `c`'s task's holdings."""
        t, r = c.task, self.rng
        if name in SLOT_FIELDS and kind in ("int", "int?"):
            if kind == "int?" and r.random() < (0.5 if name in ("pager", "handler", "thread") else 0.3):
                return None if r.random() < 0.7 or name not in ("pager", "handler") else 0
            if sysno == Sys.TASK_WATCH and name == "task" and r.random() < 0.5:
                return SLOT_TASK
            if sysno in (Sys.OBJ_DESTROY, Sys.CAP_DELETE) and r.random() < 0.9:
                # mostly what the task made: destroying itself ends the exchanges it is in
                return r.choice([s for s in t.of(None) if s >= FIRST_FREE_SLOT] or [SLOT_FACTORY])
            return self._slot(t, SLOT_FIELDS[name])
        if name == "dst":
            return self._dst(t) if sysno != Sys.TASK_MAP else r.randrange(200, MAX_SLOTS)
        if name == "reply":
            return self._reply(c)
        if name == "proto":
            return r.choice([0, 0, 0, 1, 7])
        if name in ("mask",):
            return r.choice(RIGHT_MASKS)
        if name == "label":
            return r.randrange(1000)
        if name == "quota":
            return r.choice([0, 1, 2, 5])
        if name == "name":
            return r.choice(["sub", "x", "a b", "ünï"])
        if name == "status":
            return r.randrange(256)
        if name == "pid":
            return r.choice([self.sleeper.pid, self.sleeper.pid, 1])
        if name == "priority":
            return r.randrange(256) if r.random() < 0.5 else None
        if name == "signal":
            return r.choice([None, False])   # True would SIGUSR2 whatever the task watches
        if name in ("vaddr", "order"):
            vaddr, order = self._fpage(t)
            return vaddr if name == "vaddr" else order
        if name == "access":
            return r.choice([int(MemRights.R), int(MemRights.W), int(MemRights.X)])
        if name == "ip":
            return r.randrange(1 << 20)
        if name == "op":
            return r.choice(FAULT_OPS)
        if name == "spec":
            return r.choice([b"", pack({}), pack({"gate": 1}), b"\xc1"])
        if kind == "timeout":
            return self._timeout(sysno, name)
        if kind == "items":
            return self._items(t)
        if kind == "window":
            return self._window(t)
        if name == "alien":
            # rarely: an alien thread's every call goes to its handler first (mostly DENIED)
            return True if r.random() < 0.05 else r.choice([None, False])
        if kind == "bool?":
            return r.choice([None, False, True])
        return r.randint(-3, 300)

    def near_miss(self, kind: str, value: Any, c: Conn) -> Any:
        """A value one step off `value`: what a buggy check would let through."""
        r = self.rng
        if kind in ("int", "int?"):
            if isinstance(value, int):
                return r.choice([value + 1, value - 1, 0, -1, MAX_SLOTS, 2 ** 63 - 1, -(2 ** 63),
                                 value & ~1 if value else 1])
            return r.choice([0, -1, 1])
        if kind == "timeout":
            return r.choice([0, 0, -2, MAX_TIMEOUT_MS, MAX_TIMEOUT_MS + 1])
        if kind == "window":
            return r.choice([[FIRST_FREE_SLOT - 1, 1], [MAX_SLOTS - 1, 2], [200, MAX_ITEMS + 1],
                             [200, 1, WINDOW_BASE + 1, WINDOW_ORDER], [200, 1, 0, PAGE_SHIFT - 1],
                             [200, 1, 0, VA_BITS + 1]])
        if kind == "items":
            return r.choice([[[int(Item.MAP_CAP), 999, _ALL]], [[9, 1, 1]],
                             [[int(Item.MAP_CAP), SLOT_TASK, _ALL]] * 2,
                             [[int(Item.MAP_MEM), 1, PAGE_SHIFT, int(MemRights.R)]],
                             [[int(Item.MAP_CAP), SLOT_THREAD, 0]] * (MAX_ITEMS + 1)])
        if kind == "str":
            return r.choice(["", "\n", "x" * 256])
        if kind == "bytes":
            return r.choice([b"", b"\x80", pack([1, 2])])
        return None if value is not None else False

    def wrong_type(self) -> Any:
        return self.rng.choice([1.5, "1", b"1", [1], {"a": 1}, True, 2 ** 64 - 1])

    def request(self, c: Conn) -> tuple[Sys, list[Any], bytes | None]:
        r = self.rng
        sysno = r.choice(CALL_WEIGHTS)
        if sysno == Sys.EXIT and r.random() < 0.9:
            sysno = Sys.CAP_INSPECT
        if c.replies and r.random() < 0.6:         # a server answers what it was called with
            sysno = r.choice([Sys.REPLY, Sys.REPLY_WAIT, Sys.REPLY_WAIT])
        fields = LAYOUTS[sysno]
        args = [self.field(sysno, f.name, f.kind, c) for f in fields]
        if fields and r.random() < 0.33:
            i = r.randrange(len(fields))
            args[i] = self.near_miss(fields[i].kind, args[i], c)
        if fields and r.random() < 0.03:
            args[r.randrange(len(fields))] = self.wrong_type()
        payload = None
        if sysno in (Sys.SEND, Sys.CALL, Sys.REPLY, Sys.REPLY_WAIT) and r.random() < 0.5:
            payload = r.randbytes(r.choice([0, 8, 200]))
        return sysno, args, payload

    # -- the loop ----------------------------------------------------------------------
    def run(self, n: int, deadline_s: float | None = None) -> Report:
        start = time.monotonic()
        for i in range(n):
            if deadline_s is not None and time.monotonic() - start > deadline_s:
                break
            if i % 40 == 0:
                self._hello()
            if i % 150 == 0:
                self._maintain()
            self.step()
        self._drain_all()
        self._maintain()
        handled = self._handled()
        reached = {name: handled.get(name, 0) - self.base.get(name, 0) - self.root_calls.get(name, 0)
                   for name in handled}
        reached["HELLO"] = self.hello_reached
        info = self.root.kernel_info()
        return Report(self.requests, dict(self.sent), reached, dict(self.ok), info["stats"]["kernel_bugs"],
                      info["errors"], self.replaced, time.monotonic() - start)

    def step(self) -> None:
        r = self.rng
        live = [c for t in self.tasks if not t.dead for c in t.conns if c.alive]
        idle = [c for c in live if c.outstanding is None]
        if not live:
            self._maintain()
            return
        if not idle:                                # everyone is blocked: let time pass
            self._pump(None, 0)
            live[0].sock.poll(2)
            idle = [c for c in live if c.outstanding is None]
        c = r.choice(idle) if idle and r.random() < 0.97 else r.choice(live)
        while True:
            sysno, args, payload = self.request(c)
            try:
                hdr = msgpack.packb([int(sysno), *args])
                break
            except OverflowError:       # a near miss past what msgpack carries: draw again
                continue
        if c.outstanding is None:
            c.outstanding, c.since, c.last = sysno, time.monotonic(), args
        c.sock.send_multipart([hdr] if payload is None else [hdr, payload])
        self.requests += 1
        self.sent[sysno.name] = self.sent.get(sysno.name, 0) + 1
        self._pump(c, 0.004)

    def _pump(self, c: Conn | None, wait_s: float) -> None:
        """Read every answer that is there; wait up to `wait_s` for `c`'s."""
        until = time.monotonic() + wait_s
        while True:
            got = False
            for t in self.tasks:
                for x in t.conns:
                    if x.alive and x.sock.poll(0):
                        self._answer(x, x.sock.recv_multipart())
                        got = True
            if c is None or c.outstanding is None or time.monotonic() >= until:
                if not got:
                    return
            elif not got:
                c.sock.poll(1)

    def _answer(self, c: Conn, frames: list[bytes]) -> None:
        try:
            hdr = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
        except Exception:
            raise FuzzError(f"an answer that is not msgpack: {frames[0]!r:.100}") from None
        if not (isinstance(hdr, list) and hdr and hdr[0] in set(Err)):
            raise FuzzError(f"odd answer {hdr!r:.200}")
        if hdr[0] != Err.OK and not (len(hdr) == 2 and isinstance(hdr[1], str) and hdr[1]):
            raise FuzzError(f"an error without a reason: {hdr!r:.200}")
        if hdr[0] == Err.BUSY and IN_FLIGHT in hdr[1]:
            return                             # refused on arrival; the call in flight goes on
        if hdr[0] == Err.NOT_AUTH:
            c.alive = False                    # the thread is gone (its task died)
            c.outstanding = None
            return
        sysno, args = c.outstanding, c.last
        c.outstanding = None
        if sysno is not None:
            self._learn(c, sysno, args, hdr)

    def _learn(self, c: Conn, sysno: Sys, args: list[Any], hdr: list[Any]) -> None:
        """Update the model of `c`'s task from the answer to its call."""
        t = c.task
        ok = hdr[0] == Err.OK
        if ok:
            self.ok[sysno.name] = self.ok.get(sysno.name, 0) + 1
        if sysno in (Sys.WAIT, Sys.CALL, Sys.REPLY_WAIT) and ok and len(hdr) == 6:
            if hdr[3]:
                c.replies.append(hdr[3])
            for it in hdr[5]:
                if it[0] in (Item.MAP_CAP, Item.GRANT_CAP):
                    t.slots[it[1]] = "any"
                elif len(it) == 4:
                    t.windows.append((it[1], it[2]))
                    del t.windows[:-16]
        if sysno in (Sys.REPLY, Sys.REPLY_WAIT) and isinstance(args[0], int) and args[0]:
            c.used.append(args[0])
            del c.used[:-8]
        if sysno == Sys.EXIT and ok:
            t.dead = True
        if not ok:
            if sysno in (Sys.CAP_INSPECT,) and hdr[0] == Err.NO_CAP:
                t.slots.pop(args[0], None)
            return
        val = hdr[1] if len(hdr) == 2 else None
        made = {Sys.GATE_CREATE: "gate", Sys.IRQ_CREATE: "irq"}
        if sysno in made and isinstance(val, int):
            t.slots[val] = made[sysno]
        elif sysno == Sys.THREAD_CREATE and isinstance(val, list):
            t.slots[val[0]] = "thread"
            t.secrets.append(val[1])
            del t.secrets[:-4]
        elif sysno == Sys.TASK_CREATE and isinstance(val, list):
            t.slots[val[0]], t.slots[val[1]] = "task", "thread"
        elif sysno == Sys.CAP_DERIVE and isinstance(val, int):
            t.slots[val] = t.slots.get(args[0], "any")
        elif sysno == Sys.CAP_DELETE:
            t.slots.pop(args[0], None)
        elif sysno == Sys.CAP_INSPECT and isinstance(val, dict):
            t.slots[args[0]] = str(val.get("type", "any"))
        elif sysno == Sys.TASK_MAP and args[0] == SLOT_TASK:
            t.slots[args[2]] = t.slots.get(args[1], "any")

    def _hello(self) -> None:
        """HELLO on a fresh connection: a secret our task was given, a spent one, a random one."""
        r = self.rng
        t = r.choice(self.tasks)
        secret = t.secrets.pop() if t.secrets and r.random() < 0.5 else r.randbytes(16)
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect("ipc://" + self.sys.sock)
        try:
            sock.send(encode_request(Sys.HELLO, secret))
            self.requests += 1
            self.sent["HELLO"] = self.sent.get("HELLO", 0) + 1
            if not sock.poll(int(ANSWER_BOUND_S * 1000)):
                raise FuzzError("HELLO not answered")
            hdr = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
            if hdr[0] == Err.OK or (hdr[0] == Err.NOT_AUTH and HELLO_HANDLER_REASON in hdr[1]):
                self.hello_reached += 1
            if hdr[0] == Err.OK:
                self.ok["HELLO"] = self.ok.get("HELLO", 0) + 1
        finally:
            sock.close(0)               # a bound thread whose connection closes is gone

    def _maintain(self) -> None:
        """Replace dead tasks and tasks with a stuck thread; fail if the kernel died."""
        if self.sys.kernel.poll() is not None:
            raise FuzzError(f"the kernel died (exit {self.sys.kernel.returncode})")
        now = time.monotonic()
        alive = {x["id"] for x in self._root(Sys.KERNEL_INFO, self.root.kernel_info)["tasks"]}
        for t in list(self.tasks):
            stuck = [c for c in t.conns if c.alive and c.outstanding is not None
                     and now - c.since > STUCK_S]
            if t.dead or t.task_id not in alive or not t.conns[0].alive or stuck:
                self._replace(t)

    def _drain_all(self) -> None:
        """Wait (bounded) for the answers still owed; tasks stuck past that are replaced."""
        until = time.monotonic() + STUCK_S + 1
        while time.monotonic() < until and any(
                c.alive and c.outstanding is not None for t in self.tasks for c in t.conns):
            self._pump(None, 0)
            time.sleep(0.005)

    def close(self) -> None:
        for t in self.tasks:
            for c in t.conns:
                c.close()
            self._try_root(Sys.OBJ_DESTROY, self.root.destroy, t.slot)
        self.tasks = []
        self.ctx.term()
        self.sleeper.kill()
        self.sleeper.wait()


# How often each call is generated: IPC more than the rest (it is where the state is).
CALL_WEIGHTS: list[Sys] = [s for s in Sys if s != Sys.HELLO for _ in range(
    {Sys.CALL: 6, Sys.SEND: 3, Sys.WAIT: 5, Sys.REPLY: 3, Sys.REPLY_WAIT: 5,
     }.get(s, 2)) if s != Sys.EXIT or _ == 0]
# EXIT is drawn in 1 of 10 of its turns (`request`): a task ends itself now and then.


def workload_ok(system: System, calls: int = 50) -> None:
    """A plain client/server exchange still works: a new root thread serves an echo loop,
    root's main thread calls it `calls` times with sizes up to 4 KiB and checks each answer."""
    root = system.root
    new = root.create_thread()
    me = L4(system.sock, new.secret, ctx=root.ctx)
    gate = root.create_gate(77, thread=new.slot)

    def serve() -> None:
        msg = me.wait(timeout=20_000)
        while msg.data != b"stop":
            msg = me.reply_and_wait(msg.reply, msg.data[::-1], proto=msg.proto, timeout=20_000)
        me.reply(msg.reply, b"bye")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        for i in range(calls):
            data = os.urandom(i * 97 % 4096)
            got = root.call(gate, data, proto=i % 7, rcv_timeout=20_000)
            if got.data != data[::-1] or got.proto != i % 7:
                raise FuzzError(f"echo {i} answered wrongly after the fuzz")
        if root.call(gate, b"stop", rcv_timeout=20_000).data != b"bye":
            raise FuzzError("the echo server did not stop")
    finally:
        th.join(20)
        me.close()                  # its thread goes with its connection
        root.cap_delete(gate)


def run_fuzz_bench(requests: int = 100_000, seed: int = 1) -> dict[str, Any]:
    """Boot a kernel, fuzz it with `requests` generated requests, check a workload after."""
    with System() as s:
        fz = Fuzzer(s, seed)
        try:
            rep = fz.run(requests)
        finally:
            fz.close()
        workload_ok(s)
        res = rep.as_json()
        res["kernel_bugs"] = s.root.kernel_info()["stats"]["kernel_bugs"]
        res["workload_ok"] = True
        return res


def register(group: Any) -> None:
    import click

    @group.command("fuzz")
    @click.option("--requests", "n", default=100_000, show_default=True,
                  help="generated requests to send")
    @click.option("--seed", default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    def fuzz(n: int, seed: int, as_json: bool) -> None:
        """Structure-aware fuzz of every system call (from the ABI's LAYOUTS) over live tasks."""
        res = run_fuzz_bench(n, seed)
        if as_json:
            click.echo(json.dumps(res))
            return
        click.echo(f"{res['requests']} requests in {res['seconds']} s; handlers reached "
                   f"{res['handlers_reached']}/{res['system_calls']}; kernel_bugs "
                   f"{res['kernel_bugs']}; tasks replaced {res['tasks_replaced']}")
        for name, count in res["per_call"].items():
            click.echo(f"  {name:14} {count:8} of {res['sent'].get(name, 0)}")
