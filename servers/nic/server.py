"""The nic device server: the l4nic driver, the DDE/Linux glue and the session server in one task.

    main(l4, policy)     boot the glue (DDEKit), load the driver, open its net_device, serve NIC

The DDE model (paper §4.4): the driver runs unmodified on the glue inside the server's own
process; the server is the net_device's only user (as a Linux bridge port is: an rx_handler
for every received skb, netdevice notifier events for the link) and multiplexes it among
sessions (servers/nic/protocol.py), each with its shared block of two packet streams
(servers/nic/stream.py). Every received frame goes to every session (the NIC is promiscuous;
ORe, the usual single client, does the switching); the session that last sent from the
frame's destination MAC is signalled first.

Policy (the task's first argument, JSON): {"clients": {"<label>": {"name": "ore",
"sessions": 1}, ...}, "device": "eth0"}. A client is the label of its capability; a label
without an entry is refused DENIED. "device" picks the net_device (default: the first).

Threads and what they own:
- main (DDEKit's main thread): the NIC protocol, every TX stream (kick IRQs: drain the submit
  queue into dev_queue_xmit, acknowledge), session open/close, the housekeeping tick;
- the driver's interrupt thread (l4nic hands each pass over its ring up at once with
  netif_receive_skb_list; a driver using netif_rx: the glue's net-rx thread): every RX
  stream (copy each frame into each session's buffer, submit; one signal per session per
  batch); `Session.lock` orders it against close;
- the driver's interrupt and timer threads: `on_link` (header words, signals) and `_wake`
  (a trigger of the wake IRQ, so the main thread resumes stopped TX streams);
- nic-watch: triggers the tick IRQ every TICK_S.
Check first: every descriptor and index word of a client is checked before a byte moves; a
bad one is counted on its session and answered (MALFORMED ack) without touching others.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from kernel.abi import SLOT_THREAD, MemRights, Rights
from kernel.user.client import L4, map_cap
from kernel.user.errors import L4Error
from kernel.user.rpc import Call, Reply, RpcError
from kernel.user.vm import map_mem
from servers.dde_linux import kernel as lk
from servers.dde_linux import net
from servers.ddekit import memory as dmem
from servers.ddekit import thread as dthread

from . import stream as ps
from .protocol import (ATTACH_GRACE_S, KICK_LABEL_BASE, MAX_FRAME, NIC, TICK_LABEL,
                       WAKE_LABEL)

DRIVER = "servers.dde_linux.drivers.l4nic"
TICK_S = 0.25
ACK_SIGNAL_AT = ps.RING // 4
OWNERS_MAX = 1024


class Session:
    """One client's session. TX side: main thread only; RX side: the delivering thread under
    `lock`."""

    def __init__(self, sid: int, label: int, va: int, kick: int, sig: int) -> None:
        self.sid, self.label, self.va = sid, label, va
        self.kick, self.sig = kick, sig              # our slots of its two IRQ objects
        self.lock = threading.Lock()
        self.view = dmem.view(va, ps.SESSION_SIZE, writable=True)
        self.mem = ps.ViewMem(self.view)
        for base in (ps.TX_STREAM, ps.RX_STREAM):
            ps.init_stream(self.mem, base)
        self.tx = ps.Sink(self.mem, ps.TX_STREAM)
        self.rx = ps.Source(self.mem, ps.RX_STREAM)
        self.opened = time.monotonic()
        self.attached = False                        # the client attached its signal once
        self.closed = False
        self.dead = False                            # a signal trigger failed: reap it
        self.rx_notify = False                       # RX thread: frames submitted this batch
        self.rx_own = False                          # RX thread: ... one of them to its MAC
        self.tx_blocked = False                      # main: the driver's queue was stopped
        self.acks_unsignaled = 0                     # main: acks the client was not told of
        self.c: Counter[str] = Counter()             # frames, bytes
        self.drops: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()

    def counters(self) -> dict[str, Any]:
        return {"session": self.sid, "label": self.label, **self.c, "drops": dict(self.drops),
                "malformed": dict(self.malformed)}


class NicServer:
    """NIC's implementation (main thread), the net_device's user (RX delivery, driver threads)."""

    def __init__(self, l4: L4, policy: dict[str, Any], ndev: net.net_device) -> None:
        self.l4, self.ndev = l4, ndev
        self.clients: dict[int, dict[str, Any]] = {
            int(k): (v if isinstance(v, dict) else {"name": str(v)})
            for k, v in policy.get("clients", {}).items()}
        self.live: dict[int, Session] = {}           # replaced whole by the main thread
        self.next_sid = 1
        self.link_changes = 0
        self.totals: Counter[str] = Counter()
        # source MAC -> the session that last sent with it (main thread writes, the RX thread
        # reads; single dict operations): whose frames a received one is, so that session is
        # signalled first (every session still gets every frame)
        self.owners: dict[bytes, int] = {}
        self.wake = l4.create_irq()
        l4.irq_attach(self.wake, SLOT_THREAD, WAKE_LABEL)
        self.tick = l4.create_irq()
        l4.irq_attach(self.tick, SLOT_THREAD, TICK_LABEL)
        ndev.tx_wake = self._wake
        net.netdev_rx_handler_register(ndev, self.on_rx, self, flush=self.on_rx_flush)
        net.register_netdevice_notifier(self.on_event)
        self.watch = dthread.create("nic-watch", self._watch)

    # -- the protocol (main thread) -----------------------------------------------------
    def open(self, call: Call) -> Reply:
        pol = self.clients.get(call.label)
        if pol is None:
            raise RpcError("DENIED", f"the nic policy has no client with label {call.label}")
        self._reap(call.label)
        mine = [s for s in self.live.values() if s.label == call.label]
        if len(mine) >= int(pol.get("sessions", 1)):
            raise RpcError("BUSY", f"client {call.label} holds {len(mine)} session(s) already")
        try:
            va = dmem.contig_alloc(ps.SESSION_SIZE, align=ps.SESSION_SIZE)
        except dmem.OutOfMemory as e:
            raise RpcError("NO_MEMORY", str(e)) from None
        dmem.fill(va, ps.SESSION_SIZE, 0)
        sid, self.next_sid = self.next_sid, self.next_sid + 1
        kick: int | None = None
        try:
            kick = self.l4.create_irq()
            self.l4.irq_attach(kick, SLOT_THREAD, KICK_LABEL_BASE + sid)
            sig = self.l4.create_irq()
        except L4Error as e:                # the task's quota of kernel objects is spent
            if kick is not None:
                self.l4.cap_delete(kick)
            dmem.contig_free(va)
            raise RpcError("NO_MEMORY", f"no IRQ objects for a session: {e}") from None
        s = Session(sid, call.label, va, kick, sig)
        ps.set_link(s.mem, net.netif_carrier_ok(self.ndev), self.link_changes)
        self.live = {**self.live, sid: s}
        self.totals["sessions_opened"] += 1
        lk.printk(lk.KERN_INFO + "nic: session %d for %s (label %d)", sid,
                  pol.get("name", "?"), call.label)
        value = {"session": sid, "mac": bytes(self.ndev.dev_addr).hex(":"), "mtu": self.ndev.mtu,
                 "link": net.netif_carrier_ok(self.ndev), "size": ps.SESSION_SIZE,
                 "order": ps.SESSION_ORDER, "stream": ps.STREAM_SIZE, "ring": ps.RING,
                 "slot": ps.SLOT}
        return Reply(value, [map_mem(va, ps.SESSION_ORDER, MemRights.RW),
                             map_cap(kick, Rights.INVOKE),
                             map_cap(sig, Rights.INVOKE | Rights.WRITE)])

    def release(self, call: Call, session: int) -> None:
        s = self._mine(call, session)
        self._close(s, "closed")

    def info(self, call: Call) -> dict[str, Any]:
        return {"mac": bytes(self.ndev.dev_addr).hex(":"), "mtu": self.ndev.mtu,
                "link": net.netif_carrier_ok(self.ndev), "link_changes": self.link_changes,
                "device": self.ndev.name, "sessions": len(self.live)}

    def stats(self, call: Call, session: int) -> dict[str, Any]:
        return self._mine(call, session).counters()

    def device_stats(self, call: Call) -> dict[str, Any]:
        get = self.ndev.netdev_ops.ndo_get_stats
        st = get(self.ndev) if get else self.ndev.stats
        return {"device": st.as_dict(), "totals": dict(self.totals), "skbs": net.skb_stats(),
                "memory": dmem.usage(), "sessions": len(self.live)}

    def sessions(self, call: Call) -> list[dict[str, Any]]:
        return [s.counters() for s in self.live.values()]

    def _mine(self, call: Call, sid: int) -> Session:
        s = self.live.get(sid)
        if s is None or s.label != call.label:
            raise RpcError("INVALID", f"no session {sid} of this client")
        return s

    # -- kernel messages: kicks, the queue's wake-up, the tick (main thread) --------------
    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        if call.label == TICK_LABEL:
            self._housekeeping()
        elif call.label == WAKE_LABEL:
            for s in list(self.live.values()):
                self._tx(s)
        else:
            kicked = self.live.get(call.label - KICK_LABEL_BASE)
            if kicked is not None:
                self._tx(kicked)

    def _tx(self, s: Session) -> None:
        """Send what the client submitted, acknowledge it; stop when the queue stops."""
        if s.closed:
            return
        try:
            descs = s.tx.pending()
            room = s.tx.ack_room()
        except ps.BadIndex:
            s.malformed["bad_index"] += 1
            return
        descs = descs[:room]
        acks: list[ps.Desc] = []
        link = net.netif_carrier_ok(self.ndev)
        for i, (off, length, _) in enumerate(descs):
            status = self._check_tx(s, off, length, link)
            if status == ps.OK:
                skb = net.netdev_alloc_skb(self.ndev, length)
                data = s.mem.read(ps.packet(ps.TX_STREAM, off), length)
                net.skb_put_data(skb, data)
                src = bytes(data[6:12])
                if self.owners.get(src) != s.sid:
                    self._own(src, s.sid)
                skb.xmit_more = i + 1 < len(descs)
                if net.dev_queue_xmit(skb, self.ndev) == net.NETDEV_TX_BUSY:
                    net.kfree_skb(skb)
                    s.tx_blocked = True
                    break
                s.c["tx_frames"] += 1
                s.c["tx_bytes"] += length
            acks.append((off, length, status))
        if acks:
            s.tx.consume(len(acks))
            s.tx.ack(acks)
            s.acks_unsignaled += len(acks)
            if s.acks_unsignaled >= ACK_SIGNAL_AT or len(acks) >= room:
                self._signal_acks(s)

    def _own(self, mac: bytes, sid: int) -> None:
        if len(self.owners) >= OWNERS_MAX:
            self.owners = {}                         # a client sending from many MACs: start over
        self.owners[mac] = sid

    def _signal_acks(self, s: Session) -> None:
        """Tell the client about acknowledgements only when it may run short of packets
        (a quarter of the queue unsignaled, or the ack queue full); otherwise it reclaims
        them at its next send or RX signal, and the tick tells it within TICK_S. One
        kernel call less per batch."""
        s.acks_unsignaled = 0
        self._signal(s)

    def _check_tx(self, s: Session, off: int, length: int, link: bool) -> int:
        if not ps.valid(off, length):
            s.malformed["descriptor"] += 1
            return ps.MALFORMED
        if length < net.ETH_HLEN or length > MAX_FRAME:
            s.malformed["oversized" if length > MAX_FRAME else "runt"] += 1
            return ps.MALFORMED
        if not link:
            s.drops["link_down"] += 1
            return ps.DROPPED
        return ps.OK

    def _housekeeping(self) -> None:
        self._reap(None)
        for s in list(self.live.values()):
            self._tx(s)                     # a client that drained its acks late
            if s.acks_unsignaled and not s.closed:
                self._signal_acks(s)

    def _reap(self, label: int | None) -> None:
        """Close sessions whose client is gone (stream.gone)."""
        for s in ps.gone(self.l4, self.live.values(), label, ATTACH_GRACE_S):
            self._close(s, "client gone")

    def _close(self, s: Session, why: str) -> None:
        with s.lock:                        # RX delivery is not inside this session now
            s.closed = True
        self.live = {k: v for k, v in self.live.items() if k != s.sid}
        for slot in (s.kick, s.sig):
            try:
                self.l4.cap_delete(slot)    # the client's copies go with ours
            except L4Error:
                pass
        try:
            s.view.release()
        except BufferError:                 # a slice still alive: the block goes all the same
            pass
        dmem.contig_free(s.va)              # sigma0 unmaps it from the client too
        self.totals["sessions_closed"] += 1
        lk.printk(lk.KERN_INFO + "nic: session %d of label %d %s", s.sid, s.label, why)

    def _signal(self, s: Session) -> None:
        try:
            dthread.my_l4().irq_trigger(s.sig)
        except L4Error:
            s.dead = True

    # -- the net_device's user: receive (RX delivery), link and queue events (driver threads)
    def on_rx(self, skb: net.sk_buff) -> int:
        net.skb_push(skb, net.ETH_HLEN)        # back to the whole frame, header included
        frame, n = skb.data, skb.len
        owner = self.owners.get(bytes(frame[:6]))
        for s in list(self.live.values()):
            with s.lock:
                if not s.closed:
                    self._deliver(s, frame, n)
                    if s.sid == owner:
                        s.rx_own = True
        net.consume_skb(skb)
        return net.RX_HANDLER_CONSUMED

    def _deliver(self, s: Session, frame: memoryview, n: int) -> None:
        try:
            _, bad = s.rx.acked()
            if bad:
                s.malformed["bad_ack"] += bad
            room = s.rx.room()
        except ps.BadIndex:
            s.malformed["bad_index"] += 1
            s.drops["no_buffer"] += 1
            return
        off = s.rx.alloc() if room else None
        if off is None:
            s.drops["no_buffer"] += 1
            return
        s.mem.write(ps.packet(ps.RX_STREAM, off), frame)
        s.rx.submit([(off, n, ps.OK)])
        s.c["rx_frames"] += 1
        s.c["rx_bytes"] += n
        s.rx_notify = True

    def on_rx_flush(self, _: Any) -> None:
        """One signal per session that got frames; first those that got frames for a MAC they
        send from (each signal is a kernel call: the session waiting for the frame should not
        wait for the others' signals too)."""
        live = list(self.live.values())
        for s in [s for s in live if s.rx_own] + [s for s in live if not s.rx_own]:
            s.rx_own = False
            if s.rx_notify and not s.closed:
                s.rx_notify = False
                self._signal(s)

    def on_event(self, event: int, dev: net.net_device) -> None:
        if dev is not self.ndev or event != net.NETDEV_CHANGE:
            return
        self.link_changes += 1
        up = net.netif_carrier_ok(dev)
        self.totals["link_up" if up else "link_down"] += 1
        for s in list(self.live.values()):
            with s.lock:
                if s.closed:
                    continue
                ps.set_link(s.mem, up, self.link_changes)
            self._signal(s)

    def _wake(self, dev: net.net_device) -> None:
        try:
            dthread.my_l4().irq_trigger(self.wake)
        except L4Error:
            pass

    def _watch(self, _: Any) -> None:
        l4 = dthread.my_l4()
        while True:
            time.sleep(TICK_S)
            try:
                l4.irq_trigger(self.tick)
            except L4Error:
                return


def main(l4: L4, policy: str = "{}") -> int:
    pol = json.loads(policy) if policy else {}
    lk.boot(l4)
    ret = lk.load(DRIVER)
    if ret:
        lk.printk(lk.KERN_ERR + "nic: the driver did not load: %d", ret)
        return 1
    devs = net.netdevs()
    want = pol.get("device")
    ndev = next((d for d in devs if want in (None, d.name)), None)
    if ndev is None:
        lk.printk(lk.KERN_ERR + "nic: no net_device %s", want or "at all")
        return 1
    ret = net.dev_open(ndev)
    if ret:
        lk.printk(lk.KERN_ERR + "nic: %s would not open: %d", ndev.name, ret)
        return 1
    server = NicServer(l4, pol, ndev)
    lk.printk(lk.KERN_INFO + "nic: serving %s (MAC %s) to %d client(s)", ndev.name,
              bytes(ndev.dev_addr).hex(":"), len(server.clients))
    NIC.serve(l4, server)
    return 0
