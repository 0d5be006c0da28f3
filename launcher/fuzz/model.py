"""What the kernel fuzzer knows: its fuzz threads (connections), its tasks' slots, its report.

A `Conn` is one fuzz thread: a raw DEALER connection that said HELLO, with at most one call
in flight (`outstanding`) and the reply capabilities it received. An `FTask` is a fuzz task:
root's capabilities to it, the threads it runs on, and the model of its slots (what kind of
object each holds), learnt from the kernel's answers — a model, never trusted: a slot the
model thinks holds a gate may hold nothing, which is one more near miss.

Ownership: every object here belongs to the one `Fuzzer` (and its thread) that made it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
import zmq

from kernel.abi import SLOT_FACTORY, SLOT_TASK, SLOT_THREAD, Sys, encode_request

STUCK_S = 0.5            # a thread whose call is unanswered this long is replaced (not its task)
ANSWER_BOUND_S = 20.0    # a kernel that answers nothing this long has hung: the run fails
TASKS = 3                # fuzz tasks
THREADS = 3              # connected threads per fuzz task
QUOTA = 160              # each fuzz task's factory quota


class FuzzError(AssertionError):
    """The kernel (or a server) broke a contract: no answer, an odd answer, or it died."""


class Report(NamedTuple):
    requests: int
    sent: dict[str, int]            # requests generated per call
    reached: dict[str, int]         # requests that reached the call's handler
    ok: dict[str, int]              # requests answered OK (the well-formed ones that worked)
    kernel_bugs: int
    errors: dict[str, int]          # the kernel's error answers, by name (whole run)
    replaced: int                   # tasks replaced (a task died)
    renewed: int                    # threads replaced (stuck past STUCK_S, or gone)
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "handlers_reached": sum(1 for s in Sys if self.reached.get(s.name, 0) > 0),
                "system_calls": len(Sys), "kernel_bugs": self.kernel_bugs,
                "per_call": {s.name: self.reached.get(s.name, 0) for s in Sys},
                "sent": self.sent, "ok": self.ok, "errors": self.errors,
                "tasks_replaced": self.replaced, "threads_replaced": self.renewed,
                "seconds": round(self.seconds, 2),
                "requests_per_s": round(self.requests / max(self.seconds, 1e-9))}


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
        self.owed = 0                         # answers still to come (more than 1: confused)
        self.confused = False                 # a request sent with a call in flight: which
        self.since = 0.0                      # answer is whose is unknown until all came
        self.denied = 0                       # DENIED in a row: an alien thread no one handles
        self.replies: list[int] = []          # reply capabilities received, unused
        self.used: list[int] = []             # reply capabilities already used (stale)
        self.last: list[Any] = []             # the arguments of the outstanding request

    def close(self) -> None:
        self.alive = False
        self.sock.close(0)                    # a bound thread whose connection closes is gone


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
