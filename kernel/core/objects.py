"""Kernel objects: Task, Thread, Gate, Factory, KernelCtl (Irq: `irq`, with its mechanism).

Plain records; the mechanisms that change them live in `ipc`, `irq`, `alien`, `lifecycle`,
`memory` and `syscalls`.
Ownership: only the kernel's event-loop thread touches these.

Invariants:
- `Thread.state` says where the thread's in-flight call is: IDLE (none, or being answered),
  SENDING (its record sits in the target's `queue`), RECEIVING (open wait), AWAIT_REPLY
  (its call was delivered; the callee holds the reply record), ALIEN_HOLD (waiting for the
  exception handler's verdict).
- `Thread.token` changes on every state change; a timer carries the token it was set for,
  so a stale timer is recognised and ignored.
- A Factory's `used` never exceeds its `limit`; every object charged to it refunds on death.
"""
from __future__ import annotations

import itertools
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..abi import ObjType

if TYPE_CHECKING:
    from .caps import CapNode, CapSpace
    from .ipc import SendRecord
    from .irq import Irq

_ids = itertools.count(1)


class KObject:
    kind: ObjType

    def __init__(self, factory: "Factory | None") -> None:
        self.id = next(_ids)
        self.nodes: set[CapNode] = set()
        self.alive = True
        self.factory = factory

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind.name.lower(), "id": self.id, "alive": self.alive}

    def unreachable(self) -> bool:
        """Alive, yet no one can ever use it again though capabilities to it remain (only a
        task's capabilities to itself can make that true: Task overrides)."""
        return False


class Factory(KObject):
    kind = ObjType.FACTORY

    def __init__(self, parent: "Factory | None", limit: int) -> None:
        super().__init__(parent)
        self.limit = limit
        self.used = 0
        self.closed = False   # its owner is gone; refund the parent once `used` drops to 0

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "limit": self.limit, "used": self.used}


class KernelCtl(KObject):
    kind = ObjType.KERNEL


class TState(IntEnum):
    IDLE = 0
    SENDING = 1
    RECEIVING = 2
    AWAIT_REPLY = 3
    ALIEN_HOLD = 4


class Task(KObject):
    kind = ObjType.TASK

    def __init__(self, factory: "Factory | None", name: str, space: "CapSpace",
                 own_factory: Factory) -> None:
        super().__init__(factory)
        self.name = name
        self.space = space
        self.own_factory = own_factory
        self.threads: list[Thread] = []
        self.pid: int | None = None
        self.pidfd: int | None = None
        # The process whose ipc:// connections are this task's threads (SO_PEERCRED, pinned
        # by the first HELLO): every thread of a task comes from one process, its watched one.
        self.peer_pid: int | None = None
        self.exit_reason: str | None = None
        # KERNEL_INFO's per-task counts; `faults`: its threads' MEM_FAULTs (refills included)
        self.stats = {"calls": 0, "sent": 0, "received": 0, "errors": 0, "faults": 0}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name": self.name, "pid": self.pid,
                "threads": [t.id for t in self.threads]}

    def unreachable(self) -> bool:
        """Only its own capabilities to itself are left, no process runs it and no thread of
        it is connected: nothing can ever reach it (a sub-task whose creator died before
        giving it a process). It is destroyed like an object whose last capability went,
        so its quota returns to its creator's factory instead of leaking for good."""
        return (self.pid is None and all(n.space is self.space for n in self.nodes)
                and not any(t.conn is not None for t in self.threads if t.alive))


class Thread(KObject):
    kind = ObjType.THREAD

    def __init__(self, factory: "Factory | None", task: Task) -> None:
        super().__init__(factory)
        self.task = task
        self.conn: bytes | None = None          # ZeroMQ routing id once HELLO succeeded
        self.conn_fd = -1                       # the kernel-side socket fd it said HELLO on
        self.conn_ino = 0                       # ... and that socket's inode (fds are reused)
        self.port: Any = None                   # the kernel's Port it is connected through
        self.state = TState.IDLE
        self.token = 0
        self.busy = False                       # a call is in flight (answer not yet sent)
        self.priority = 100
        self.queue: list[SendRecord] = []       # senders blocked on us: (-prio, seq) order
        self.irqs: list[Irq] = []               # attached IRQs with pending > 0, in order
        self.attached_irqs: set[Irq] = set()    # every IRQ attached to us (kept by Irq.thread)
        self.replies: dict[int, SendRecord] = {}
        self.next_reply = 1
        self.window: Sequence[int] | None = None  # receive window of the current receive
        self.sending: SendRecord | None = None  # our record while SENDING / AWAIT_REPLY
        self.pager: Gate | None = None
        self.handler: Gate | None = None
        self.alien = False
        # An allowed alien call: its answer goes here (the "after" report), not to the
        # wire (kernel/core/alien.py; State.answer).
        self.on_answer: Callable[[bytes, bytes | None], None] | None = None
        # An unmapper waiting for its shootdown to be acknowledged: polled by its timer.
        self.mem_wait: Callable[[Any], None] | None = None

    def set_state(self, state: TState) -> int:
        self.state = state
        self.token += 1
        return self.token

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "task": self.task.name, "state": self.state.name.lower(),
                "priority": self.priority, "alien": self.alien, "connected": self.conn is not None}


class Gate(KObject):
    kind = ObjType.GATE

    def __init__(self, factory: "Factory | None", label: int, thread: Thread | None) -> None:
        super().__init__(factory)
        self.label = label
        self.thread = thread
        self.generation = 0     # bumped on every rebind

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "label": self.label, "generation": self.generation,
                "thread": self.thread.id if self.thread else None}
