"""DHCP (RFC 2131, options RFC 2132): the message format, and the client that configures a stack.

    stack = Stack(link, "0.0.0.0/0").start()
    client = DhcpClient(stack); lease = client.acquire()     # blocks until an ACK (or timeout)
    client.start()                                           # renewal at T1, rebinding at T2
    ...; stack.stop()                                        # sends DHCPRELEASE first

The format (`Message`, `encode`, `decode`) is shared with the server (servers/dhcpd): the fixed
BOOTP header (op, htype 1, hlen 6, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr),
the magic cookie, then options as code/length/value. `decode` is checking: anything short,
with another cookie, an option running past the end, a missing or unknown message type is a
`BadMessage` (the reason says which), never a crash.

The client's states (RFC 2131 section 4.4): INIT (DISCOVER broadcast, retransmitted with
doubling timeouts from RETRY_S up to RETRY_MAX_S, jittered) -> SELECTING (the first OFFER for
our xid and MAC) -> REQUESTING (REQUEST broadcast with options 50 and 54; NAK or no answer:
back to INIT) -> BOUND (the stack `configure`d with the address, prefix from option 1 and
router from option 3) -> RENEWING at T1 (option 58, else lease/2: REQUEST unicast to the
server, ciaddr set) -> REBINDING at T2 (option 59, else 7/8 lease: REQUEST broadcast) ->
lease expired: the stack goes back to 0.0.0.0/0 and the client to INIT. Retransmissions while
renewing or rebinding wait half the time left to T2 (resp. to the expiry), at least MIN_WAIT_S.
We always set the BROADCAST flag while we have no address: our stack takes IPv4 to any
address then, but a server need not ARP for an address nobody holds yet.

Ownership: one client per stack; `acquire` runs on the caller's thread, then the renewal
thread (`start`) alone sends and receives on the client's UDP socket (port 68).
"""
from __future__ import annotations

import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import wire

SERVER_PORT, CLIENT_PORT = 67, 68
BOOTREQUEST, BOOTREPLY = 1, 2
COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")      # op .. file: 236 bytes
FLAG_BROADCAST = 0x8000

# message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}
# options
OPT_PAD, OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME = 0, 1, 3, 6, 12
OPT_REQUESTED, OPT_LEASE, OPT_TYPE, OPT_SERVER, OPT_PARAMS = 50, 51, 53, 54, 55
OPT_MESSAGE, OPT_T1, OPT_T2, OPT_CLIENT_ID, OPT_END = 56, 58, 59, 61, 255
PARAMS = bytes([OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_LEASE, OPT_SERVER, OPT_T1, OPT_T2])

RETRY_S = 1.0                     # the first DISCOVER/REQUEST timeout, doubled per try
RETRY_MAX_S = 8.0                 # ... up to this (RFC: 64 s; we boot machines in tests)
REQUEST_TRIES = 4                 # REQUESTs before going back to INIT
MIN_WAIT_S = 0.5                  # the shortest retransmission wait while renewing/rebinding
ZERO = b"\x00" * 4


class BadMessage(ValueError):
    """A datagram that is not a DHCP message we can read (the sender's fault)."""


class Message(NamedTuple):
    op: int
    xid: int
    flags: int
    ciaddr: bytes
    yiaddr: bytes
    siaddr: bytes
    giaddr: bytes
    chaddr: bytes                 # the client's MAC (6 bytes)
    options: dict[int, bytes]

    @property
    def kind(self) -> int:
        return self.options[OPT_TYPE][0]

    def addr_opt(self, code: int) -> bytes | None:
        v = self.options.get(code)
        return v[:4] if v is not None and len(v) >= 4 else None

    def int_opt(self, code: int) -> int | None:
        v = self.options.get(code)
        return int.from_bytes(v[:4], "big") if v is not None and len(v) >= 4 else None


def encode(m: Message) -> bytes:
    head = HEADER.pack(m.op, 1, 6, 0, m.xid, 0, m.flags, m.ciaddr, m.yiaddr, m.siaddr, m.giaddr,
                       m.chaddr.ljust(16, b"\x00"), b"", b"")
    opts = bytearray(COOKIE)
    for code, value in m.options.items():
        for i in range(0, max(len(value), 1), 255):        # long options split (RFC 3396)
            part = value[i:i + 255]
            opts += bytes([code, len(part)]) + part
    opts.append(OPT_END)
    out = head + bytes(opts)
    return out if len(out) >= 300 else out + bytes(300 - len(out))   # BOOTP's minimum


def decode(data: bytes) -> Message:
    if len(data) < HEADER.size + 4:
        raise BadMessage(f"{len(data)} bytes: shorter than a DHCP header ({HEADER.size + 4})")
    op, htype, hlen, _, xid, _, flags, ci, yi, si, gi, ch, _, _ = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise BadMessage(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if htype != 1 or hlen != 6:
        raise BadMessage(f"hardware type {htype}/length {hlen}: only Ethernet (1/6)")
    if data[HEADER.size:HEADER.size + 4] != COOKIE:
        raise BadMessage("no DHCP magic cookie (a plain BOOTP message)")
    options: dict[int, bytes] = {}
    i, end = HEADER.size + 4, len(data)
    while i < end:
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= end or i + 2 + data[i + 1] > end:
            raise BadMessage(f"option {code} at byte {i} runs past the end of the message")
        n = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + n]   # RFC 3396: concatenate
        i += 2 + n
    t = options.get(OPT_TYPE)
    if t is None or len(t) != 1 or t[0] not in TYPE_NAMES:
        raise BadMessage(f"message type option (53) missing or unknown: {t!r}")
    return Message(op, xid, flags, ci, yi, si, gi, ch[:6], options)


def mask_plen(mask: bytes) -> int:
    n = int.from_bytes(mask, "big")
    plen = bin(n).count("1")
    if n != (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF:
        raise BadMessage(f"subnet mask {wire.ip_str(mask)} is not contiguous")
    return plen


def plen_mask(plen: int) -> bytes:
    return ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF).to_bytes(4, "big")


# -- the client ------------------------------------------------------------------------------------
@dataclass
class Lease:
    addr: bytes
    plen: int
    server: bytes
    router: bytes | None
    dns: list[bytes]
    seconds: int
    t1: float                     # monotonic deadlines
    t2: float
    expiry: float
    renewals: int = 0

    def describe(self) -> dict[str, Any]:
        return {"address": f"{wire.ip_str(self.addr)}/{self.plen}",
                "server": wire.ip_str(self.server),
                "router": wire.ip_str(self.router) if self.router else None,
                "dns": [wire.ip_str(d) for d in self.dns], "lease_s": self.seconds,
                "renewals": self.renewals}


@dataclass
class Counts:
    sent: dict[str, int] = field(default_factory=dict)
    got: dict[str, int] = field(default_factory=dict)
    entered: dict[str, int] = field(default_factory=dict)      # state -> times entered
    ignored: int = 0


class DhcpClient:
    def __init__(self, stack: Any, hostname: str = "", log: Any = print) -> None:
        self.stack = stack
        self.mac: bytes = stack.mac
        self.hostname = hostname
        self.log = log
        self.rng = random.Random()
        self.sock = stack.udp(CLIENT_PORT)
        self.lease: Lease | None = None
        self.counts = Counts()
        self._state = "INIT"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        stack.on_stop.append(self.release)

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, s: str) -> None:
        self._state = s
        self.counts.entered[s] = self.counts.entered.get(s, 0) + 1

    # -- sending and receiving --------------------------------------------------------------
    def _send(self, kind: int, xid: int, dst: bytes, ciaddr: bytes = ZERO,
              extra: dict[int, bytes] | None = None) -> None:
        opts = {OPT_TYPE: bytes([kind]), OPT_CLIENT_ID: b"\x01" + self.mac}
        if kind in (DISCOVER, REQUEST):
            opts[OPT_PARAMS] = PARAMS
            if self.hostname:
                opts[OPT_HOSTNAME] = self.hostname.encode()[:63]
        opts.update(extra or {})
        flags = 0 if any(ciaddr) else FLAG_BROADCAST
        m = Message(BOOTREQUEST, xid, flags, ciaddr, ZERO, ZERO, ZERO, self.mac, opts)
        self.sock.sendto(encode(m), (wire.ip_str(dst), SERVER_PORT))
        name = TYPE_NAMES[kind]
        self.counts.sent[name] = self.counts.sent.get(name, 0) + 1

    def _answer(self, xid: int, kinds: tuple[int, ...], timeout: float) -> Message | None:
        """The first reply for `xid` and our MAC of one of `kinds` within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data, _ = self.sock.recvfrom(timeout=left)
            except TimeoutError:
                return None
            try:
                m = decode(data)
            except BadMessage:
                self.counts.ignored += 1
                continue
            if m.op != BOOTREPLY or m.xid != xid or m.chaddr != self.mac or m.kind not in kinds:
                self.counts.ignored += 1
                continue
            name = TYPE_NAMES[m.kind]
            self.counts.got[name] = self.counts.got.get(name, 0) + 1
            return m
        return None

    def _backoff(self, attempt: int) -> float:
        return min(RETRY_S * 2 ** min(attempt, 16), RETRY_MAX_S) * self.rng.uniform(0.9, 1.1)

    # -- INIT .. BOUND ----------------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> Lease:
        """DISCOVER, OFFER, REQUEST, ACK; the stack configured. TimeoutError if no lease
        within `timeout` seconds (None: keep trying)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            self.state = "INIT"
            xid = self.rng.getrandbits(32)
            offer = None
            attempt = 0
            while not self._stop.is_set():
                self._send(DISCOVER, xid, b"\xff" * 4)
                wait = self._backoff(attempt)
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                offer = self._answer(xid, (OFFER,), max(0.0, wait))
                if offer is not None or (deadline is not None and time.monotonic() >= deadline):
                    break
                attempt += 1
            if offer is None:
                if self._stop.is_set():
                    break
                raise TimeoutError(f"no DHCP offer within {timeout} s")
            server = offer.addr_opt(OPT_SERVER)
            if server is None or not any(offer.yiaddr):
                self.counts.ignored += 1
                continue
            self.state = "REQUESTING"
            for attempt in range(REQUEST_TRIES):
                self._send(REQUEST, xid, b"\xff" * 4, extra={OPT_REQUESTED: offer.yiaddr,
                                                             OPT_SERVER: server})
                ans = self._answer(xid, (ACK, NAK), self._backoff(attempt))
                if ans is None:
                    continue
                if ans.kind == NAK:
                    self.log(f"dhcp: NAK from {wire.ip_str(server)} "
                             f"({ans.options.get(OPT_MESSAGE, b'').decode(errors='replace')})")
                    break
                return self._bind(ans, time.monotonic())
        raise TimeoutError("the DHCP client was stopped")

    def _bind(self, ack: Message, t0: float) -> Lease:
        """An ACK: the lease's times from its options, then the stack configured."""
        secs = ack.int_opt(OPT_LEASE) or 3600
        secs = max(2, min(secs, 0xFFFFFFFE))
        t1 = ack.int_opt(OPT_T1) or secs // 2
        t2 = ack.int_opt(OPT_T2) or secs * 7 // 8
        t1, t2 = min(t1, t2, secs), min(t2, secs)
        mask = ack.addr_opt(OPT_SUBNET)
        try:
            plen = mask_plen(mask) if mask else 24
        except BadMessage:
            plen = 24
        dns = ack.options.get(OPT_DNS, b"")
        old = self.lease
        lease = Lease(ack.yiaddr, plen, ack.addr_opt(OPT_SERVER) or (old.server if old else ZERO),
                      ack.addr_opt(OPT_ROUTER), [dns[i:i + 4] for i in range(0, len(dns) - 3, 4)],
                      secs, t0 + t1, t0 + t2, t0 + secs,
                      renewals=(old.renewals + 1) if old and old.addr == ack.yiaddr else 0)
        changed = old is None or (old.addr, old.plen, old.router) != (lease.addr, lease.plen,
                                                                       lease.router)
        self.lease = lease
        self.state = "BOUND"
        if changed:
            self.stack.configure(f"{wire.ip_str(lease.addr)}/{lease.plen}",
                                 wire.ip_str(lease.router) if lease.router else None)
        return lease

    # -- BOUND .. RENEWING .. REBINDING -----------------------------------------------------
    def start(self) -> "DhcpClient":
        self._thread = threading.Thread(target=self._keep, name="dhcp-client", daemon=True)
        self._thread.start()
        return self

    def _keep(self) -> None:
        while not self._stop.is_set():
            lease = self.lease
            if lease is None:
                try:
                    self.acquire()
                    self._logged("bound")
                except TimeoutError:
                    return
                continue
            if self._stop.wait(max(0.0, lease.t1 - time.monotonic())):
                return
            if self._extend(lease):
                self._logged("renewed")
                continue
            if self._stop.is_set():
                return
            self.log(f"dhcp: the lease of {wire.ip_str(lease.addr)} ended (expired or NAKed); "
                     f"asking again")
            self.lease = None
            self.stack.configure("0.0.0.0/0")

    def _logged(self, what: str) -> None:
        assert self.lease is not None
        d = self.lease.describe()
        self.log(f"dhcp: {what} {d['address']} from {d['server']} (lease {d['lease_s']} s, "
                 f"router {d['router'] or '-'})")

    def _extend(self, lease: Lease) -> bool:
        """RENEWING (unicast to the server) until T2, then REBINDING (broadcast) until the
        lease expires: True once an ACK extended it."""
        xid = self.rng.getrandbits(32)
        for state, dst, until in (("RENEWING", lease.server, lease.t2),
                                  ("REBINDING", b"\xff" * 4, lease.expiry)):
            self.state = state
            while not self._stop.is_set():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._send(REQUEST, xid, dst, ciaddr=lease.addr)
                ans = self._answer(xid, (ACK, NAK), min(left, max(MIN_WAIT_S, left / 2)))
                if ans is None:
                    continue
                if ans.kind == ACK:
                    self._bind(ans, time.monotonic())
                    return True
                self.log(f"dhcp: NAK while {state.lower()}: the address is gone")
                self.stack.configure("0.0.0.0/0")
                return False
        return False

    def release(self) -> None:
        """DHCPRELEASE to the server (on stop; the pump is still running)."""
        self._stop.set()
        lease, self.lease = self.lease, None
        if lease is None:
            return
        self._send(RELEASE, self.rng.getrandbits(32), lease.server, ciaddr=lease.addr,
                   extra={OPT_SERVER: lease.server})
        self.stack.kick()
        deadline = time.monotonic() + 0.5
        while self.stack.out and time.monotonic() < deadline:   # sent before the pump ends
            time.sleep(0.01)
        time.sleep(0.02)

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "lease": self.lease.describe() if self.lease else None,
                "sent": self.counts.sent, "got": self.counts.got, "entered": self.counts.entered,
                "ignored": self.counts.ignored}
