"""Requests built from the ABI's declaration: one value per field of `abi.LAYOUTS[sysno]`.

Each field is drawn by its name and type tag from what the sending fuzz task really holds
(`model.FTask`: its slots by kind, the reply capabilities its thread received, the memory
windows that landed in it); one request in three then has one field turned into a near miss
(slot ±1, an empty slot, a right missing, a stale or unknown reply id, timeout 0, an
out-of-range int, a window off by one), and a few in a hundred a field of the wrong type
(the decoder's refusals).

Timeouts are short (`timeout`): a blocked call ends soon on its own, so the fuzzer never
waits long for a thread; NEVER is drawn rarely, and a thread it blocks is replaced
(`model.STUCK_S`).

Contract: `Fields.request(conn)` answers (sysno, args, payload) and touches nothing but the
conn's reply-capability list (a reply capability drawn is taken from it), the rng and its
own count of requests drawn (every SWEEP_EVERY-th is the next call of a round over all).
"""
from __future__ import annotations

import random
from typing import Any

from kernel.abi import (DMA_RANGE, DMA_WRITE, FIRST_FREE_SLOT, LAYOUTS, MAX_ITEMS, MAX_SLOTS,
                        MAX_TIMEOUT_MS, NEVER, PAGE_SHIFT, SLOT_FACTORY, SLOT_TASK, SLOT_THREAD,
                        VA_BITS, Item, MemRights, Rights, Sys, pack)

from .model import Conn, FTask

WINDOW_BASE = 1 << 32    # where fuzz tasks open memory receive windows (16 MiB apart)
WINDOW_ORDER = 16
FAULT_OPS = ("list", "log", "add", "remove", "crash", "nope")
TRACE_ACTIONS = ("status", "drain", "off", "nope")   # never "on": the fuzz runs untraced

_ALL = int(Rights.ALL)
RIGHT_MASKS = [_ALL] * 4 + [_ALL & ~int(r) for r in Rights if r not in (Rights.NONE, Rights.ALL)] \
    + [0, int(Rights.INVOKE), int(Rights.INVOKE | Rights.GRANT)]
# which model kind a slot-valued field names, by field name (None: any held slot)
SLOT_FIELDS: dict[str, str | None] = {
    "cap": "gate", "gate": "gate", "thread": "thread", "irq": "irq", "factory": "factory",
    "task": "task", "kernel": "kernel", "src": None, "slot": None, "pager": "gate",
    "handler": "gate",
}

# Every call but HELLO (which the fuzzer says itself, `Fuzzer._hello`).
SWEEP: list[Sys] = [s for s in Sys if s != Sys.HELLO]
# How often each call is generated: IPC more than the rest (it is where the state is).
CALL_WEIGHTS: list[Sys] = [s for s in SWEEP for _ in range(
    {Sys.CALL: 6, Sys.SEND: 3, Sys.WAIT: 5, Sys.REPLY: 3, Sys.REPLY_WAIT: 5,
     }.get(s, 2)) if s != Sys.EXIT or _ == 0]
# EXIT is drawn in 1 of 10 of its turns (`request`): a task ends itself now and then.
# Every SWEEP_EVERY-th request is instead the next call of a round over all of them
# (`SWEEP`), so each call is sent, whatever the seed, once per SWEEP_EVERY * len(SWEEP).
SWEEP_EVERY = 20

# Simple fields: name -> a draw from the rng (the rest need the task's holdings).
_SIMPLE: dict[str, Any] = {
    "proto": lambda r: r.choice([0, 0, 0, 1, 7]),
    "mask": lambda r: r.choice(RIGHT_MASKS),
    "label": lambda r: r.randrange(1000),
    "quota": lambda r: r.choice([0, 1, 2, 5]),
    "name": lambda r: r.choice(["sub", "x", "a b", "ünï"]),
    "status": lambda r: r.randrange(256),
    "priority": lambda r: r.randrange(256) if r.random() < 0.5 else None,
    "signal": lambda r: r.choice([None, False]),   # True would SIGUSR2 whatever the task watches
    "access": lambda r: r.choice([int(MemRights.R), int(MemRights.W), int(MemRights.X)]),
    "ip": lambda r: r.randrange(1 << 20),
    "op": lambda r: r.choice(FAULT_OPS),
    "action": lambda r: r.choice(TRACE_ACTIONS),
    "spec": lambda r: r.choice([b"", pack({}), pack({"gate": 1}), b"\xc1"]),
    # rarely: an alien thread's every call goes to its handler first (mostly DENIED)
    "alien": lambda r: True if r.random() < 0.05 else r.choice([None, False]),
}


def _end_with(sleeper: int, pid: int) -> None:
    """Kill `pid` once process `sleeper` has ended, and reap it."""
    import os
    import select
    import signal
    try:
        fd = os.pidfd_open(sleeper)
        select.select([fd], [], [])
        os.close(fd)
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass


class Fields:
    """The generator: `rng` decides, the model supplies what a task holds."""

    def __init__(self, rng: random.Random, sleeper_pid: int) -> None:
        self.rng = rng
        self.sleeper_pid = sleeper_pid      # a process fuzz tasks may legitimately watch
        self.frames = 0                     # RAM frames (sigma0's identity map), once known
        self.trap_pid = 0                   # a trapped Linux-style process (LINUX_ATTACH)
        self.drawn = 0                      # requests drawn so far (the sweep's cadence)

    def trap(self) -> int:
        """A child of ours waiting in its trapped first call (kernel.user.linux.start), for
        LINUX_ATTACH to take (once: then it is the kernel's, killed with its task). A
        watcher thread kills it when the sleeper goes (the fuzzer's end)."""
        import os
        import threading
        from kernel.user import linux
        if not self.trap_pid:
            self.trap_pid = pid = linux.start(b"not an image", [b"fuzz-trap"], [])
            threading.Thread(target=_end_with, args=(self.sleeper_pid, pid),
                             daemon=True).start()
        return self.trap_pid

    # -- fields that come from the task's holdings -------------------------------------
    def slot(self, t: FTask, kind: str | None) -> int:
        r = self.rng
        s = r.choice(t.of(kind) or t.of(None) or [SLOT_TASK])   # the model may be empty
        if r.random() < 0.15:
            s = r.choice([s + 1, s - 1, 0, r.randrange(FIRST_FREE_SLOT, 64), MAX_SLOTS])
        return s

    def dst(self, t: FTask) -> int | None:
        r = self.rng.random()
        if r < 0.6:
            return None
        if r < 0.85:
            return self.rng.randrange(200, MAX_SLOTS - 1)
        return self.rng.choice([*t.of(None), FIRST_FREE_SLOT - 1, MAX_SLOTS, -1])

    def timeout(self, sysno: Sys, name: str) -> int:
        """Short, so blocked calls end soon; long enough that partners meet: a receiver
        waits a while for a caller, a caller waits for the callee's reply."""
        r = self.rng
        if r.random() < 0.005:
            return NEVER
        if name == "rcv_timeout":
            return r.choice([0, 10, 30, 60])
        if sysno in (Sys.WAIT, Sys.REPLY_WAIT):
            return r.choice([0, 5, 20, 40])
        return r.choice([0, 0, 5, 20])

    def items(self, t: FTask) -> list[list[int]]:
        r = self.rng
        x = r.random()
        if x < 0.7:
            return []
        if x < 0.85 or not (t.sigma0 or t.windows):
            kind = int(Item.MAP_CAP) if r.random() < 0.8 else int(Item.GRANT_CAP)
            return [[kind, self.slot(t, None), r.choice(RIGHT_MASKS)]
                    for _ in range(r.choice([1, 1, 2]))]
        vaddr, order = self.fpage(t)
        return [[r.choice([int(Item.MAP_MEM)] * 3 + [int(Item.GRANT_MEM)]), vaddr, order,
                 r.choice([int(MemRights.R), int(MemRights.RW), int(MemRights.RWX), 0])]]

    def fpage(self, t: FTask) -> tuple[int, int]:
        r = self.rng
        if t.sigma0 and self.frames:
            order = r.choice([PAGE_SHIFT, PAGE_SHIFT, PAGE_SHIFT + 1, PAGE_SHIFT + 4])
            page = r.randrange(max(1, self.frames >> (order - PAGE_SHIFT)))
            return page << order, order
        if t.windows:
            return r.choice(t.windows)
        return WINDOW_BASE, PAGE_SHIFT

    def ranges(self, t: FTask) -> bytes:
        """DMA_RANGE records over RAM the task may (or may not) own; rarely a torn one."""
        r = self.rng
        recs = b""
        for _ in range(r.choice([0, 1, 1, 2, 4])):
            if self.frames and r.random() < 0.7:      # a physical page of RAM (sigma0 maps all)
                vaddr, order = r.randrange(self.frames) << PAGE_SHIFT, PAGE_SHIFT
            else:
                vaddr, order = self.fpage(t)
            recs += DMA_RANGE.pack(vaddr, r.choice([1, 1 << order, (1 << order) + 1]),
                                   r.choice([0, DMA_WRITE]))
        return recs if r.random() < 0.95 else recs + b"\x00" * r.choice([1, 23])

    def window(self, t: FTask) -> list[int] | None:
        r = self.rng
        x = r.random()
        if x < 0.5:
            return None
        base = r.randrange(200, MAX_SLOTS - MAX_ITEMS)
        if x < 0.8:
            return [base, r.randint(1, 4)]
        return [base, r.randint(0, 2), WINDOW_BASE + (t.index << 24) + (r.randrange(4) << WINDOW_ORDER),
                WINDOW_ORDER]

    def reply(self, c: Conn) -> int:
        r = self.rng
        if c.replies and r.random() < 0.85:
            return c.replies.pop(r.randrange(len(c.replies)) if r.random() < 0.3 else -1)
        return r.choice([*c.used[-3:], 0, r.randint(1000, 2000), 0])

    def slot_field(self, sysno: Sys, name: str, kind: str, t: FTask) -> int | None:
        r = self.rng
        if kind == "int?" and r.random() < (0.5 if name in ("pager", "handler", "thread") else 0.3):
            return None if r.random() < 0.7 or name not in ("pager", "handler") else 0
        if sysno == Sys.TASK_WATCH and name == "task" and r.random() < 0.5:
            return SLOT_TASK
        if sysno == Sys.LINUX_ATTACH and name == "task" and r.random() < 0.8:
            others = [s for s in t.of("task") if s != SLOT_TASK]   # a sub-task: maybe alien
            return r.choice(others) if others else SLOT_TASK
        if sysno == Sys.MEM_DMA_CHECK and name == "task" and r.random() < 0.8:
            others = [s for s in t.of("task") if s != SLOT_TASK]   # a domain that maps frames
            return r.choice(others) if others else SLOT_TASK
        if sysno in (Sys.OBJ_DESTROY, Sys.CAP_DELETE) and r.random() < 0.9:
            # mostly what the task made: destroying itself ends the exchanges it is in
            return r.choice([s for s in t.of(None) if s >= FIRST_FREE_SLOT] or [SLOT_FACTORY])
        return self.slot(t, SLOT_FIELDS[name])

    def field(self, sysno: Sys, name: str, kind: str, c: Conn) -> Any:
        """A well-formed value for field `name` (type tag `kind`) from `c`'s task's holdings."""
        t, r = c.task, self.rng
        if name in SLOT_FIELDS and kind in ("int", "int?"):
            return self.slot_field(sysno, name, kind, t)
        if name in _SIMPLE:
            return _SIMPLE[name](r)
        if name == "dst":
            return self.dst(t) if sysno != Sys.TASK_MAP else r.randrange(200, MAX_SLOTS)
        if name == "reply":
            return self.reply(c)
        if name == "pid":
            if sysno == Sys.LINUX_ATTACH and r.random() < 0.8:
                return self.trap()
            return r.choice([self.sleeper_pid, self.sleeper_pid, 1])
        if name == "fd":
            return 4 if r.random() < 0.8 else r.randint(-3, 300)   # kernel.user.linux.LISTENER
        if name in ("vaddr", "order"):
            vaddr, order = self.fpage(t)
            return vaddr if name == "vaddr" else order
        if kind == "timeout":
            return self.timeout(sysno, name)
        if kind == "items":
            return self.items(t)
        if kind == "window":
            return self.window(t)
        if kind == "bool?":
            return r.choice([None, False, True])
        return r.randint(-3, 300)

    # -- near misses -------------------------------------------------------------------
    def near_miss(self, kind: str, value: Any) -> Any:
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
        self.drawn += 1
        if self.drawn % SWEEP_EVERY == 0:
            sysno = SWEEP[self.drawn // SWEEP_EVERY % len(SWEEP)]
        else:
            sysno = r.choice(CALL_WEIGHTS)
            if sysno == Sys.EXIT and r.random() < 0.9:
                sysno = Sys.CAP_INSPECT
            if c.replies and r.random() < 0.6:     # a server answers what it was called with
                sysno = r.choice([Sys.REPLY, Sys.REPLY_WAIT, Sys.REPLY_WAIT])
        fields = LAYOUTS[sysno]
        args = [self.field(sysno, f.name, f.kind, c) for f in fields]
        if fields and r.random() < 0.33:
            i = r.randrange(len(fields))
            args[i] = self.near_miss(fields[i].kind, args[i])
        if fields and r.random() < 0.03:
            args[r.randrange(len(fields))] = self.wrong_type()
        payload = None
        if sysno in (Sys.SEND, Sys.CALL, Sys.REPLY, Sys.REPLY_WAIT) and r.random() < 0.5:
            payload = r.randbytes(r.choice([0, 8, 200]))
        elif sysno == Sys.MEM_DMA_CHECK and r.random() < 0.9:
            payload = self.ranges(c.task)
        return sysno, args, payload
