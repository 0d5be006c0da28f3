"""The link under the stack: frames out, frames in, a wait that other threads can cut short.

    class Link:  mac; send(frames) -> n taken; recv() -> frames; wait(timeout_s); wake(); close()

Contract: `send`, `recv`, `wait` and `close` are called by the stack's pump thread only (the
one owner of the session under it); `wake` may be called from any thread and makes a
`wait` in progress (or the next one) return soon. `send` may take fewer frames than given
(the TX packets are all in flight): the pump keeps the rest and tries again.

`NicLink` is a `nic` session (servers/nic/client.py NicSession) — the nic server's or ORe's,
which speak the same protocol (on ORe it also asks for broadcast frames: ARP). The session's signal is attached to the L4 thread `l4`, and
so is a wake IRQ of our own: other threads trigger it through a second L4 thread of the task
(`kicker`, serialised by a lock), the way the nic server's driver thread wakes its main
thread. A lost session (the server restarted) is reopened by the pump (`reopen`).

`MemLink.pair()` joins two stacks in one process (tests): each frame sent on one arrives on
the other, through `loss`, `corrupt` and `duplicate` knobs like the HAL NIC's.
"""
from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

from kernel.abi import SLOT_THREAD
from kernel.user import errors
from kernel.user.rpc import RemoteError

WAKE_LABEL = 0x4E5357                 # "NSW": our wake IRQ's label on the pump thread


class NicLink:
    """A nic/ORe session as the stack's link. Made on the task's main thread (the session's
    VM belongs to it); used afterwards by the pump thread only, except `wake`."""

    def __init__(self, l4: Any, gate: int, thread: int = SLOT_THREAD, vm: Any = None) -> None:
        """`thread`: our capability to the L4 thread `l4` is (the task's main thread by
        default): the session's signal and the wake IRQ are attached to it, so its waits
        (the pump's) see them. A task whose main thread waits for something else gives
        the link a thread of its own (`L4.create_thread`) and names it here. `vm`: the
        task's VM when other sessions share it (else the session makes one on `l4`); the
        pump thread's faults in it then go over `l4` (`VM.fault_via`)."""
        from servers.nic.client import NicSession
        self.l4 = l4
        self.nic = NicSession(l4, gate, thread=thread, vm=vm)
        self._shared = vm
        self._bound = 0                            # the OS thread whose faults go over l4
        self.mac: bytes = self.nic.mac
        self.info: dict[str, Any] = dict(self.nic.info)
        self._broadcasts()
        self.kicker = l4.spawn_thread()
        self.wake_irq = l4.create_irq()
        l4.irq_attach(self.wake_irq, thread, WAKE_LABEL)
        self._klock = threading.Lock()             # the kicker's L4 connection: one user at a time
        # A request that reaches the main thread while the pump waits (a task that serves a
        # protocol there, servers/dhcpd): handed over on the pump thread, which must answer
        # it (its reply capability) before it returns. None: requests are not expected.
        self.on_message: Any = None

    def _broadcasts(self) -> None:
        """On an ORe switch, ask for broadcast frames: ARP requests for our address are
        broadcasts, and ORe delivers none to a client that did not ask (a policy may refuse:
        then only its "broadcast" entry in the image helps)."""
        if not self.info.get("switch") or self.info.get("broadcast"):
            return
        from servers.ore.protocol import ORE
        try:
            ore: Any = ORE.client(self.l4, self.nic.gate)
            self.info["broadcast"] = ore.broadcast(self.nic.sid, True)
        except (errors.L4Error, RemoteError) as e:
            print(f"netstack: no broadcast frames from the switch ({e}): ARP for us may go unheard",
                  flush=True)

    def _bind(self) -> None:
        if self._shared is not None and self._bound != threading.get_ident():
            self._shared.fault_via(self.l4)
            self._bound = threading.get_ident()

    def send(self, frames: list[bytes]) -> int:
        self._bind()
        return self.nic.send(frames)

    def recv(self) -> list[bytes]:
        self._bind()
        return self.nic.poll()

    def wait(self, timeout_s: float) -> None:
        try:
            msg = self.l4.wait(timeout=max(0.0, timeout_s) * 1000)
        except errors.Timeout:
            return
        if msg is not None and msg.proto >= 0 and self.on_message is not None:
            self.on_message(msg)                     # not an IRQ of ours: a request

    def wake(self) -> None:
        with self._klock:
            try:
                self.kicker.irq_trigger(self.wake_irq)
            except errors.L4Error:
                pass                                 # shutting down

    def reopen(self) -> None:
        self.info = dict(self.nic.reopen(30))
        self._broadcasts()

    def close(self) -> None:
        self.nic.release()


class MemLink:
    """One end of an in-process wire (tests)."""

    def __init__(self, mac: bytes, seed: int = 1) -> None:
        self.mac = mac
        self.peer: MemLink | None = None
        self.inbox: deque[bytes] = deque()
        self.event = threading.Event()
        self.rng = random.Random(seed)
        self.loss = self.corrupt = self.duplicate = 0.0
        self.sent = 0

    @classmethod
    def pair(cls, seed: int = 1) -> tuple["MemLink", "MemLink"]:
        a, b = cls(b"\x02\x00\x00\x00\x00\x01", seed), cls(b"\x02\x00\x00\x00\x00\x02", seed + 1)
        a.peer, b.peer = b, a
        return a, b

    def send(self, frames: list[bytes]) -> int:
        peer = self.peer
        assert peer is not None
        for f in frames:
            self.sent += 1
            if self.loss and self.rng.random() < self.loss:
                continue
            if self.corrupt and self.rng.random() < self.corrupt:
                b = bytearray(f)
                b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
                f = bytes(b)
            peer.inbox.append(f)
            if self.duplicate and self.rng.random() < self.duplicate:
                peer.inbox.append(f)
        peer.event.set()
        return len(frames)

    def recv(self) -> list[bytes]:
        out = []
        while self.inbox:
            out.append(self.inbox.popleft())
        return out

    def wait(self, timeout_s: float) -> None:
        self.event.wait(max(0.0, timeout_s))
        self.event.clear()

    def wake(self) -> None:
        self.event.set()

    def close(self) -> None:
        pass
