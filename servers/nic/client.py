"""The client side of a `nic` session (what ORe's uplink uses): frames in and out through the
shared packet streams, IPC only to notify.

    nic = NicSession(l4, l4.caps["nic"])       # opens a session; signal attached to our thread
    nic.send([frame, ...]) -> n queued         # TX: into free packets, submitted, one kick
    nic.recv() -> [frame, ...]                 # RX: every submitted frame, acknowledged
    nic.wait(timeout_ms) -> bool               # block until the server signals (or timeout)
    nic.link -> bool; nic.link_changes; nic.mac; nic.stats(); nic.release()
    nic.reopen(timeout_s)                      # after SessionLost: the server restarted

A server that died (or closed the session) shows as `SessionLost` from any call: its IPC
answers PeerDied, its kick IRQ is gone, or the shared block was taken away (our VM's access
raises PageFault instead of touching a page we no longer have). `reopen` opens a new session
on the same capability, retrying until the new incarnation answers.

Event loops that wait on many things (ORe) attach the signal to a thread and label of their
own (`thread=`, `label=`) and call `poll()` when that label arrives: it reclaims TX acks and
answers the RX frames waiting.

Ownership: a NicSession belongs to one thread (its L4 `l4`), like the stub under it; the VM
should be the task's main-thread VM (it handles the shootdown signal, see docs/MEMORY.md).
"""
from __future__ import annotations

import itertools
import time
from typing import Any, cast

from kernel.abi import SLOT_THREAD, Item, Proto
from kernel.user import errors
from kernel.user.rpc import RemoteError, RemoteFailure
from kernel.user.vm import VM, PageFault, window

from . import stream as ps
from .protocol import ATTACH_GRACE_S, NIC

WINDOW_BASE = 0x60_0000_0000          # where our sessions' blocks land (one window each)
SIGNAL_LABEL = 0x4E5349               # the label our signal arrives with, by default
CAP_BASE = 3600                       # where kick and signal land
CAP_ITEMS = (Item.MAP_CAP, Item.GRANT_CAP)
_windows = itertools.count()          # every session of this process lands in a window of its
                                      # own (a task may hold several: ORe's clients, benches)


class SessionLost(ConnectionError):
    """The nic server died or closed the session: `reopen()` (the peer's doing, not ours)."""


class NicSession:
    def __init__(self, l4: Any, gate: int, *, vm: VM | None = None, thread: int = SLOT_THREAD,
                 label: int = SIGNAL_LABEL, timeout_ms: float = 30_000) -> None:
        self.l4, self.gate, self.thread, self.label = l4, gate, thread, label
        self.vm = vm if vm is not None else VM(l4)
        self.stub = cast(Any, NIC.client(l4, gate, timeout=timeout_ms))
        self.opened = 0                               # sessions opened by us so far
        self.sid = 0
        self.kick = self.sig = 0
        self.base = 0
        self.counts = {"tx_ok": 0, "tx_malformed": 0, "tx_dropped": 0, "rx": 0}
        self.open()

    # -- life cycle ----------------------------------------------------------------------
    def open(self) -> dict[str, Any]:
        base = WINDOW_BASE + next(_windows) * ps.SESSION_SIZE * 2
        cap = self._free_caps()
        # BUSY: our label's session is still held — by our own previous incarnation whose
        # death the server has not seen yet (a session not attached yet is kept for
        # ATTACH_GRACE_S); asked again until that has passed, then the answer stands.
        deadline = time.monotonic() + ATTACH_GRACE_S + 1.0
        while True:
            try:
                info = self.stub.open(_window=window(base, ps.SESSION_ORDER, cap, 2))
                break
            except errors.PeerDied as e:
                raise SessionLost(f"the nic server is gone: {e}") from None
            except RemoteFailure as e:
                if e.error != "BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        caps = [it[1] for it in self.stub.last_items if it[0] in CAP_ITEMS]
        self.kick, self.sig = caps[0], caps[1]
        self.opened += 1
        self.info, self.sid, self.base = info, int(info["session"]), base
        self.mac = bytes.fromhex(str(info["mac"]).replace(":", ""))
        self.mem = ps.VmMem(self.vm, base)
        ps.check_header(self.mem, ps.TX_STREAM)
        self.tx = ps.Source(self.mem, ps.TX_STREAM)
        self.rx = ps.Sink(self.mem, ps.RX_STREAM)
        self.l4.irq_attach(self.sig, self.thread, self.label)
        return dict(info)

    def _free_caps(self) -> int:
        slot = CAP_BASE
        while True:
            try:
                self.l4.cap_inspect(slot)
                slot += 1
            except errors.NoCapability:
                try:
                    self.l4.cap_inspect(slot + 1)
                    slot += 2
                except errors.NoCapability:
                    return slot

    def release(self) -> None:
        """Close the session (its block and IRQs go back to the server)."""
        try:
            self.stub.release(self.sid)
        except (errors.L4Error, RemoteError):
            pass
        self._forget()

    def _forget(self) -> None:
        for slot in (self.kick, self.sig):
            try:
                self.l4.cap_delete(slot)
            except errors.L4Error:
                pass
        self.kick = self.sig = 0

    def reopen(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """A new session after SessionLost, retrying until the server answers."""
        self._forget()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.open()
            except (SessionLost, errors.L4Error, RemoteFailure) as e:
                if time.monotonic() > deadline:
                    raise SessionLost(f"no new session within {timeout_s} s: {e}") from None
                time.sleep(0.05)

    # -- data ------------------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> int:
        """Queue as many frames as there are free packets and queue entries; one kick."""
        try:
            self._reclaim()
            n = min(len(frames), self.tx.room(), len(self.tx.free))
            descs = []
            for f in frames[:n]:
                off = self.tx.alloc()
                assert off is not None
                self.mem.write(ps.packet(ps.TX_STREAM, off), f)
                descs.append((off, len(f), 0))
            if descs:
                self.tx.submit(descs)
                self.l4.irq_trigger(self.kick)
            return n
        except (PageFault, errors.PeerDied, errors.NoCapability, ps.BadIndex) as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def submit_raw(self, offset: int, length: int) -> None:
        """Submit a descriptor as given (tests: a malformed one), and kick."""
        try:
            mine = offset in self.tx.out
            self.tx.submit([(offset, length, 0)])
            if not mine:
                self.tx.out.discard(offset)     # not a packet of ours: its ack frees nothing
            self.l4.irq_trigger(self.kick)
        except (PageFault, errors.PeerDied, errors.NoCapability) as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def _reclaim(self) -> None:
        acks, _ = self.tx.acked()
        for _, _, status in acks:
            key = {ps.OK: "tx_ok", ps.MALFORMED: "tx_malformed"}.get(status, "tx_dropped")
            self.counts[key] += 1

    def recv(self, limit: int = ps.RING) -> list[bytes]:
        """Every frame the server submitted (at most `limit`), acknowledged at once."""
        try:
            descs = self.rx.pending(limit)
            if not descs:
                return []
            out, acks = [], []
            for off, length, _ in descs:
                if ps.valid(off, length):            # the server's claim, checked all the same
                    out.append(self.mem.read(ps.packet(ps.RX_STREAM, off), length))
                acks.append((off, length, ps.OK))
            self.rx.consume(len(descs))
            if self.rx.ack_room() >= len(acks):
                self.rx.ack(acks)
            self.counts["rx"] += len(out)
            return out
        except (PageFault, ps.BadIndex) as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def poll(self) -> list[bytes]:
        """After a signal: reclaim TX packets, answer the RX frames waiting."""
        try:
            self._reclaim()
        except (PageFault, ps.BadIndex) as e:
            raise SessionLost(f"session {self.sid}: {e}") from None
        return self.recv()

    def wait(self, timeout_ms: float = 1000) -> bool:
        """Block on our thread until the server signals; False on timeout. Only for a
        session whose signal is attached to the calling thread (the default)."""
        try:
            msg = self.l4.wait(timeout=timeout_ms)
        except errors.Timeout:
            return False
        return bool(msg.proto == Proto.IRQ and msg.label == self.label)

    def tx_room(self) -> int:
        """How many frames `send` would take now (acknowledged packets reclaimed first)."""
        try:
            self._reclaim()
            return min(self.tx.room(), len(self.tx.free))
        except (PageFault, ps.BadIndex) as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def tx_pending(self) -> int:
        """Packets submitted and not yet acknowledged."""
        return len(self.tx.out)

    # -- state -------------------------------------------------------------------------------
    @property
    def link(self) -> bool:
        return self._link()[0]

    @property
    def link_changes(self) -> int:
        return self._link()[1]

    def _link(self) -> tuple[bool, int]:
        try:
            return ps.get_link(self.mem)
        except PageFault as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def stats(self) -> dict[str, Any]:
        try:
            return dict(self.stub.stats(self.sid))
        except errors.PeerDied as e:
            raise SessionLost(f"the nic server is gone: {e}") from None
        except RemoteFailure as e:
            raise SessionLost(f"session {self.sid}: {e}") from None

    def device_stats(self) -> dict[str, Any]:
        try:
            return dict(self.stub.device_stats())
        except errors.PeerDied as e:
            raise SessionLost(f"the nic server is gone: {e}") from None
