"""The ORe task: sessions (virtual NICs), the uplink, and the frames between them.

    main(l4, policy)     parse the policy (servers/ore/switch.py), attach the uplink, serve ORE

Paper §4.4: several clients (L4Linux instances, tasks with an IP stack) share one NIC through
ORe. Every client gets one session (servers/ore/protocol.py): the packet streams of a `nic`
session in a block of ORe's (servers/ore/blocks.py), a kick IRQ (ours, the client triggers
it) and a signal IRQ (the client's to attach, we trigger it). The uplink is a `nic` session
of the nic server (servers/nic), which ORe holds as a client through NicSession.

The path of a frame: the client writes it into a packet of its TX buffer and submits the
descriptor, kicks -> `on_irq` (kick label) -> `_drain`: each descriptor checked (inside the
buffer, a header's length, at most MAX_FRAME), the frame copied out of the client's buffer
(so the client cannot change it between our check and the copy), `Switch.decide` -> copied
into each destination's RX stream (one submit and one signal per destination per batch), or
handed to the uplink (`NicSession.send`, one kick) -> the descriptor acknowledged (OK,
MALFORMED, or DROPPED with the reason counted). The uplink is flow-controlled: when it has no
room, the client's remaining descriptors stay queued (`_uplink_room`) and are taken when the
uplink's signal reports room. Frames from the uplink (its signal) take the same decision with
the uplink as the sending port.

Bandwidth reservations (servers/ore/shaper.py): with `uplink_rate` in the policy, every
frame towards the uplink is charged to its client's reserved bucket, else to the shared
best-effort bucket; a frame without tokens is held in its client's TX stream like one for a
full uplink, and the loop retries the held clients every RETRY_S (`wait_ms`, `retry_held`)
rather than at the next tick.

Fault knobs (chaos; servers/ore/switch.py `Faults`, ORE's admin op `faults`): every frame
`decide` lets through — from a client in `_drain`, from the uplink in `_from_uplink` — is
handed to `Faults.apply` once, which may lose it (its descriptor is still acknowledged OK),
change one byte past its Ethernet header, or deliver it twice. Off (all rates 0) it costs
one attribute test per frame.

Threads: the main thread serves ORE, takes every IRQ (kicks, the uplink's signal) but the
reserved sessions' kicks, and runs housekeeping every TICK_S between messages
(`serve(until=...)`): close sessions whose client is gone (its signal attached to no
thread), acknowledge what a full ack queue held back, signal unsignalled acks, reattach a
lost uplink (one try per tick: a restarting nic server never blocks the switch for long).
From the first reservation on, the reserved thread (servers/ore/rtthread.py, "rt/ore")
drains the reserved sessions, which the CPU manager boosts while the main thread ("be/ore")
stays in the ordinary class. Both forward under `lock` (every op and entry point holds it:
`locked`).

Faults, and who notices:
- a client dies: its signal loses its thread; the next tick closes the session and frees
  its block (sigma0 unmaps it everywhere). A restarted client opens a new session and gets
  the same MAC (the policy's, or derived from its label and name).
- ORe dies: clients' kicks and calls answer PeerDied, their blocks are unmapped (PageFault):
  NicSession raises SessionLost, they `reopen` on the same capability once we are back.
- the nic server dies: the uplink's NicSession raises SessionLost; ports stay up, frames
  for the uplink are dropped (no_route) until a tick reattaches it.
- a client breaks the stream protocol: counted on its port, its descriptors answered
  MALFORMED; other ports never see it.
"""
from __future__ import annotations

import functools
import sys
import threading
import time
from typing import Any, Callable, TypeVar

from kernel.abi import SLOT_THREAD, MemRights, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error
from kernel.user.rpc import Call, RemoteError, Reply, RpcError
from kernel.user.vm import VM, map_mem
from servers.nic import stream as ps
from servers.nic.client import NicSession, SessionLost
from servers.rt import hostsched as hs

from .blocks import Block, Blocks, OutOfMemory
from .rtthread import ReservedThread, ThreadL4
from .shaper import RETRY_S, Shaper
from .protocol import (ATTACH_GRACE_S, KICK_LABEL_BASE, MAX_FRAME, ORE, TICK_S, UPLINK_LABEL)
from .switch import (UPLINK, ClientPolicy, Faults, KnobError, PolicyError, Port, Switch,
                     SwitchPolicy, mac_text, parse_policy)

ETH_HLEN = 14
ARP = b"\x08\x06"                  # the ethertype whose sender address `l4run net` shows
ACK_SIGNAL_AT = ps.RING // 4
UPLINK_CALL_MS = 2_000
UPLINK_HOLD_S = 1.0


F = TypeVar("F", bound=Callable[..., Any])


def locked(fn: F) -> F:
    """Run an OreServer method under its forwarding lock (rtthread.py: two threads forward)."""
    @functools.wraps(fn)
    def run(self: "OreServer", *args: Any, **kw: Any) -> Any:
        with self.lock:
            return fn(self, *args, **kw)
    return run  # type: ignore[return-value]


class Session:
    """One client's virtual NIC: its block, streams, IRQs and port. Under OreServer.lock."""

    def __init__(self, sid: int, pol: ClientPolicy, block: Block, kick: int, sig: int) -> None:
        self.sid, self.pol, self.block = sid, pol, block
        self.label = pol.label
        self.kick, self.sig = kick, sig
        self.view = block.view
        self.mem = ps.ViewMem(self.view)
        for base in (ps.TX_STREAM, ps.RX_STREAM):
            ps.init_stream(self.mem, base)
        ps.set_link(self.mem, True, 0)
        self.tx = ps.Sink(self.mem, ps.TX_STREAM)
        self.rx = ps.Source(self.mem, ps.RX_STREAM)
        self.port = Port.client(pol)
        self.opened = time.monotonic()
        self.attached = False
        self.dead = False                    # a signal trigger failed: reap at the next tick
        self.acks_unsignaled = 0
        self.held = False                    # frames for a full uplink left in its TX stream
        self.seen_ip: str | None = None      # the sender address of its last ARP frame

    def counters(self) -> dict[str, Any]:
        """The port's counters; `ip` the image's address, else the one the client's own
        ARP announced (an address from DHCP: ORe is not told it)."""
        return {"session": self.sid, "label": self.label, "ip": self.pol.ip or self.seen_ip,
                **self.port.counters()}


class Uplink:
    """The uplink: a nic session (or none yet), its port, how often it was (re)attached."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.nic: NicSession | None = None
        self.port = Port(UPLINK, "uplink")
        self.attaches = 0
        self.full_since = 0.0                # when its TX stream was first seen full (0: not)
        self.lost = 0
        self.error = ""

    def state(self) -> dict[str, Any]:
        return {"configured": self.cap is not None, "attached": self.nic is not None,
                "attaches": self.attaches, "lost": self.lost, "error": self.error,
                **self.port.counters()}


class OreServer:
    """ORE's implementation and the forwarding engine (main thread)."""

    def __init__(self, l4: L4, policy: SwitchPolicy) -> None:
        self.l4, self.policy = l4, policy
        self.vm = VM(l4)
        self.blocks = Blocks(l4, self.vm)
        self.switch = Switch()
        self.chaos = Faults()                       # the chaos knobs: off until set
        self.live: dict[int, Session] = {}           # sid -> session
        self.by_label: dict[int, Session] = {}
        self.next_sid = 1
        self.next_tick = time.monotonic() + TICK_S
        # Bandwidth reservations: only with a declared uplink capacity (shaper.py)
        self.shaper = None if policy.uplink_rate is None else Shaper(policy.uplink_rate)
        self.retry_at = 0.0
        self.lock = threading.RLock()               # all forwarding state (rtthread.py)
        self.tl4 = ThreadL4(l4)                     # the forwarding thread's own connection
        self.vm.l4 = self.tl4                       # ... its page faults too (under `lock`)
        self.rt: ReservedThread | None = None       # made at the first reservation
        self.drained: dict[int, int] = {}           # label -> host thread of its last drain
        cap = l4.caps.get(policy.uplink) if policy.uplink else None
        if policy.uplink and cap is None:
            print(f"ore: no capability {policy.uplink!r} for the uplink: running without",
                  file=sys.stderr, flush=True)
        self.uplink = Uplink(cap)
        self._attach_uplink()

    # -- the protocol -------------------------------------------------------------------
    @locked
    def open(self, call: Call) -> Reply:
        pol = self.policy.for_label(call.label)
        if pol is None:
            raise RpcError("DENIED", f"ORe's policy has no client with label {call.label}")
        self._reap(call.label)
        if call.label in self.by_label:
            raise RpcError("BUSY", f"client {pol.name} (label {call.label}) holds its session")
        try:
            block = self.blocks.alloc()
        except OutOfMemory as e:
            raise RpcError("NO_MEMORY", str(e)) from None
        sid, self.next_sid = self.next_sid, self.next_sid + 1
        kick: int | None = None
        try:
            kick = self.l4.create_irq()
            self.l4.irq_attach(kick, SLOT_THREAD, KICK_LABEL_BASE + sid)
            sig = self.l4.create_irq()
        except L4Error as e:
            if kick is not None:
                self.l4.cap_delete(kick)
            self.blocks.free(block)
            raise RpcError("NO_MEMORY", f"no IRQ objects for a session: {e}") from None
        s = Session(sid, pol, block, kick, sig)
        self.live[sid] = s
        self.by_label[call.label] = s
        self.switch.add(s.port)
        self.switch.totals["sessions_opened"] += 1
        print(f"ore: session {sid} for {pol.name} (label {call.label}, MAC {mac_text(pol.mac)})",
              flush=True)
        value = {"session": sid, "mtu": 1500, "link": True, "size": ps.SESSION_SIZE,
                 "order": ps.SESSION_ORDER, "stream": ps.STREAM_SIZE, "ring": ps.RING,
                 "slot": ps.SLOT, **self._nic_info(pol)}
        return Reply(value, [map_mem(block.va, ps.SESSION_ORDER, MemRights.RW),
                             map_cap(kick, Rights.INVOKE),
                             map_cap(sig, Rights.INVOKE | Rights.WRITE)])

    def _nic_info(self, pol: ClientPolicy) -> dict[str, Any]:
        s = self.by_label.get(pol.label)
        return {"mac": mac_text(pol.mac), "ip": pol.ip, "name": pol.name,
                "broadcast": s.port.broadcast if s else pol.broadcast, "switch": self.policy.name}

    @locked
    def release(self, call: Call, session: int) -> None:
        self._close(self._mine(call, session), "closed")

    @locked
    def info(self, call: Call) -> dict[str, Any]:
        """The caller's virtual NIC; a label without policy (NIC's info declares no errors)
        learns only the switch's name: mac and ip None, link down."""
        pol = self.policy.for_label(call.label)
        mine = self._nic_info(pol) if pol is not None else {
            "mac": None, "ip": None, "name": None, "broadcast": False, "switch": self.policy.name}
        return {"mtu": 1500, "link": pol is not None, "link_changes": 0,
                "device": self.policy.name, "sessions": len(self.live), **mine}

    @locked
    def stats(self, call: Call, session: int) -> dict[str, Any]:
        return self._mine(call, session).counters()

    @locked
    def device_stats(self, call: Call) -> dict[str, Any]:
        return {"totals": dict(self.switch.totals), "sessions": len(self.live),
                "table": len(self.switch.pinned) + len(self.switch.learned),
                "memory": {"blocks": self.blocks.live,
                           "bytes": self.blocks.live * ps.SESSION_SIZE},
                "uplink": self.uplink.state()}

    @locked
    def broadcast(self, call: Call, session: int, on: bool) -> bool:
        s = self._mine(call, session)
        if s.pol.broadcast_locked and on != s.pol.broadcast:
            raise RpcError("DENIED", f"the policy locks broadcast for {s.pol.name}")
        s.port.broadcast = on
        return on

    @locked
    def sessions(self, call: Call) -> list[dict[str, Any]]:
        return [s.counters() for s in self.live.values()]

    @locked
    def counters(self, call: Call) -> dict[str, Any]:
        clients = {s.pol.name: s.counters() for s in self.live.values()}
        return {"switch": self.policy.name, "clients": clients, "uplink": self.uplink.state(),
                "table": self.switch.table(), "totals": dict(self.switch.totals),
                "faults": self.chaos.state(),
                "policy": {str(k): v.as_dict() for k, v in self.policy.clients.items()}}

    @locked
    def faults(self, call: Call, knobs: dict[str, Any]) -> dict[str, Any]:
        """Set the fault knobs given (all checked before any is set), answer them all and
        the counts; {} only reads."""
        try:
            self.chaos.update(knobs, [*(s.port for s in self.live.values()), self.uplink.port])
        except KnobError as e:
            raise RpcError("INVALID", f"faults: {e}") from None
        if knobs:
            print(f"ore: fault knobs {self.chaos.state()}", flush=True)
        return self.chaos.state()

    def _mine(self, call: Call, sid: int) -> Session:
        s = self.live.get(sid)
        if s is None or s.label != call.label:
            raise RpcError("INVALID", f"no session {sid} of this client")
        return s

    # -- kernel messages (kicks, the uplink's signal) ---------------------------------------
    @locked
    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        if call.label == UPLINK_LABEL:
            self._from_uplink()
            return
        s = self.live.get(call.label - KICK_LABEL_BASE)
        if s is not None:
            self._drain(s)

    def due(self) -> bool:
        """serve's `until`: time for housekeeping, or frames held by the shaper to retry."""
        now = time.monotonic()
        return now >= self.next_tick or (self.shaper is not None and self.shaper.holding
                                         and now >= self.retry_at)

    def wait_ms(self) -> float:
        """The serve loop's receive timeout: the next tick, or the shaper's retry."""
        until = self.next_tick
        if self.shaper is not None and self.shaper.holding:
            until = min(until, self.retry_at)
        return max(0.5, (until - time.monotonic()) * 1000)

    @locked
    def retry_held(self) -> None:
        """Between ticks: drain the clients whose frames waited for the shaper's tokens."""
        if time.monotonic() >= self.next_tick:
            self.housekeeping()
            return
        if self.shaper is None or not self.shaper.holding:
            return
        self.shaper.holding = False
        self.retry_at = time.monotonic() + RETRY_S
        for s in list(self.live.values()):
            if s.held and (self.rt is None or s.sid not in self.rt.sids):
                self._drain(s)                   # the reserved thread retries its own
        if self.shaper.holding:                  # not before a held frame's tokens are there
            self.retry_at = max(self.retry_at, self.shaper.next_at)

    # -- bandwidth reservations (shaper.py) ------------------------------------------------------
    @locked
    def reserve(self, call: Call, session: int, rate: float) -> tuple[float, float, float]:
        s = self._mine(call, session)
        if self.shaper is None:
            raise RpcError("REFUSED", "this switch's policy gives the uplink no capacity "
                                      "(uplink_rate): nothing to reserve")
        if not rate > 0:
            raise RpcError("INVALID", f"client {s.pol.name}: rate {rate} must be > 0 bytes/s")
        why = self.shaper.reserve(s.label, float(rate))
        if why is not None:
            raise RpcError("REFUSED", f"client {s.pol.name} (label {s.label}): {why}")
        if self.rt is None:
            self.rt = ReservedThread(self)
        self.rt.attach(s)                        # its frames on the reserved thread
        return rate, self.shaper.capacity, self.shaper.total()

    @locked
    def unreserve(self, call: Call, session: int) -> None:
        s = self._mine(call, session)
        if self.shaper is not None:
            self.shaper.release(s.label, s.pol.name)
        if self.rt is not None:
            self.rt.detach(s)

    @locked
    def rt_status(self, call: Call) -> dict[str, Any]:
        if self.shaper is None:
            return {}
        out = self.shaper.status({s.label: s.pol.name for s in self.live.values()})
        out["threads"] = {str(label): hs.describe_thread(tid)
                          for label, tid in self.drained.items()}
        out["switch_ms"] = round(sys.getswitchinterval() * 1e3, 3)   # rtthread.py
        return out

    # -- forwarding ----------------------------------------------------------------------------
    def _drain(self, s: Session) -> None:
        """Take what client `s` submitted: check, decide, deliver, acknowledge."""
        try:
            descs = s.tx.pending()
            room = s.tx.ack_room()
        except ps.BadIndex:
            s.port.malformed["bad_index"] += 1
            s.port.drop("malformed")
            return
        descs = descs[:room]
        if not descs:
            return
        self.drained[s.label] = threading.get_native_id()     # rt_status `threads`
        acks: list[ps.Desc] = []
        out: dict[int, list[bytes]] = {}
        port, view, decide, faults = s.port, s.view, self.switch.decide, self.chaos
        up_room = self._uplink_room()
        s.held = False
        for off, length, _ in descs:
            status = self._check(port, off, length)
            if status == ps.OK:
                start = ps.packet(ps.TX_STREAM, off)
                frame = bytes(view[start:start + length])    # ours now: checked and sent as is
                where = decide(port, frame[:6], frame[6:12])
                if isinstance(where, str):
                    port.drop(where)
                    status = ps.DROPPED
                else:
                    if frame[12:14] == ARP and frame[22:28] == frame[6:12] and len(frame) >= 42:
                        s.seen_ip = ".".join(map(str, frame[28:32]))  # what it says it is
                    if up_room is not None and any(p.key == UPLINK for p in where):
                        if not up_room and self._hold():   # the uplink is full: hold the rest
                            s.held = True
                            break
                        if self.shaper is not None and not self.shaper.take(s.label, length):
                            s.held = True                  # no tokens yet (shaper.py)
                            break
                        up_room -= 1
                    port.c["tx_frames"] += 1
                    port.c["tx_bytes"] += length
                    copies = 1
                    if faults.active:
                        frame, copies = faults.apply(port, where, frame)
                    for p in where if copies else ():
                        out.setdefault(p.key, []).extend([frame] * copies)
            acks.append((off, length, status))
        self._deliver_all(out)
        if not acks:
            return
        s.tx.consume(len(acks))
        s.tx.ack(acks)
        s.acks_unsignaled += len(acks)
        if s.acks_unsignaled >= ACK_SIGNAL_AT or len(acks) >= room:
            s.acks_unsignaled = 0
            self._signal(s)

    @staticmethod
    def _check(port: Port, off: int, length: int) -> int:
        if not ps.valid(off, length):
            port.malformed["descriptor"] += 1
            port.drop("malformed")
            return ps.MALFORMED
        if length > MAX_FRAME:
            port.drop("oversized")
            return ps.MALFORMED
        if length < ETH_HLEN:
            port.malformed["runt"] += 1
            port.drop("malformed")
            return ps.MALFORMED
        return ps.OK

    def _deliver_all(self, out: dict[int, list[bytes]]) -> None:
        for key, frames in out.items():
            if key == UPLINK:
                self._to_uplink(frames)
            else:
                d = self.by_label.get(key)
                if d is not None:
                    self._deliver(d, frames)

    def _deliver(self, d: Session, frames: list[bytes]) -> None:
        """Copy frames into d's RX stream (as many as it has room for), one signal."""
        try:
            _, bad = d.rx.acked()
            if bad:
                d.port.malformed["bad_ack"] += bad
            room = min(d.rx.room(), len(d.rx.free))
        except ps.BadIndex:
            d.port.malformed["bad_index"] += 1
            d.port.drop("no_buffer", len(frames))
            return
        take = frames[:room]
        if len(frames) > room:
            d.port.drop("no_buffer", len(frames) - room)
        if not take:
            return
        descs: list[ps.Desc] = []
        view, nbytes = d.view, 0
        for f in take:
            off = d.rx.free.pop()
            start = ps.packet(ps.RX_STREAM, off)
            view[start:start + len(f)] = f
            descs.append((off, len(f), ps.OK))
            nbytes += len(f)
        d.rx.submit(descs)
        d.port.c["rx_frames"] += len(take)
        d.port.c["rx_bytes"] += nbytes
        self._signal(d)

    def _signal(self, s: Session) -> None:
        try:
            self.tl4.irq_trigger(s.sig)
        except L4Error:
            s.dead = True

    # -- the uplink ------------------------------------------------------------------------------
    def _uplink_room(self) -> int | None:
        """How many frames the uplink takes now (its TX acks reclaimed); None without one.

        Frames from a client towards the uplink are taken only as far as this goes; the
        rest stay in the client's TX stream (`Session.held`) until the uplink's signal says
        the nic server acknowledged some (`_from_uplink`), or the next tick. A full uplink
        is the nic server's queue backing up (the NIC sends slower than the client): the
        client then sees its TX stream fill and waits, instead of its frames being dropped
        here (for TCP: a loss, a halved window, maybe a timeout)."""
        nic = self.uplink.nic
        if nic is None:
            return None
        try:
            room = nic.tx_room()
        except SessionLost as e:
            self._lose_uplink(str(e))
            return None
        if room:
            self.uplink.full_since = 0.0
        return room

    def _hold(self) -> bool:
        """Hold frames for a full uplink back, unless it has been full for UPLINK_HOLD_S: a
        nic server that stopped taking frames (hung, not dead) must not stop a client's
        frames to other clients behind them for good; then they are dropped (no_buffer)."""
        up, now = self.uplink, time.monotonic()
        if not up.full_since:
            up.full_since = now
        self.switch.totals["uplink_full"] += 1
        return now - up.full_since < UPLINK_HOLD_S

    def _attach_uplink(self) -> None:
        up = self.uplink
        if up.cap is None or up.nic is not None:
            return
        try:
            nic = NicSession(self.tl4, up.cap, vm=self.vm, label=UPLINK_LABEL,  # type: ignore[arg-type]
                             timeout_ms=UPLINK_CALL_MS)
        except (SessionLost, L4Error, RemoteError) as e:
            up.error = f"{type(e).__name__}: {e}"[:120]
            return
        up.nic, up.error = nic, ""
        up.attaches += 1
        up.port.mac = nic.mac
        self.switch.add(up.port)
        print(f"ore: uplink attached (session {nic.sid}, NIC MAC {nic.mac.hex(':')}, "
              f"attach #{up.attaches})", flush=True)
        self._from_uplink()

    def _lose_uplink(self, why: str) -> None:
        up = self.uplink
        if up.nic is not None:
            up.nic._forget()
        up.nic = None
        up.lost += 1
        up.error = why[:120]
        self.switch.remove(UPLINK)
        print(f"ore: uplink lost ({why}); reattaching", flush=True)

    def _to_uplink(self, frames: list[bytes]) -> None:
        nic = self.uplink.nic
        if nic is None:
            self.uplink.port.drop("no_route", len(frames))
            return
        try:
            n = nic.send(frames)
        except SessionLost as e:
            self._lose_uplink(str(e))
            self.uplink.port.drop("no_route", len(frames))
            return
        port = self.uplink.port
        port.c["rx_frames"] += n
        port.c["rx_bytes"] += sum(len(f) for f in frames[:n])
        if n < len(frames):
            port.drop("no_buffer", len(frames) - n)

    def _from_uplink(self) -> None:
        nic = self.uplink.nic
        if nic is None:
            return
        port = self.uplink.port
        try:
            frames = nic.poll()
        except SessionLost as e:
            self._lose_uplink(str(e))
            return
        out: dict[int, list[bytes]] = {}
        for f in frames:
            f = bytes(f)
            if len(f) < ETH_HLEN:
                port.drop("malformed")
                continue
            where = self.switch.decide(port, f[:6], f[6:12])
            if isinstance(where, str):
                port.drop(where)
                continue
            port.c["tx_frames"] += 1
            port.c["tx_bytes"] += len(f)
            copies = 1
            if self.chaos.active:
                f, copies = self.chaos.apply(port, where, f)
            for p in where if copies else ():
                out.setdefault(p.key, []).extend([f] * copies)
        self._deliver_all(out)
        for s in list(self.live.values()):
            if s.held:                           # the uplink's acks made room
                self._drain(s)

    # -- housekeeping --------------------------------------------------------------------------
    @locked
    def housekeeping(self) -> None:
        self.next_tick = time.monotonic() + TICK_S
        self._reap(None)
        for s in list(self.live.values()):
            self._drain(s)                       # what a full ack queue held back
            if s.acks_unsignaled:
                s.acks_unsignaled = 0
                self._signal(s)
        if self.uplink.nic is None:
            self._attach_uplink()
        else:
            self._from_uplink()                  # a signal lost to a busy moment

    def _reap(self, label: int | None) -> None:
        """Close sessions whose client is gone (stream.gone)."""
        for s in ps.gone(self.l4, self.live.values(), label, ATTACH_GRACE_S):
            self._close(s, "client gone")

    def _close(self, s: Session, why: str) -> None:
        self.live.pop(s.sid, None)
        if self.rt is not None:
            self.rt.detach(s, closing=True)
        if self.shaper is not None:
            self.shaper.release(s.label, s.pol.name)
        if self.by_label.get(s.label) is s:
            del self.by_label[s.label]
        self.switch.remove(s.label)
        for slot in (s.kick, s.sig):
            try:
                self.l4.cap_delete(slot)         # the client's copies go with ours
            except L4Error:
                pass
        self.blocks.free(s.block)                # sigma0 unmaps it from the client too
        self.switch.totals["sessions_closed"] += 1
        print(f"ore: session {s.sid} of {s.pol.name} (label {s.label}) {why}", flush=True)


def main(l4: L4, policy: str = "{}") -> int:
    try:
        pol = parse_policy(policy or "{}")
    except PolicyError as e:
        print(f"ore: bad policy: {e}", file=sys.stderr, flush=True)
        return 2
    server = OreServer(l4, pol)
    print(f"ore: switch {pol.name} serving {len(pol.clients)} client(s)"
          f"{' and a default' if pol.default else ''}; uplink "
          f"{'attached' if server.uplink.nic else 'none' if pol.uplink is None else 'pending'}",
          flush=True)
    while True:
        ORE.serve(l4, server, until=server.due, timeout=server.wait_ms())
        server.retry_held()
