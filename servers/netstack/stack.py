"""The stack: one interface over one link, its pump thread, ARP, IPv4, ICMP and demultiplexing.

    stack = Stack(link, "10.0.2.15/24", gateway="10.0.2.2")
    stack.start()                     # the pump thread: from now on it alone uses the link
    stack.ping("10.0.2.2") -> seconds or None;  stack.udp(port) -> UdpSocket;  stack.tcp() -> TcpSocket
    stack.stats() -> {...};  stack.stop()

The pump thread (`_pump`) owns the link: it receives a batch of frames, handles each under
the stack's lock (ARP replies and requests, ICMP echo answered at once, UDP queued on its
socket, TCP to its connection or listener), runs the timers (ARP retries and expiry, TCP
retransmission, TIME_WAIT), lets every connection marked dirty transmit, and sends what all
of that queued in one batch (one kick). Then it waits on the link until frames arrive, a
timer falls due, or another thread wakes it (`mark`/`kick`: a socket call queued output).

Locking: `lock` guards every structure of the stack and of its connections and sockets; it is
held by the pump while it handles a batch and by a socket call while it changes its buffers.
Frames are never sent with the lock held (the link may block briefly).

Watching: a user that cannot wait on the conditions (a single-threaded server multiplexing
many sockets: the L⁴Linux personality) adds a callable to `watchers`. Every condition of the
stack (`condition()`: connections, listeners, pings) marks the stack `touched` when it is
notified, and so does a datagram delivered to a socket; once per batch the pump calls the
watchers (without the lock) if anything was touched. They must not block. `sleeping` is set
under the lock just before the pump waits, so a thread queueing work either sees it and
wakes the pump, or runs before the pump looks for work again.

IPv4 only: no fragments (dropped, counted), no options, no routing beyond one gateway.
Addresses are static (the task's arguments or the ORe session's `ip`), or set at run time by
`configure` (the DHCP client, dhcp.py: the stack starts at 0.0.0.0/0, where it sends from
0.0.0.0, broadcasts to 255.255.255.255 and takes IPv4 to any address, and is configured
once the server's ACK arrives).
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from . import wire
from .link import MemLink, NicLink
from .tcp import Key, Listener, Tcb

ARP_TTL_S = 300.0
ARP_RETRY_S = 0.5
ARP_TRIES = 4
ARP_QUEUE = 64                      # packets held per address while it is being resolved
EPHEMERAL = (49152, 65535)
IDLE_WAIT_S = 1.0                   # the longest the pump sleeps with nothing due
SessionLostTypes: tuple[type[BaseException], ...] = ()
try:
    from servers.nic.client import SessionLost
    SessionLostTypes = (SessionLost,)
except ImportError:                 # pragma: no cover - the nic package is part of the project
    pass

Link = NicLink | MemLink


class _Touching(threading.Condition):
    """A condition of the stack: a notification also marks the stack touched (watchers)."""

    def __init__(self, stack: "Stack") -> None:
        super().__init__(stack.lock)
        self._stack = stack

    def notify(self, n: int = 1) -> None:
        self._stack.touched = True
        super().notify(n)

    def notify_all(self) -> None:
        self._stack.touched = True
        super().notify_all()


def parse_cidr(text: str) -> tuple[bytes, int]:
    addr, _, plen = text.partition("/")
    n = int(plen) if plen else 24
    if not 0 <= n <= 32:
        raise ValueError(f"bad prefix length in {text!r}")
    return wire.ip_bytes(addr), n


class Stack:
    def __init__(self, link: Link, address: str, gateway: str | None = None,
                 name: str = "netstack") -> None:
        self.link, self.name = link, name
        self._address(address, gateway)
        self.mac = link.mac
        self.on_stop: list[Any] = []                                    # called first by stop()
        self.lock = threading.RLock()
        self.arp: dict[bytes, tuple[bytes, float]] = {}                 # ip -> (mac, expiry)
        self.arp_wait: dict[bytes, list[Any]] = {}                      # ip -> [tries, next, [pkts]]
        self.udp_socks: dict[int, Any] = {}
        self.listeners: dict[int, Listener] = {}
        self.tcbs: dict[Key, Tcb] = {}
        self.pings: dict[tuple[int, int], list[float]] = {}             # (ident, seq) -> [t0, rtt]
        self.watchers: list[Any] = []                                   # called when touched
        self.touched = False
        self.icmp_taps: list[Any] = []                                  # called with each ICMP packet
        self.ping_cond = self.condition()
        self.out: list[bytes] = []                                      # frames for the pump
        self.dirty: set[Tcb] = set()
        self.sleeping = False
        self.running = False
        self.ident = random.getrandbits(16)
        self.counts: Counter[str] = Counter()
        self.thread: threading.Thread | None = None
        self.reopened = 0

    def _address(self, address: str, gateway: str | None) -> None:
        self.addr, self.plen = parse_cidr(address)
        mask = (0xFFFFFFFF << (32 - self.plen)) & 0xFFFFFFFF
        self.mask = mask.to_bytes(4, "big")
        self.net = bytes(a & m for a, m in zip(self.addr, self.mask))
        self.bcast = bytes(n | (~m & 0xFF) for n, m in zip(self.net, self.mask))
        self.gateway = wire.ip_bytes(gateway) if gateway else None

    def configure(self, address: str, gateway: str | None = None) -> None:
        """A new address at run time (DHCP): checked first, then set; the ARP cache is
        dropped (the subnet may differ) and a gratuitous ARP announces the new address."""
        parse_cidr(address)
        if gateway:
            wire.ip_bytes(gateway)
        with self.lock:
            self._address(address, gateway)
            self.arp.clear()
        self.announce()

    def condition(self) -> threading.Condition:
        """A condition on the stack's lock whose notifications also mark it touched."""
        return _Touching(self)

    @property
    def configured(self) -> bool:
        return any(self.addr)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> "Stack":
        self.running = True
        self.thread = threading.Thread(target=self._pump, name=f"{self.name}-pump", daemon=True)
        self.thread.start()
        self.announce()
        return self

    def stop(self) -> None:
        for fn in self.on_stop:                    # e.g. the DHCP client's DHCPRELEASE
            fn()
        with self.lock:
            for t in list(self.tcbs.values()):
                t.abort()
            self.running = False
        self.kick()
        if self.thread is not None:
            self.thread.join(5)
        self.link.close()

    def announce(self) -> None:
        """A gratuitous ARP: switches and hosts learn where our address is."""
        if not self.configured:
            return                                 # 0.0.0.0 (DHCP not done): nothing to say
        with self.lock:
            self.out.append(wire.eth(wire.BROADCAST, self.mac, wire.ETH_ARP, wire.arp(
                wire.ARP_REQUEST, self.mac, self.addr, wire.ZERO_MAC, self.addr)))
        self.kick()

    # -- the pump -------------------------------------------------------------------------------
    def _pump(self) -> None:
        pending: list[bytes] = []
        while self.running:
            try:
                frames = self.link.recv()
                now = time.monotonic()
                with self.lock:
                    for f in frames:
                        self._input(f, now)
                    self._timers(now)
                    for t in list(self.dirty):
                        t.output()
                    self.dirty.clear()
                    pending += self.out
                    self.out = []
                    touched, self.touched = self.touched, False
                if touched:
                    for fn in self.watchers:
                        fn()
                if pending:
                    n = self.link.send(pending)
                    self.counts["tx_frames"] += n
                    pending = pending[n:]
                if frames:
                    continue                       # more may be waiting: look before sleeping
                timeout = 0.002 if pending else self._next_due(now)
                with self.lock:
                    if self.out or self.dirty or not self.running:
                        continue
                    self.sleeping = True
                self.link.wait(timeout)
                with self.lock:
                    self.sleeping = False
            except SessionLostTypes as e:
                self.counts["session_lost"] += 1
                print(f"{self.name}: session lost ({e}); reopening", flush=True)
                pending = []
                self._reopen()

    def _reopen(self) -> None:
        """A new session, however long the server takes to come back (or until stop)."""
        while self.running:
            try:
                self.link.reopen()                 # type: ignore[union-attr]
            except SessionLostTypes as e:
                print(f"{self.name}: no new session yet ({e})", flush=True)
                continue
            self.reopened += 1
            self.announce()
            return

    def _next_due(self, now: float) -> float:
        due = now + IDLE_WAIT_S
        with self.lock:
            for t in self.tcbs.values():
                for d in (t.deadline, t.linger):
                    if d:
                        due = min(due, d)
            for w in self.arp_wait.values():
                due = min(due, w[1])
        return max(0.0, due - now)

    def mark(self, tcb: Tcb) -> None:
        """`tcb` has output (called with the lock held); wakes the pump if it sleeps."""
        self.dirty.add(tcb)
        if self.sleeping:
            self.sleeping = False
            self.link.wake()

    def kick(self) -> None:
        with self.lock:
            wake = self.sleeping
            self.sleeping = False
        if wake:
            self.link.wake()

    def _timers(self, now: float) -> None:
        for t in list(self.tcbs.values()):
            t.timer(now)
        for ip, w in list(self.arp_wait.items()):
            if now < w[1]:
                continue
            if w[0] >= ARP_TRIES:
                self.counts["drop_arp_unresolved"] += len(w[2])
                del self.arp_wait[ip]
                continue
            w[0], w[1] = w[0] + 1, now + ARP_RETRY_S
            self._arp_request(ip)

    # -- input (pump thread, lock held) -------------------------------------------------------------
    def _input(self, frame: bytes, now: float) -> None:
        self.counts["rx_frames"] += 1
        if len(frame) < 14:
            self.counts["drop_runt"] += 1
            return
        dst, src, etype = wire.ETH.unpack_from(frame)
        if src == self.mac:
            return                                 # our own, echoed (a loopback wire, a hub)
        if dst != self.mac and dst != wire.BROADCAST:
            return                                 # for another station on the segment
        body = frame[14:]
        if etype == wire.ETH_ARP:
            self._input_arp(body, now)
        elif etype == wire.ETH_IP4:
            ip = wire.parse_ip4(body)
            if ip is None:
                self.counts["drop_bad_ip"] += 1
            elif (ip.dst == self.addr or ip.dst == self.bcast or ip.dst == b"\xff" * 4
                  or not self.configured):          # DHCP: an offer to the address offered
                self._input_ip(ip, src, now)

    def _input_arp(self, body: bytes, now: float) -> None:
        a = wire.parse_arp(body)
        if a is None:
            self.counts["drop_bad_arp"] += 1
            return
        if a.spa in self.arp or a.tpa == self.addr:
            self._learn(a.spa, a.sha, now)
        if a.op == wire.ARP_REQUEST and a.tpa == self.addr and a.spa != self.addr:
            self.counts["arp_replies"] += 1
            self.out.append(wire.eth(a.sha, self.mac, wire.ETH_ARP, wire.arp(
                wire.ARP_REPLY, self.mac, self.addr, a.sha, a.spa)))

    def _learn(self, ip: bytes, mac: bytes, now: float) -> None:
        self.arp[ip] = (mac, now + ARP_TTL_S)
        w = self.arp_wait.pop(ip, None)
        if w:
            self.out += [wire.eth(mac, self.mac, wire.ETH_IP4, p) for p in w[2]]

    def _input_ip(self, ip: wire.Ip4, src_mac: bytes, now: float) -> None:
        if ip.src not in self.arp and self._on_link(ip.src):
            self.arp[ip.src] = (src_mac, now + ARP_TTL_S)      # what the frame vouches for
        if ip.proto == wire.PROTO_ICMP:
            self._input_icmp(ip, now)
        elif ip.proto == wire.PROTO_UDP:
            self._input_udp(ip)
        elif ip.proto == wire.PROTO_TCP:
            self._input_tcp(ip, now)
        else:
            self.counts["drop_proto"] += 1

    def _input_icmp(self, ip: wire.Ip4, now: float) -> None:
        p = ip.payload
        if len(p) < 8 or not wire.sums_to_zero(p):
            self.counts["drop_bad_icmp"] += 1
            return
        kind, _, _, ident, seq = wire.ICMP.unpack_from(p)
        for tap in self.icmp_taps:
            tap(ip)
        if kind == wire.ICMP_ECHO and ip.dst == self.addr:
            self.counts["icmp_echo_replies"] += 1
            self.ip_output(ip.src, wire.PROTO_ICMP, wire.icmp_echo(wire.ICMP_ECHO_REPLY, ident, seq, p[8:]))
        elif kind == wire.ICMP_ECHO_REPLY:
            w = self.pings.get((ident, seq))
            if w is not None and not w[1]:
                w[1] = now - w[0]
                self.ping_cond.notify_all()

    def _input_udp(self, ip: wire.Ip4) -> None:
        p = ip.payload
        if len(p) < 8:
            self.counts["drop_bad_udp"] += 1
            return
        sport, dport, length, csum = wire.UDP.unpack_from(p)
        if length < 8 or length > len(p) or (csum and not wire.l4_ok(ip.src, ip.dst, wire.PROTO_UDP, p[:length])):
            self.counts["drop_bad_udp"] += 1
            return
        sock = self.udp_socks.get(dport)
        if sock is None:
            self.counts["drop_udp_no_port"] += 1
            return
        sock.deliver(p[8:length], (wire.ip_str(ip.src), sport))

    def _input_tcp(self, ip: wire.Ip4, now: float) -> None:
        if not wire.l4_ok(ip.src, ip.dst, wire.PROTO_TCP, ip.payload):
            self.counts["drop_bad_tcp"] += 1
            return
        seg = wire.parse_tcp(ip.payload)
        if seg is None:
            self.counts["drop_bad_tcp"] += 1
            return
        self.counts["tcp_in"] += 1
        tcb = self.tcbs.get((seg.dport, ip.src, seg.sport))
        if tcb is not None:
            tcb.input(seg, now)
            return
        lst = self.listeners.get(seg.dport)
        if lst is not None and seg.flags & wire.SYN and not seg.flags & (wire.ACK | wire.RST):
            self._passive_open(lst, ip.src, seg, now)
            return
        if not seg.flags & wire.RST:               # no one here: refuse
            self.counts["tcp_rst_sent"] += 1
            if seg.flags & wire.ACK:
                self.send_rst(seg.dport, ip.src, seg.sport, seg.ack, 0, wire.RST)
            else:
                n = len(seg.data) + bool(seg.flags & wire.SYN) + bool(seg.flags & wire.FIN)
                self.send_rst(seg.dport, ip.src, seg.sport, 0, seg.seq + n, wire.RST | wire.ACK)

    def _passive_open(self, lst: Listener, rip: bytes, seg: wire.Segment, now: float) -> None:
        if len(lst.ready) + lst.embryos >= lst.backlog:
            self.counts["tcp_backlog_full"] += 1
            return                                  # the peer retries its SYN
        t = Tcb(self, seg.dport, rip, seg.sport)
        t.listener = lst
        t.state = "SYN_RCVD"
        t.rcv_nxt = (seg.seq + 1) & 0xFFFFFFFF
        t.mss = min(seg.mss or 536, 1460)
        t.offer_ws = seg.wscale >= 0
        t.scaling(seg.wscale)
        t.snd_wnd = seg.win                        # a SYN's window is never scaled
        lst.embryos += 1
        self.tcbs[t.key] = t
        t._emit(t.iss, wire.SYN | wire.ACK, b"", mss=1460)
        t.snd_nxt = t.snd_max = (t.iss + 1) & 0xFFFFFFFF
        t._arm(now)

    def send_rst(self, lport: int, rip: bytes, rport: int, seq: int, ack: int, flags: int) -> None:
        self.ip_output(rip, wire.PROTO_TCP, wire.tcp(self.addr, rip, lport, rport, seq, ack, flags, 0))

    # -- output (lock held) -----------------------------------------------------------------------
    def _on_link(self, ip: bytes) -> bool:
        return bytes(a & m for a, m in zip(ip, self.mask)) == self.net

    def ip_output(self, dst: bytes, proto: int, payload: bytes) -> None:
        """Queue an IPv4 packet for the pump: to `dst` itself on our subnet, else to the
        gateway; held while its next hop's MAC is being asked for (ARP)."""
        self.ident = (self.ident + 1) & 0xFFFF
        pkt = wire.ip4(self.addr, dst, proto, payload, self.ident)
        if dst == self.bcast or dst == b"\xff" * 4:
            self.out.append(wire.eth(wire.BROADCAST, self.mac, wire.ETH_IP4, pkt))
            if self.sleeping:                      # else it waits for the pump's idle timeout
                self.sleeping = False
                self.link.wake()
            return
        hop = dst if self._on_link(dst) or self.gateway is None else self.gateway
        hit = self.arp.get(hop)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            self.out.append(wire.eth(hit[0], self.mac, wire.ETH_IP4, pkt))
            if self.sleeping:
                self.sleeping = False
                self.link.wake()
            return
        w = self.arp_wait.get(hop)
        if w is None:
            w = self.arp_wait[hop] = [1, now + ARP_RETRY_S, []]
            self._arp_request(hop)
        if len(w[2]) < ARP_QUEUE:
            w[2].append(pkt)
        else:
            self.counts["drop_arp_queue"] += 1
        if self.sleeping:
            self.sleeping = False
            self.link.wake()

    def _arp_request(self, ip: bytes) -> None:
        self.counts["arp_requests"] += 1
        self.out.append(wire.eth(wire.BROADCAST, self.mac, wire.ETH_ARP, wire.arp(
            wire.ARP_REQUEST, self.mac, self.addr, wire.ZERO_MAC, ip)))

    def unconfirm(self, dst: bytes) -> None:
        """Repeated timeouts towards `dst`: drop its next hop's ARP entry, so the next
        packet asks again (ARP has no checksum: a corrupted reply, or a peer that moved)."""
        hop = dst if self._on_link(dst) or self.gateway is None else self.gateway
        if self.arp.pop(hop, None) is not None:
            self.counts["arp_unconfirmed"] += 1

    def forget(self, tcb: Tcb) -> None:
        if self.tcbs.get(tcb.key) is tcb:
            del self.tcbs[tcb.key]
        self.dirty.discard(tcb)

    def free_port(self) -> int:
        used = set(self.udp_socks) | set(self.listeners) | {k[0] for k in self.tcbs}
        while True:
            p = random.randint(*EPHEMERAL)
            if p not in used:
                return p

    # -- the user's side ---------------------------------------------------------------------------
    def ping(self, address: str, timeout: float = 1.0, size: int = 56) -> float | None:
        """One ICMP echo: the round trip in seconds, or None if no answer within `timeout`."""
        dst = wire.ip_bytes(address)
        with self.lock:
            self.ident = (self.ident + 1) & 0xFFFF
            key = (0x4C34, self.ident)
            w = self.pings[key] = [time.monotonic(), 0.0]
            self.ip_output(dst, wire.PROTO_ICMP, wire.icmp_echo(wire.ICMP_ECHO, *key, bytes(size)))
            self.ping_cond.wait_for(lambda: w[1] > 0, timeout)
            del self.pings[key]
            return w[1] or None

    def udp(self, port: int = 0) -> Any:
        from .socket import UdpSocket
        return UdpSocket(self, port)

    def tcp(self) -> Any:
        from .socket import TcpSocket
        return TcpSocket(self)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"address": f"{wire.ip_str(self.addr)}/{self.plen}", "mac": self.mac.hex(":"),
                    "arp": {wire.ip_str(k): v[0].hex(":") for k, v in self.arp.items()},
                    "connections": [t.describe() for t in self.tcbs.values()],
                    "listening": sorted(self.listeners), "udp": sorted(self.udp_socks),
                    "reopened": self.reopened, **dict(self.counts)}
