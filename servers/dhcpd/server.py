"""The DHCP server task: a pool (pool.py) served on UDP port 67 of its own stack.

    main(l4, pool=10.0.2.100-10.0.2.199/24, [router=A], [dns=A,B], [lease=600],
         [host=MAC,A ...], [report=S], netstack's ip=/gw=/cap=/mac=)

`pool` is the first and last address handed out and the prefix clients are told (option 1);
`router` (option 3) and `dns` (option 6) are passed on as given; `lease` is the lease time in
seconds (T1 = 1/2, T2 = 7/8 of it, options 58/59); each `host=MAC,A` reserves A for that MAC.
The server's own address comes from `ip=` or its ORe session (the image's net table), as for
any netstack task; it is kept out of the pool, and so is the router. Every argument is
checked before the stack opens: a mistake ends the task with the argument named.

Per message (check, then act: `decode` rejects what is not DHCP; a BOOTREPLY, a client MAC
that is zero or a group address, a REQUEST naming no address are dropped and counted):
  DISCOVER  -> OFFER of the client's address (pool.offer), broadcast
  REQUEST   with option 54 (SELECTING): ours -> ACK or NAK; another server's -> forget our offer
            with option 50 only (INIT-REBOOT), or ciaddr (RENEWING/REBINDING) -> ACK or NAK
  DECLINE   the address is kept out of the pool for a while;  RELEASE  the lease ends now
  INFORM    -> ACK with the options only, to ciaddr
A reply goes to the relay (giaddr:67) if there is one, else to ciaddr:68 if the client has an
address (not for a NAK), else broadcast. Each lease change prints a line, then "DHCPD {json}"
(counts and leases); `report=S` prints that line every S seconds as well.

Its protocol (protocol.py: leases, stats) is served on the task's main L4 thread, which the
stack's pump owns: the pump's link hands each request over (`Service.on_message`) and it is
answered there, NOT_READY until the stack is up.

Ownership: one Python thread (the task's main thread after the stack started) receives,
decides and answers DHCP; `DhcpServer.lock` orders it against the protocol's requests on the
pump thread, which only read.
"""
from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

from servers.netstack import dhcp, wire
from servers.netstack.dhcp import Message

from .pool import Pool, PoolError

NET_KEYS = {"ip", "gw", "cap", "mac"}
KEYS = {"pool", "router", "dns", "lease", "host", "report"} | NET_KEYS
Reply = tuple[bytes, tuple[str, int]]


def _ip(a: int) -> bytes:
    return a.to_bytes(4, "big")


def _int(a: bytes) -> int:
    return int.from_bytes(a, "big")


class DhcpServer:
    """The protocol over any stack (a task's, or two in-process stacks in tests)."""

    def __init__(self, stack: Any, pool: Pool, router: str | None = None,
                 dns: tuple[str, ...] = (), clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = print) -> None:
        self.stack, self.pool, self.clock, self.log = stack, pool, clock, log
        self.me = stack.addr
        self.router = wire.ip_bytes(router) if router else None
        self.dns = b"".join(wire.ip_bytes(d) for d in dns)
        for a in (self.me, self.router):
            if a is not None:
                pool.excluded.add(_int(a))
        self.counts: Counter[str] = Counter()
        self.last_bad = ""
        self.lock = threading.Lock()               # the pool and counts: serve vs. requests
        self.sock = stack.udp(dhcp.SERVER_PORT)

    # -- the loop ------------------------------------------------------------------------------
    def serve(self, until: Callable[[], bool] = lambda: False, report_s: float = 0.0) -> None:
        last = self.clock()
        while not until():
            try:
                data, _ = self.sock.recvfrom(timeout=1.0)
            except TimeoutError:
                data = b""
            with self.lock:
                try:
                    replies = self.handle(data) if data else []
                except Exception as e:             # noqa: BLE001 - a bug, not the client's
                    replies = self._bad(f"internal error {type(e).__name__}: {e}")
                    self.counts["errors"] += 1
                now = self.clock()
                self._expire(now)
            for out, dst in replies:
                self.sock.sendto(out, dst)
            if report_s and now - last >= report_s:
                last = now
                self.report()

    def handle(self, data: bytes) -> list[Reply]:
        """One datagram from port 67: the replies to send (none for what we drop)."""
        self.counts["rx"] += 1
        try:
            m = dhcp.decode(data)
        except dhcp.BadMessage as e:
            return self._bad(str(e))
        if m.op != dhcp.BOOTREQUEST:
            return self._bad("a BOOTREPLY sent to the server port")
        if not any(m.chaddr) or m.chaddr[0] & 1:
            return self._bad(f"client MAC {m.chaddr.hex(':')} is zero or a group address")
        kind = dhcp.TYPE_NAMES[m.kind]
        self.counts[f"rx_{kind}"] += 1
        handler = {dhcp.DISCOVER: self._discover, dhcp.REQUEST: self._request,
                   dhcp.DECLINE: self._decline, dhcp.RELEASE: self._release,
                   dhcp.INFORM: self._inform}.get(m.kind)
        if handler is None:
            return self._bad(f"{kind} is a server's message")
        return handler(m, self.clock())

    def _bad(self, why: str) -> list[Reply]:
        self.counts["bad"] += 1
        self.last_bad = why
        return []

    # -- the messages ----------------------------------------------------------------------------
    def _discover(self, m: Message, now: float) -> list[Reply]:
        req = m.addr_opt(dhcp.OPT_REQUESTED)
        addr = self.pool.offer(m.chaddr, _int(req) if req else None, now)
        if addr is None:
            self.counts["exhausted"] += 1
            self.log(f"dhcpd: no free address for {m.chaddr.hex(':')} (the pool is exhausted)")
            return []
        return [self._reply(m, dhcp.OFFER, _ip(addr), lease=True)]

    def _request(self, m: Message, now: float) -> list[Reply]:
        server = m.addr_opt(dhcp.OPT_SERVER)
        if server is not None and server != self.me:
            self.pool.release(m.chaddr, _int(m.addr_opt(dhcp.OPT_REQUESTED) or dhcp.ZERO), now)
            return []                              # the client chose another server
        want = m.addr_opt(dhcp.OPT_REQUESTED) or (m.ciaddr if any(m.ciaddr) else None)
        if want is None:
            return self._bad("a REQUEST naming no address (neither option 50 nor ciaddr)")
        got = self.pool.request(m.chaddr, _int(want), now)
        if isinstance(got, str):
            self.counts["nak"] += 1
            self.log(f"dhcpd: NAK {wire.ip_str(want)} to {m.chaddr.hex(':')}: {got}")
            return [self._reply(m, dhcp.NAK, dhcp.ZERO, message=got)]
        self.counts["ack"] += 1
        self.log(f"dhcpd: ACK {wire.ip_str(want)} to {m.chaddr.hex(':')} "
                 f"(lease {self.pool.lease_s} s)")
        self.report()
        return [self._reply(m, dhcp.ACK, want, lease=True)]

    def _decline(self, m: Message, now: float) -> list[Reply]:
        addr = m.addr_opt(dhcp.OPT_REQUESTED)
        if addr is not None:
            self.pool.decline(m.chaddr, _int(addr), now)
            self.log(f"dhcpd: {m.chaddr.hex(':')} declined {wire.ip_str(addr)} (in use)")
        return []

    def _release(self, m: Message, now: float) -> list[Reply]:
        if self.pool.release(m.chaddr, _int(m.ciaddr), now):
            self.log(f"dhcpd: {m.chaddr.hex(':')} released {wire.ip_str(m.ciaddr)}")
            self.report()
        return []

    def _inform(self, m: Message, now: float) -> list[Reply]:
        return [self._reply(m, dhcp.ACK, dhcp.ZERO)] if any(m.ciaddr) else []

    def _reply(self, m: Message, kind: int, yiaddr: bytes, lease: bool = False,
               message: str = "") -> Reply:
        opts: dict[int, bytes] = {dhcp.OPT_TYPE: bytes([kind]), dhcp.OPT_SERVER: self.me}
        if kind == dhcp.NAK:
            opts[dhcp.OPT_MESSAGE] = message.encode()[:200]
        else:
            if lease:
                s = self.pool.lease_s
                opts[dhcp.OPT_LEASE] = s.to_bytes(4, "big")
                opts[dhcp.OPT_T1] = (s // 2).to_bytes(4, "big")
                opts[dhcp.OPT_T2] = (s * 7 // 8).to_bytes(4, "big")
            opts[dhcp.OPT_SUBNET] = dhcp.plen_mask(self.pool.plen)
            if self.router:
                opts[dhcp.OPT_ROUTER] = self.router
            if self.dns:
                opts[dhcp.OPT_DNS] = self.dns
        out = Message(dhcp.BOOTREPLY, m.xid, m.flags, m.ciaddr if kind == dhcp.ACK else dhcp.ZERO,
                      yiaddr, dhcp.ZERO, m.giaddr, m.chaddr, opts)
        self.counts[f"tx_{dhcp.TYPE_NAMES[kind]}"] += 1
        if any(m.giaddr):
            return dhcp.encode(out), (wire.ip_str(m.giaddr), dhcp.SERVER_PORT)
        if any(m.ciaddr) and kind != dhcp.NAK:
            return dhcp.encode(out), (wire.ip_str(m.ciaddr), dhcp.CLIENT_PORT)
        return dhcp.encode(out), ("255.255.255.255", dhcp.CLIENT_PORT)

    def _expire(self, now: float) -> None:
        for lease in self.pool.by_mac.values():
            if lease.bound and lease.expiry <= now:
                lease.bound = False
                self.counts["expired"] += 1
                self.log(f"dhcpd: the lease of {ipaddress.IPv4Address(lease.addr)} "
                         f"({lease.mac.hex(':')}) expired")

    def describe(self) -> dict[str, Any]:
        return {"server": wire.ip_str(self.me), "counts": dict(self.counts),
                "last_bad": self.last_bad, "leases": self.pool.leases(self.clock())}

    def report(self) -> None:
        self.log("DHCPD " + json.dumps(self.describe()))



class Service:
    """The protocol on the task's main thread (protocol.py). Requests arrive while the stack's
    pump waits on that thread (its link hands them over, `on_message`) and are answered on
    the pump thread; until the server is up (its session open, its address known) they are
    answered NOT_READY."""

    def __init__(self, l4: Any) -> None:
        self.l4 = l4
        self.server: DhcpServer | None = None

    def _up(self) -> DhcpServer:
        from kernel.user.rpc import RpcError
        if self.server is None:
            raise RpcError("NOT_READY", "the server's stack is not up yet")
        return self.server

    def leases(self, call: Any) -> list[dict[str, Any]]:
        srv = self._up()
        with srv.lock:
            return srv.pool.leases(srv.clock())

    def stats(self, call: Any) -> dict[str, Any]:
        srv = self._up()
        with srv.lock:
            d = srv.describe()
        del d["leases"]
        p = srv.pool
        return {**d, "pool": f"{wire.ip_str(_ip(p.lo))}-{wire.ip_str(_ip(p.hi))}/{p.plen}",
                "lease_s": p.lease_s}

    def on_message(self, msg: Any) -> None:
        """Answered by the declared protocol; a caller that gave up is forgotten."""
        from kernel.abi import pack
        from kernel.user.errors import KernelGone, L4Error
        from kernel.user.rpc import ADMIN_LABEL, HANDLED, STATS_REQUEST, Status

        from .protocol import DHCPD
        items: list[list[int]] = []
        if msg.label == ADMIN_LABEL and msg.data == STATS_REQUEST:    # as the serve loop does
            data = pack([int(Status.OK), dict(HANDLED)])
        else:
            data, items = DHCPD.dispatch(self, msg, self.l4)
        if msg.reply:
            try:
                self.l4.reply(msg.reply, data, proto=DHCPD.tag, items=items)
            except KernelGone:
                raise
            except L4Error as e:
                print(f"dhcpd: reply refused: {e}", file=sys.stderr, flush=True)


# -- the task ------------------------------------------------------------------------------------
class ArgError(ValueError):
    """A task argument of the server is wrong (the image's fault)."""


def parse_args(args: tuple[str, ...] | list[str]) -> tuple[Pool, dict[str, Any], dict[str, str]]:
    """(pool, server options, netstack options), every argument checked."""
    opts: dict[str, str] = {}
    hosts: dict[bytes, str] = {}
    for a in args:
        key, eq, value = (s.strip() for s in a.partition("="))
        if not eq or key not in KEYS:
            raise ArgError(f"task argument {a!r}: expected key=value with a key among "
                           f"{', '.join(sorted(KEYS))}")
        if key == "host":
            mac, _, addr = value.partition(",")
            try:
                raw = bytes.fromhex(mac.replace(":", ""))
                ipaddress.IPv4Address(addr)
            except ValueError:
                raw = b""
            if len(raw) != 6:
                raise ArgError(f"task argument host={value}: expected host=MAC,ADDRESS "
                               f"(like host=02:00:00:00:00:50,10.0.2.80)")
            hosts[raw] = addr
            continue
        opts[key] = value
    if "pool" not in opts:
        raise ArgError("no pool: give the task pool=FIRST-LAST/PREFIX (like "
                       "pool=10.0.2.100-10.0.2.199/24)")
    rng, _, plen = opts["pool"].partition("/")
    first, _, last = rng.partition("-")
    try:
        lease_s = int(opts.get("lease", "600"))
        pool = Pool(first.strip(), last.strip(), int(plen or "24"), lease_s, hosts)
    except PoolError as e:
        raise ArgError(f"task argument pool={opts['pool']}: {e}") from None
    except ValueError as e:
        raise ArgError(f"task argument pool={opts['pool']} / lease={opts.get('lease')}: {e}") \
            from None
    for key in ("router",):
        if key in opts:
            try:
                wire.ip_bytes(opts[key])
            except ValueError as e:
                raise ArgError(f"task argument {key}={opts[key]}: {e}") from None
    dns = tuple(d for d in opts.get("dns", "").split(",") if d)
    for d in dns:
        try:
            wire.ip_bytes(d)
        except ValueError as e:
            raise ArgError(f"task argument dns={opts['dns']}: {e}") from None
    try:
        report = float(opts.get("report", "0"))
    except ValueError:
        raise ArgError(f"task argument report={opts['report']}: expected seconds") from None
    srv = {"router": opts.get("router"), "dns": dns, "report": report}
    return pool, srv, {k: v for k, v in opts.items() if k in NET_KEYS}


def main(l4: Any, *args: str) -> int:
    from servers.netstack import config
    try:
        pool, srv, net = parse_args(args)
    except ArgError as e:
        print(f"dhcpd: {e}", file=sys.stderr, flush=True)
        return 2
    service = Service(l4)
    stack = config.open_stack(l4, net, "dhcpd", on_message=service.on_message)
    server = DhcpServer(stack, pool, srv["router"], srv["dns"],
                        log=lambda line: print(line, flush=True))
    service.server = server
    print(f"dhcpd: serving {wire.ip_str(_ip(pool.lo))}-{wire.ip_str(_ip(pool.hi))}/{pool.plen} "
          f"from {wire.ip_str(stack.addr)} (router {srv['router'] or '-'}, lease "
          f"{pool.lease_s} s)", flush=True)
    server.serve(report_s=srv["report"])
    return 0
