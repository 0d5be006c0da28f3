"""The IPC fast path (kernel/core/fastpath.py) changes speed, never behaviour.

Differential test: two live kernels, one started with `--no-fastpath`, are driven through
the same long, seeded sequence of IPC requests from real ZeroMQ connections (a server thread
and four client threads in five tasks, of three priorities, two of them equal): calls
through each client's own gate (its label tells the server who called), a gate without the
invoke right and an empty slot, negative proto tags, send-only messages, waits, replies with
good, stale and unknown reply capabilities, reply-and-wait, timeouts of 0, never and a few
ms, empty and non-empty payloads, a capability item now and then. The server is often
busy, so clients queue up behind each other in its queue (the test checks that three did at
once): the order it then receives them in — by priority, then arrival — must be the same. After every request the test waits
until every thread that is no longer blocked has its answer (the kernel answers every
request exactly once; a thread's state says whether its call is still in flight), so the
next request, which may depend on those answers (the server replies with the reply
capabilities it was given), is the same in both runs. What each thread was answered, in
order, must be identical in both runs; the fast path must have served a good share of the
requests in one kernel and none in the other; both must count the same IPC and errors, the
same per-task counters (KERNEL_INFO `tasks[].stats`: calls, sent, received, errors) and the
same per-call handler counts, and leave every thread in the same state and priority.

Timeouts are 0, never, or a short finite one (`SHORT_MS`); after a request with a finite
timeout that left its thread blocked, the test waits until the timer has fired (the thread
is idle again) before the next request, so no race between a timer and a partner decides
anything and the sequence stays deterministic.
"""
from __future__ import annotations

import random
import time
from typing import Any

import msgpack
import pytest
import zmq

from kernel.abi import NEVER, Item, Rights, Sys, encode_request
from kernel.core import fastpath
from kernel.user.testing import System

STEPS = 400
SEED = 20261127
SHORT_MS = 4              # (no proto tag of the workload is 4)
CLIENTS = ("c1", "c2", "c3", "c4")
PRIORITY = {"srv": 100, "c1": 100, "c2": 200, "c3": 50, "c4": 200}
# where each call's timeouts sit in the request array
TIMEOUTS = {Sys.CALL: (4, 5), Sys.SEND: (4,), Sys.WAIT: (2,), Sys.REPLY_WAIT: (5,)}


class Conn:
    """One L4 thread spoken to with raw frames, so the test sees exactly what the kernel says."""

    def __init__(self, ctx: zmq.Context, sock_path: str, secret: bytes) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect("ipc://" + sock_path)
        self.sock.send(encode_request(Sys.HELLO, secret))
        assert self.sock.poll(10_000), "HELLO not answered"
        hdr = msgpack.unpackb(self.sock.recv())
        assert hdr[0] == 0, hdr

    def send(self, hdr: bytes, payload: bytes | None) -> None:
        if payload is None:
            self.sock.send(hdr)
        else:
            self.sock.send_multipart([hdr, payload])

    def answers(self, wait_ms: int = 0) -> list[list[Any]]:
        out: list[list[Any]] = []
        while self.sock.poll(wait_ms if not out else 0):
            frames = self.sock.recv_multipart()
            hdr = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
            if hdr[0] != 0:
                hdr = [hdr[0]]       # error reasons may name object ids, which differ
            out.append([hdr, frames[1:]])
        return out


def _next_request(rng: random.Random, pending: list[int],
                  idle: dict[str, bool]) -> tuple[str, bytes, bytes | None]:
    """One request of the seeded workload: mostly a well-behaved client/server exchange,
    with mistakes mixed in. `pending` are the reply capabilities the server holds (taken
    from its answers), so it replies with good ones mostly and stale or unknown ones now
    and then; mostly a thread that is not blocked makes the request (else: BUSY)."""
    clients = [c for c in CLIENTS if idle[c] or rng.random() < 0.1] or list(CLIENTS)
    payload = rng.choice([None, b"", b"p" * rng.randint(1, 300)])
    proto = rng.choice([0] * 8 + [5, -1, 2 ** 63])     # 2**63: outside int64, INVALID
    timeout = rng.choice([0, NEVER, NEVER, NEVER, SHORT_MS])
    r = rng.random()
    if not idle["srv"] and rng.random() < 0.8:
        r = rng.random() * 0.47          # the server is blocked: a client acts
    elif rng.random() < 0.4:
        r = rng.random() * 0.47          # the server is busy: callers queue up behind it
    if r < 0.40:
        who = rng.choice(clients)
        slot = rng.choice([20, 20, 20, 22, 21, 99])
        items = [[int(Item.MAP_CAP), 20, int(Rights.ALL)]] if rng.random() < 0.05 else []
        # A finite receive timeout only when the send cannot block for good: else the caller
        # would sit queued, be delivered later and its reply race its timer.
        rcv = SHORT_MS if timeout != NEVER and rng.random() < 0.3 else NEVER
        return who, encode_request(Sys.CALL, slot, proto, items, timeout, rcv, None), payload
    if r < 0.47:
        who = rng.choice(clients)
        return who, encode_request(Sys.SEND, rng.choice([20, 22]), proto, [], timeout), payload
    if not any(idle[c] for c in CLIENTS):
        timeout = 0                 # nobody could wake the server: don't block it for good
    if r < 0.55:
        return "srv", encode_request(Sys.WAIT, None, timeout), None
    if rng.random() < 0.1:          # a mistake: a reply capability used up or never given
        reply = rng.randint(1, 3) if rng.random() < 0.5 else rng.randint(1000, 1003)
    elif pending:
        reply = pending.pop(rng.randrange(len(pending))) if rng.random() < 0.2 else pending.pop()
    else:
        reply = 0                   # nothing to answer: reply_and_wait just waits
    proto = 0 if proto < 0 or proto > 255 else proto   # (a refused reply leaves its caller blocked)
    if r < 0.65 and reply:
        return "srv", encode_request(Sys.REPLY, reply, proto, []), payload
    return "srv", encode_request(Sys.REPLY_WAIT, reply, proto, [], None, timeout), payload


def _timed_states(req: list[Any]) -> set[str]:
    """The blocked states in which request `req` has a finite (SHORT_MS) timer running."""
    out: set[str] = set()
    for i in TIMEOUTS.get(req[0], ()):
        if req[i] == SHORT_MS:
            out.add("sending" if (req[0], i) in ((Sys.CALL, 4), (Sys.SEND, 4)) else
                    "await_reply" if req[0] == Sys.CALL else "receiving")
    return out


def _run(kernel_args: tuple[str, ...]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    rng = random.Random(SEED)
    ctx = zmq.Context()
    with System(kernel_args=kernel_args) as s:
        root = s.root
        tasks = {name: root.create_task(name, 64) for name in ("srv", *CLIENTS)}
        g9 = root.create_gate(9, thread=tasks["srv"].thread)
        for i, name in enumerate(CLIENTS):
            own = root.create_gate(10 + i, thread=tasks["srv"].thread)   # label: who called
            root.task_map(tasks[name].slot, own, 20, Rights.ALL)
            root.task_map(tasks[name].slot, own, 21, Rights.ALL & ~Rights.INVOKE)
            root.task_map(tasks[name].slot, g9, 22, Rights.ALL)
        for name, prio in PRIORITY.items():
            root.thread_control(tasks[name].thread, priority=prio)
        conns = {name: Conn(ctx, s.sock, new.secret) for name, new in tasks.items()}
        sent = dict.fromkeys(conns, 0)
        idle = dict.fromkeys(conns, True)
        log: dict[str, list[Any]] = {name: [] for name in conns}
        pending: list[int] = []
        seen = 0
        most_queued = 0
        try:
            for _ in range(STEPS):
                who, hdr, payload = _next_request(rng, pending, idle)
                before = root.kernel_info()["stats"]["requests"]
                conns[who].send(hdr, payload)
                sent[who] += 1
                polls = 0
                while True:           # until the kernel has processed our request
                    polls += 1
                    if root.kernel_info()["stats"]["requests"] - before - polls >= 1:
                        break
                req = msgpack.unpackb(hdr)
                # (a thread that was blocked already got BUSY: its earlier call's timer,
                # if any, is not this request's)
                timed = _timed_states(req) if idle[who] else set()
                for _ in range(2000 if timed else 0):
                    # a finite timeout: let its timer decide before anything else happens
                    if root.cap_inspect(tasks[who].thread)["state"] not in timed:
                        break
                    time.sleep(0.001)
                # Every request is answered exactly once; a thread whose call is in flight
                # owes exactly one answer. Collect all the others, so that what the next
                # request is depends on nothing but the kernel's answers.
                states = {name: root.cap_inspect(tasks[name].thread)["state"] for name in conns}
                most_queued = max(most_queued, sum(states[c] == "sending" for c in CLIENTS))
                for name, conn in conns.items():
                    idle[name] = states[name] == "idle"
                    want = sent[name] if idle[name] else sent[name] - 1
                    while len(log[name]) < want:
                        got = conn.answers(wait_ms=10_000)
                        assert got, f"{name}: an answer the kernel owes did not come"
                        log[name] += got
                for hdr_, _frames in log["srv"][seen:]:
                    if len(hdr_) == 6 and hdr_[3]:      # a call arrived: its reply capability
                        pending.append(hdr_[3])
                seen = len(log["srv"])
            info = root.kernel_info()
            stats: dict[str, Any] = dict(info["stats"])
            stats["fast_path"] = info["fast_path"]
            stats["most_queued"] = most_queued
            stats["tasks"] = {t["name"]: t["stats"] for t in info["tasks"] if t["name"] in conns}
            stats["threads"] = {name: {k: v for k, v in root.cap_inspect(tasks[name].thread).items()
                                       if k in ("state", "priority", "alien")} for name in conns}
        finally:
            for c in conns.values():
                c.sock.close(0)
            ctx.term()
    return log, stats


def test_fast_path_answers_exactly_like_the_generic_path() -> None:
    """The fast path the kernel runs by default (compiled when built) against none."""
    fast_log, fast = _run(())
    slow_log, slow = _run(("--no-fastpath",))
    assert fast["fast_path"] == fastpath.KIND and slow["fast_path"] == "off"
    assert slow["fastpath"] == 0
    assert fast["fastpath"] >= 30, f"the fast path served only {fast['fastpath']} requests"
    if fastpath.KIND == "compiled":
        assert fast["fastpath_compiled"] >= 30, (
            f"the compiled fast path served only {fast['fastpath_compiled']} requests")
    _same(fast_log, fast, slow_log, slow)


@pytest.mark.skipif(fastpath.KIND != "compiled", reason="the compiled fast path is not built")
def test_compiled_fast_path_answers_exactly_like_the_python_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled fast path against the Python one (L4PY_FASTPATH=python), answer by
    answer, counter by counter."""
    comp_log, comp = _run(())
    monkeypatch.setenv("L4PY_FASTPATH", "python")
    py_log, py = _run(())
    assert comp["fast_path"] == "compiled" and py["fast_path"] == "python"
    assert py["fastpath_compiled"] == 0 and comp["fastpath_compiled"] >= 30
    _same(comp_log, comp, py_log, py)
    assert comp["fastpath"] == py["fastpath"], "both fast paths together serve the same requests"


def _same(fast_log: dict[str, list[Any]], fast: dict[str, Any],
          slow_log: dict[str, list[Any]], slow: dict[str, Any]) -> None:
    assert sum(len(v) for v in fast_log.values()) > STEPS // 2
    for name in fast_log:
        for i, (a, b) in enumerate(zip(fast_log[name], slow_log[name])):
            assert a == b, f"{name}, answer {i}: fast path {a} vs generic path {b}"
        assert len(fast_log[name]) == len(slow_log[name]), name
    assert fast["most_queued"] >= 3 and slow["most_queued"] >= 3, (
        "the workload never had three clients queued behind each other")
    for key in ("ipc", "errors", "malformed", "kernel_bugs", "tasks", "threads"):
        assert fast[key] == slow[key], f"{key}: fast path {fast[key]} vs generic path {slow[key]}"
    # per call (root's own polling, CAP_INSPECT and KERNEL_INFO, varies with timing)
    polls = ("CAP_INSPECT", "KERNEL_INFO")
    assert {k: v for k, v in fast["handled"].items() if k not in polls} == \
        {k: v for k, v in slow["handled"].items() if k not in polls}
    assert fast["kernel_bugs"] == 0
