"""The kernel's state: its object tables, secrets, timers, counters, and how a call ends.

Everything the mechanisms (`ipc`, `irq`, `alien`, `lifecycle`, `memory`, `faults`,
`syscalls`) share lives in one `State`, apart from the transport that carries requests and
answers (`transport`). The mechanisms reach the transport only through the small `Wire`
interface the state holds, so no mechanism depends on the event loop or on ZeroMQ.

Contracts:
- A call ends through `finish` (the answer) or `fail` (an error answer); both go through
  `answer`, which shows an alien thread's answer to its handler first (`Thread.on_answer`).
- Counting errors: every error answer the kernel sends to a connection is counted exactly
  once, by its code, when it is answered — `count_error` is the one place, called by `fail`
  (answers to a thread's call) and by the transport's refusals of connections that are not
  (or not now) a thread's call: `stats["errors"]`, `err_counts[code]` and, when the sender
  is a known thread, its task's `stats["errors"]`. An error the kernel does not answer (the
  caller had already gone) is not counted.
- Secrets are one-time: `secrets` maps an unused secret to the thread it will bind.

Ownership: the kernel's event-loop thread only (the one running `transport.Transport.run`).
"""
from __future__ import annotations

import heapq
import itertools
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..abi import (SLOT_FACTORY, SLOT_KERNEL, SLOT_TASK, SLOT_THREAD, Err, Rights,
                   encode_error)
from . import trace as _trace
from .caps import CapSpace
from .objects import Factory, Gate, KernelCtl, KObject, Task, Thread, TState

if TYPE_CHECKING:
    from .memory import Memory

ROOT_QUOTA = 100_000


class Wire(Protocol):
    """What the mechanisms need of the transport."""

    def answer(self, thread: Thread, header: bytes, payload: bytes | None) -> None:
        """Send `thread`'s answer on its connection (nothing if it has none)."""

    def unbind(self, thread: Thread) -> None:
        """Forget `thread`'s connection and its unused secrets."""

    def watch(self, task: Task, pid: int) -> None:
        """Watch OS process `pid` as `task`'s (its exit kills the task). Raises AbiError."""

    def unwatch(self, task: Task) -> None:
        """Stop watching `task`'s process."""


class Timers:
    """Timeouts: a heap of (deadline, seq, thread, token); stale entries are skipped. And
    calls to make later (`later`: a chaos delay of a call no thread sends, kernel/core/
    faults.py), a heap of (deadline, seq, function)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Thread, int]] = []
        self.calls: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()

    def add(self, timeout_ms: int, thread: Thread, token: int) -> None:
        heapq.heappush(self.heap, (time.monotonic() + timeout_ms / 1000.0, next(self.seq),
                                   thread, token))

    def later(self, timeout_ms: int, fn: Callable[[], None]) -> None:
        heapq.heappush(self.calls, (time.monotonic() + timeout_ms / 1000.0, next(self.seq), fn))

    def next_ms(self) -> int:
        heap, calls = self.heap, self.calls
        if calls:
            first = min(heap[0][0], calls[0][0]) if heap else calls[0][0]
        elif heap:
            first = heap[0][0]
        else:
            return -1
        return max(0, int((first - time.monotonic()) * 1000) + 1)

    def due(self) -> list[Thread]:
        now = time.monotonic()
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, _, thread, token = heapq.heappop(self.heap)
            if thread.token == token and thread.alive:
                out.append(thread)
        return out

    def due_calls(self) -> list[Callable[[], None]]:
        now = time.monotonic()
        out = []
        while self.calls and self.calls[0][0] <= now:
            out.append(heapq.heappop(self.calls)[2])
        return out


LastCap = Callable[["State", KObject], None]


class State:
    def __init__(self, run_dir: str, root_secret: bytes, wire: Wire, on_last_cap: LastCap,
                 root_quota: int = ROOT_QUOTA, verbose: bool = False) -> None:
        """`on_last_cap(state, obj)` destroys an object whose last capability went
        (`lifecycle.on_last_cap`; given, not imported: lifecycle sits above the state)."""
        self.run_dir = run_dir
        self.pid = os.getpid()
        self.verbose = verbose
        self.wire = wire
        self._on_last_cap = on_last_cap
        self.memory: Memory = None  # type: ignore[assignment]   # set at boot (memory.install)
        self.linux: Any = None             # set at boot (linux.install): Linux processes
        self.timers = Timers()
        self.secrets: dict[bytes, Thread] = {}
        self.tasks: dict[int, Task] = {}
        self.gates: set[Gate] = set()
        self.stats: dict[str, int] = {"requests": 0, "ipc": 0, "errors": 0, "malformed": 0,
                                      "unauthenticated": 0, "kernel_bugs": 0, "tasks_created": 0,
                                      "tasks_died": 0, "fastpath": 0, "fastpath_compiled": 0,
                                      "connections_lost": 0, "stale_disconnections": 0,
                                      "wrong_process": 0, "rt_moves": 0, "rt_first": 0}
        self.fastpath = True               # kernel.core.fastpath serves the common IPC inline
        self.fast_path = "python"          # which: "compiled" | "python" | "off" (transport)
        # Calls that reached their handler, by number (syscalls.run and the fast path; HELLO,
        # served by the transport, is not counted): KERNEL_INFO's stats["handled"].
        self.handled: dict[int, int] = {}
        self.err_counts: dict[str, int] = {}
        self.started = time.time()
        self.root_factory = Factory(None, root_quota)
        root, main = self.make_task("root", None, 0, own_factory=self.root_factory)
        root.space.insert(SLOT_KERNEL, KernelCtl(None), Rights.ALL)
        self.secrets[root_secret] = main

    # -- objects ----------------------------------------------------------------
    def make_task(self, name: str, factory: Factory | None, quota: int,
                  own_factory: Factory | None = None) -> tuple[Task, Thread]:
        """A new task with its main thread and the slots every task is born with."""
        space = CapSpace(name, lambda obj: self._on_last_cap(self, obj))
        own = own_factory or Factory(factory, quota)
        task = Task(factory, name, space, own)
        main = Thread(factory, task)
        task.threads.append(main)
        space.insert(SLOT_TASK, task, Rights.ALL)
        space.insert(SLOT_THREAD, main, Rights.ALL)
        space.insert(SLOT_FACTORY, own, Rights.INVOKE | Rights.GRANT)
        self.tasks[task.id] = task
        self.stats["tasks_created"] += 1
        return task, main

    def new_secret(self, thread: Thread) -> bytes:
        secret = secrets.token_bytes(16)
        self.secrets[secret] = thread
        return secret

    def gates_bound_to(self, thread: Thread) -> list[Gate]:
        return [g for g in self.gates if g.thread is thread]

    # -- how a call ends ---------------------------------------------------------
    def answer(self, thread: Thread, header: bytes, payload: bytes | None = None) -> None:
        """Send the answer to `thread`'s call; an alien thread's goes to its handler first."""
        hook = thread.on_answer
        if hook is not None:
            thread.on_answer = None
            hook(header, payload)
            return
        thread.busy = False
        self.wire.answer(thread, header, payload)

    def answer_now(self, thread: Thread, header: bytes, payload: bytes | None = None) -> None:
        """Send the answer without showing it to anyone (the alien report is done, or the
        thread is dying)."""
        thread.on_answer = None
        thread.busy = False
        self.wire.answer(thread, header, payload)

    def finish(self, thread: Thread, header: bytes, payload: bytes | None = None) -> None:
        """The thread's call is complete: leave any blocking state and send the answer."""
        thread.set_state(TState.IDLE)
        thread.sending = None
        self.answer(thread, header, payload)

    def fail(self, thread: Thread, err: Err, reason: str) -> None:
        """The one way a thread's call ends in an error: counted, then answered."""
        self.count_error(err, thread)
        if _trace.ON:
            _trace.error(thread, err, reason)
        self.finish(thread, encode_error(err, reason))

    def count_error(self, err: Err, thread: Thread | None) -> None:
        self.stats["errors"] += 1
        self.err_counts[err.name] = self.err_counts.get(err.name, 0) + 1
        if thread is not None:
            thread.task.stats["errors"] += 1

    # -- counters and introspection ----------------------------------------------------
    def count_ipc(self, sender: Thread | None, receiver: Thread) -> None:
        self.stats["ipc"] += 1
        if sender is not None:
            sender.task.stats["sent"] += 1
        receiver.task.stats["received"] += 1

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[kernel] {text}", file=sys.stderr, flush=True)

    def info(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "pid": os.getpid(),
            "cpu_s": round(time.process_time(), 3),
            "fast_path": self.fast_path,
            "stats": dict(self.stats),
            "errors": dict(self.err_counts),
            "tasks": [{**t.describe(), "stats": dict(t.stats),
                       "quota": {"limit": t.own_factory.limit, "used": t.own_factory.used}}
                      for t in self.tasks.values()],
        }
