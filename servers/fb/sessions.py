"""Client sessions of a device server: one per policy label, each watched for its client's death.

    table = Sessions(l4, policy, drop)        # policy: label -> that label's rule
    rule = table.allowed(call)                # RpcError DENIED for a label without policy
    session = table.open(call, make)          # make(rule) -> session; the request's
                                              # capability item (a task) is the watch
    table.get(call) -> session                # RpcError NO_SESSION
    table.remove(label); table.sweep()        # dead clients' sessions dropped
    table.serve(PROTO, impl)                  # the server loop (never returns)

Used by the fb and input servers (servers/fb/server.py, servers/input/server.py), both
DDE/Linux driver tasks: capability slots come from DDEKit (`env.slots`), so they never meet
the slots DDEKit hands its own devices.

The death watch: a session is opened with a capability item, the client's own task (rights
NONE are enough: it is only inspected). The kernel deletes that capability when the client
task dies, so `cap_inspect` of it failing (or answering alive False) says the client is gone:
`sweep` (run after each request that opened a session and every POLL_MS, busy or idle)
drops its session with `drop(session)`, which gives its memory back.

Why a new receive window per opened session: the window slot now holds the watch (the op
keeps it), so the loop restarts with a fresh empty slot (`until`), as the HAL's does.

Ownership: the table belongs to the server's main thread (the serve loop); `lock` guards
`sessions` for other threads that read them (the input server's interrupt thread).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, Mapping, TypeVar

from kernel.user.errors import L4Error, NoCapability
from kernel.user.rpc import Call, Protocol, RpcError
from servers.ddekit import env as _env

S = TypeVar("S")
POLL_MS = 500


class Sessions(Generic[S]):
    def __init__(self, l4: Any, policy: Mapping[int, Any], drop: Callable[[S], None],
                 name: str = "server") -> None:
        self.l4 = l4
        self.name = name
        self.policy = dict(policy)
        self.drop = drop
        self.lock = threading.Lock()
        self.sessions: dict[int, S] = {}            # label -> session; guarded by lock
        self.watches: dict[int, int] = {}           # label -> slot of its client's task cap
        self.opened = self.dropped = self.denied = 0
        self.recv_slot = _env.get().slots(1)
        self.rewindow = False

    def allowed(self, call: Call) -> Any:
        rule = self.policy.get(call.label)
        if rule is None:
            self.denied += 1
            raise RpcError("DENIED", f"the policy gives label {call.label} no session "
                                     f"(labels: {sorted(self.policy)})")
        return rule

    def open(self, call: Call, make: Callable[[Any], S]) -> S:
        """Check the policy and the watch (a live task capability), then `make(rule)` the
        caller's new session, replacing any it had. Refused: the watch is deleted again."""
        watch = call.items[0][1]
        try:
            rule = self.allowed(call)
            what = self.l4.cap_inspect(watch)
            if what.get("type") != "task" or not what.get("alive"):
                raise RpcError("INVALID", f"open needs the client's own task capability, "
                                          f"got a {what.get('type')}")
            self.remove(call.label)
            session = make(rule)
        except BaseException:
            self._forget(watch)
            raise
        self._add(call, watch, session)
        return session

    def _forget(self, slot: int) -> None:
        """Delete what arrived in our window slot, keeping the slot ours (it stays the window)."""
        try:
            self.l4.cap_delete(slot)
        except L4Error:
            pass

    def _add(self, call: Call, watch: int, session: S) -> None:
        with self.lock:
            self.sessions[call.label] = session
        self.watches[call.label] = watch
        self.opened += 1
        self.recv_slot = _env.get().slots(1)        # the watch stays in the old window slot
        self.rewindow = True

    def keep(self, call: Call) -> int:
        """The slot the request's capability item landed in, kept by the op (the loop
        restarts with a fresh window slot); the op deletes it when it is done with it."""
        slot = call.items[0][1]
        self.recv_slot = _env.get().slots(1)
        self.rewindow = True
        return int(slot)

    def same_task(self, label: int, slot: int) -> bool:
        """Whether the task capability in `slot` names the client task of `label`'s session."""
        try:
            got, own = self.l4.cap_inspect(slot), self.l4.cap_inspect(self.watches[label])
        except (NoCapability, KeyError):
            return False
        return got.get("type") == "task" and bool(got.get("alive")) and got.get("id") == own.get("id")

    def get(self, call: Call) -> S:
        with self.lock:
            s = self.sessions.get(call.label)
        if s is None:
            raise RpcError("NO_SESSION", f"label {call.label} has no open session (open first)")
        return s

    def remove(self, label: int) -> bool:
        with self.lock:
            s = self.sessions.pop(label, None)
        if s is None:
            return False
        _env.get().cap_delete(self.watches.pop(label, None))
        self.dropped += 1
        self.drop(s)
        return True

    def alive(self, label: int) -> bool:
        try:
            return bool(self.l4.cap_inspect(self.watches[label]).get("alive", False))
        except (NoCapability, KeyError):
            return False

    def sweep(self) -> list[int]:
        """Drop the sessions of clients that died; answers their labels."""
        with self.lock:
            labels = list(self.sessions)
        dead = [lb for lb in labels if not self.alive(lb)]
        for lb in dead:
            if self.remove(lb):
                print(f"{self.name}: the client of label {lb} is gone: its session is dropped",
                      flush=True)
        return dead

    def serve(self, proto: Protocol, impl: Any) -> None:
        """The server loop: requests, a fresh window after each open, a sweep every POLL_MS
        (busy or idle: a client calling all the time must not hide another one's death)."""
        while True:
            self.rewindow = False
            due = time.monotonic() + POLL_MS / 1000
            proto.serve(self.l4, impl, window=(self.recv_slot, 1), timeout=POLL_MS,
                        until=lambda: self.rewindow or time.monotonic() >= due)
            self.sweep()

    def counters(self) -> dict[str, int]:
        with self.lock:
            n = len(self.sessions)
        return {"sessions": n, "opened": self.opened, "dropped": self.dropped,
                "denied": self.denied}
