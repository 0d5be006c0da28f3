"""Structure-aware fuzzing of the kernel's system calls: the `Fuzzer` loop.

Mechanism: a `Fuzzer` boots nothing itself; it drives a live kernel (a
`kernel.user.testing.System`) through raw ZeroMQ connections of `TASKS` live fuzz tasks,
each with `THREADS` connected threads, wired to each other (gates to each other's threads,
each other's task capabilities; one task holds the kernel capability, one is sigma0 and
owns the RAM). Each request is built by `fields.Fields` from `abi.LAYOUTS` and what the
sending task holds (`model`); the answers teach the model (slots made, reply capabilities
and memory received). HELLO is exercised on fresh connections with fresh, spent and random
secrets.

The loop never waits for one thread: it sends from any thread with no call in flight, reads
whatever answers are there, and blocks (on all sockets at once) only when every thread is
in a call. Generated timeouts are short, the fuzz threads answer the calls they receive
with the reply capabilities they got, and a thread whose call is unanswered for `STUCK_S`
(a NEVER timeout, a fault no pager serves), or whose calls are DENIED three times in a row
because it is alien and no handler answers, is replaced by a fresh thread of the same task:
its connection is closed, which ends it in the kernel. A task that dies (EXIT, destroying
itself, a shootdown it did not acknowledge) is replaced by a fresh one, wired like the first.
Tasks the fuzz tasks create themselves outlive them (their threads' secrets would still
let a process connect) and keep the quota carved for them, so a long run wants a root
quota of about one unit per request (`l4run bench fuzz` gives it).

Contract: `Fuzzer.run(n)` sends `n` generated requests and answers a `model.Report`:
requests per call sent, and per call how many reached its handler — from the kernel's own
counter (KERNEL_INFO `stats.handled`) minus the root task's set-up calls, so only the fuzz's
requests count; HELLO, which the transport answers itself, is counted from the answers only
its handler gives (OK, or NOT_AUTH "unknown or already used secret"). Every answer must be a
well-formed `[err, ...]` array with a reason on errors, or the run fails (`FuzzError`).
`workload_ok` then checks that a plain client/server exchange still works.

Ownership: one Fuzzer per calling thread; it owns its sockets and closes them in `close()`.
"""
from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from typing import Any, Callable

import msgpack
import zmq

from kernel.abi import LAYOUTS, SLOT_KERNEL, SLOT_TASK, Err, Item, Rights, Sys, encode_request
from kernel.user.client import L4
from kernel.user.testing import System

from .fields import Fields
from .model import (ANSWER_BOUND_S, QUOTA, STUCK_S, TASKS, THREADS, Conn, FTask, FuzzError,
                    Report)

HELLO_HANDLER_REASON = "unknown or already used secret"     # only transport._hello says this
UNHANDLED_ALIEN = "no exception handler answered"   # an alien thread's call, denied
MAINTAIN_EVERY = 300     # requests between checks for dead tasks and stuck threads
_ALL = int(Rights.ALL)
_ERRS = frozenset(int(e) for e in Err)


class Fuzzer:
    def __init__(self, system: System, seed: int = 1, tasks: int = TASKS) -> None:
        self.sys = system
        self.root = system.root
        self.rng = random.Random(seed)
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self.by_sock: dict[zmq.Socket, Conn] = {}
        self.tasks: list[FTask] = []
        self.root_calls: dict[str, int] = {}  # root's own calls, subtracted from `handled`
        self.sent: dict[str, int] = {}
        self.ok: dict[str, int] = {}
        self.hello_reached = 0
        self.requests = 0
        self.replaced = 0
        self.renewed = 0
        self.serial = 0
        # A process the fuzz tasks may legitimately TASK_WATCH (its exit would end them).
        self.sleeper = subprocess.Popen(["sleep", "3600"])
        self.gen = Fields(self.rng, self.sleeper.pid)
        self.base = self._handled()
        for i in range(tasks):
            self.tasks.append(self._new_task(i))
        for t in self.tasks:
            self._wire(t)

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

    def _connect(self, t: FTask, secret: bytes, root_slot: int) -> Conn:
        c = Conn(self.ctx, self.sys.sock, t, secret, root_slot)
        t.conns.append(c)
        self.poller.register(c.sock, zmq.POLLIN)
        self.by_sock[c.sock] = c
        return c

    def _drop(self, c: Conn) -> None:
        if c.sock in self.by_sock:
            self.poller.unregister(c.sock)
            del self.by_sock[c.sock]
        c.close()

    def _add_thread(self, t: FTask) -> bool:
        extra = self._try_root(Sys.THREAD_CREATE, self.root.create_thread, task=t.slot)
        if extra is None:
            return False
        t.root_slots.append(extra.slot)
        self._give(t, extra.slot, "thread")
        self._connect(t, extra.secret, extra.slot)
        return True

    def _new_task(self, index: int) -> FTask:
        self.serial += 1
        new = self._root(Sys.TASK_CREATE, self.root.create_task, f"fuzz{index}.{self.serial}", QUOTA)
        t = FTask(index, f"fuzz{index}", new.slot, new.thread, new.task_id)
        t.root_slots += [new.slot, new.thread]
        self._connect(t, new.secret, new.thread)
        for _ in range(THREADS - 1):
            self._add_thread(t)
        own = self._root(Sys.GATE_CREATE, self.root.create_gate, 100 + index, thread=new.thread)
        t.root_slots.append(own)
        self._give(t, own, "gate")
        if index == 1:
            self._give(t, SLOT_KERNEL, "kernel", _ALL & ~int(Rights.DELETE))
        if index == 0:
            res = self._try_root(Sys.MEM_SIGMA0, self.root.mem_sigma0, new.slot)
            if res is not None:
                t.sigma0, self.gen.frames = True, int(res["frames"])
        if index == 2:      # the DMA engine: its MEM_DMA_CHECKs against sigma0 can succeed
            self._try_root(Sys.MEM_DMA, self.root.mem_dma, new.slot)
            s0 = [o for o in self.tasks if o.sigma0 and not o.dead]
            if s0:
                self._give(t, s0[0].slot, "task", int(Rights.INVOKE))
        return t

    def _give(self, t: FTask, root_slot: int, kind: str, rights: int = _ALL) -> None:
        """Map root's `root_slot` into `t` (the next free slot root uses for it)."""
        for _ in range(8):
            dst, t.next_slot = t.next_slot, t.next_slot + 1
            if dst in t.slots:
                continue
            if self._try_root(Sys.TASK_MAP, self.root.task_map, t.slot, root_slot, dst,
                              rights) is not None:
                t.slots[dst] = kind
                return

    def _wire(self, t: FTask) -> None:
        """Connect `t` with every other live task: gates both ways, task capabilities."""
        for o in self.tasks:
            if o is t or o.dead:
                continue
            for a, b in ((t, o), (o, t)):
                live = [c for c in b.conns if c.alive] or b.conns
                g = self._try_root(Sys.GATE_CREATE, self.root.create_gate, 10 + b.index,
                                   thread=self.rng.choice(live).root_slot)
                if g is not None:
                    b.root_slots.append(g)
                    self._give(a, g, "gate")
                self._give(a, b.slot, "task")

    def _replace(self, t: FTask) -> None:
        self.replaced += 1
        for c in t.conns:
            self._drop(c)
        self._try_root(Sys.OBJ_DESTROY, self.root.destroy, t.slot)
        for s in t.root_slots:
            self._try_root(Sys.CAP_DELETE, self.root.cap_delete, s)
        fresh = self._new_task(t.index)
        self.tasks[self.tasks.index(t)] = fresh
        self._wire(fresh)

    def _renew(self, t: FTask, c: Conn) -> None:
        """Replace one thread of `t` (stuck, or gone): close it, give `t` a fresh one."""
        self.renewed += 1
        self._drop(c)
        t.conns.remove(c)
        if c.root_slot:
            self._try_root(Sys.CAP_DELETE, self.root.cap_delete, c.root_slot)
            if c.root_slot in t.root_slots:
                t.root_slots.remove(c.root_slot)
        if not self._add_thread(t) and not t.conns:
            t.dead = True

    # -- the loop ----------------------------------------------------------------------
    def run(self, n: int, deadline_s: float | None = None,
            progress: Callable[[int, float], None] | None = None) -> Report:
        start = time.monotonic()
        for i in range(n):
            if deadline_s is not None and time.monotonic() - start > deadline_s:
                break
            if i % 40 == 0:
                self._hello()
            if i % MAINTAIN_EVERY == 0:
                self._maintain()
            if progress is not None and i and i % 10_000 == 0:
                progress(i, time.monotonic() - start)
            self.step()
        self._drain_all()
        self._maintain()
        handled = self._handled()
        reached = {name: handled.get(name, 0) - self.base.get(name, 0) - self.root_calls.get(name, 0)
                   for name in handled}
        reached["HELLO"] = self.hello_reached
        info = self.root.kernel_info()
        return Report(self.requests, dict(self.sent), reached, dict(self.ok),
                      info["stats"]["kernel_bugs"], info["errors"], self.replaced, self.renewed,
                      time.monotonic() - start)

    def _idle(self) -> list[Conn]:
        return [c for t in self.tasks if not t.dead for c in t.conns
                if c.alive and c.owed == 0]

    def step(self) -> None:
        """Send one generated request from a thread with no call in flight (rarely from
        one that has: the kernel must refuse that too)."""
        r = self.rng
        idle = self._idle()
        waited = time.monotonic()
        while not idle:                          # every thread is in a call: wait for one
            if not self._pump(50):
                self._maintain()
                if time.monotonic() - waited > ANSWER_BOUND_S:
                    raise FuzzError(f"no answer for {ANSWER_BOUND_S} s")
            idle = self._idle()
        live = [c for c in self.by_sock.values() if c.alive and not c.task.dead]
        c = r.choice(idle) if r.random() < 0.97 else r.choice(live)
        while True:
            sysno, args, payload = self.gen.request(c)
            try:
                hdr = msgpack.packb([int(sysno), *args])
                break
            except OverflowError:       # a near miss past what msgpack carries: draw again
                continue
        if c.owed == 0:
            c.outstanding, c.since, c.last = sysno, time.monotonic(), args
        else:
            c.confused = True       # refused (BUSY) or not: the answers can't be told apart
        c.owed += 1
        c.sock.send_multipart([hdr] if payload is None else [hdr, payload])
        self.requests += 1
        self.sent[sysno.name] = self.sent.get(sysno.name, 0) + 1
        self._pump(0)

    def _pump(self, wait_ms: int) -> bool:
        """Read every answer that is there, waiting up to `wait_ms` for the first."""
        got = False
        for sock, _ in self.poller.poll(wait_ms):
            c = self.by_sock.get(sock)
            if c is None:
                continue
            while c.alive and c.sock.poll(0):
                self._answer(c, c.sock.recv_multipart())
                got = True
        return got

    def _answer(self, c: Conn, frames: list[bytes]) -> None:
        try:
            hdr = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
        except Exception:
            raise FuzzError(f"an answer that is not msgpack: {frames[0]!r:.100}") from None
        if not (isinstance(hdr, list) and hdr and hdr[0] in _ERRS):
            raise FuzzError(f"odd answer {hdr!r:.200}")
        if hdr[0] != Err.OK and not (len(hdr) == 2 and isinstance(hdr[1], str) and hdr[1]):
            raise FuzzError(f"an error without a reason: {hdr!r:.200}")
        c.owed = max(c.owed - 1, 0)
        if hdr[0] == Err.NOT_AUTH:
            c.alive = False                    # the thread is gone (its task died)
        if c.confused:                         # not learnt from: whose answer is it?
            if c.owed == 0:
                c.confused, c.outstanding = False, None
            return
        sysno, args = c.outstanding, c.last
        c.outstanding = None
        if sysno is not None and c.alive:
            self._learn(c, sysno, args, hdr)

    def _learn(self, c: Conn, sysno: Sys, args: list[Any], hdr: list[Any]) -> None:
        """Update the model of `c`'s task from the answer to its call."""
        t = c.task
        ok = hdr[0] == Err.OK
        unhandled = hdr[0] == Err.DENIED and UNHANDLED_ALIEN in hdr[1]
        c.denied = c.denied + 1 if unhandled else 0
        if c.denied >= 3:              # every call of it would be DENIED: replace the thread
            c.alive = False
        if ok:
            self.ok[sysno.name] = self.ok.get(sysno.name, 0) + 1
            bad = _wrong_typed(sysno, args)
            if bad is not None:
                raise FuzzError(f"{sysno.name} answered OK with field {bad} of the wrong type: "
                                f"args {args!r:.200}, answer {hdr!r:.200}")
        if sysno in (Sys.WAIT, Sys.CALL, Sys.REPLY_WAIT) and ok and len(hdr) == 6:
            self._received(c, hdr)
        if sysno in (Sys.REPLY, Sys.REPLY_WAIT) and isinstance(args[0], int) and args[0]:
            c.used.append(args[0])
            del c.used[:-8]
        if sysno == Sys.EXIT and ok:
            t.dead = True
        if not ok:
            if sysno == Sys.CAP_INSPECT and hdr[0] == Err.NO_CAP:
                t.slots.pop(args[0], None)
            return
        self._made(t, sysno, args, hdr[1] if len(hdr) == 2 else None)

    @staticmethod
    def _received(c: Conn, hdr: list[Any]) -> None:
        """A message arrived: its reply capability and the items that landed."""
        t = c.task
        if hdr[3]:
            c.replies.append(hdr[3])
        for it in hdr[5]:
            if it[0] in (Item.MAP_CAP, Item.GRANT_CAP):
                t.slots[it[1]] = "any"
            elif len(it) == 4:
                t.windows.append((it[1], it[2]))
                del t.windows[:-16]

    @staticmethod
    def _made(t: FTask, sysno: Sys, args: list[Any], val: Any) -> None:
        """A call that worked: the slots it filled or emptied."""
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
        """Replace dead tasks, and threads stuck or gone; fail if the kernel died."""
        if self.sys.kernel.poll() is not None:
            raise FuzzError(f"the kernel died (exit {self.sys.kernel.returncode})")
        now = time.monotonic()
        alive = {x["id"] for x in self._root(Sys.KERNEL_INFO, self.root.kernel_info)["tasks"]}
        for t in list(self.tasks):
            if t.dead or t.task_id not in alive:
                self._replace(t)
                continue
            for c in list(t.conns):
                if not c.alive or (c.owed and now - c.since > STUCK_S):
                    self._renew(t, c)
            if t.dead:
                self._replace(t)

    def _drain_all(self) -> None:
        """Wait (bounded) for the answers still owed; threads stuck past that are replaced."""
        until = time.monotonic() + STUCK_S + 1
        while time.monotonic() < until and any(
                c.alive and c.owed for c in self.by_sock.values()):
            self._pump(10)

    def close(self) -> None:
        for t in self.tasks:
            for c in t.conns:
                self._drop(c)
            self._try_root(Sys.OBJ_DESTROY, self.root.destroy, t.slot)
        self.tasks = []
        self.ctx.term()
        self.sleeper.kill()
        self.sleeper.wait()


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: type(v) is int, "int?": lambda v: v is None or type(v) is int,
    "str": lambda v: isinstance(v, str), "bytes": lambda v: isinstance(v, bytes),
    "bool?": lambda v: v is None or type(v) is bool,
}


def _wrong_typed(sysno: Sys, args: list[Any]) -> str | None:
    """The first field of `args` whose value does not have its declared type (the kernel
    must refuse such a request), or None."""
    for f, v in zip(LAYOUTS[sysno], args):
        check = _CHECKS.get(f.kind)
        if check is not None and not check(v):
            return f.name
    return None


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
