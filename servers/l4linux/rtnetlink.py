"""rtnetlink: AF_NETLINK sockets of protocol NETLINK_ROUTE, answering from netconf.py's model.

Mechanism. A request is answered at once into the socket's queue (`NetlinkSocket.sendmsg`),
read back by recvmsg as the kernel's datagrams (from nl_pid 0): RTM_GETLINK, RTM_GETADDR,
RTM_GETROUTE and RTM_GETNEIGH dumps (NLM_F_DUMP; attributes IFLA_IFNAME/ADDRESS/BROADCAST/
MTU/OPERSTATE/STATS64..., IFA_ADDRESS/LOCAL/LABEL/BROADCAST/CACHEINFO, RTA_DST/GATEWAY/OIF/
PREFSRC/TABLE, NDA_DST/LLADDR) end with NLMSG_DONE; RTM_GETLINK of one interface answers one
RTM_NEWLINK, RTM_GETROUTE of one destination the route it takes (`ip route get`). Anything
that would change the configuration (RTM_NEW*/DEL*/SET*) is NLMSG_ERROR EPERM — the
interface is the image's; other types EOPNOTSUPP; a header whose length does not fit the
datagram, or a body shorter than its family header, EINVAL (Linux drops those silently: an
answer is easier to debug). Formats are <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h>, <linux/if_addr.h>: 4-byte alignment (NLMSG_ALIGN, RTA_ALIGN), each reply
with the request's sequence number and the socket's port id, as busybox checks.

Contract: the Socket protocol (sockets.py): nothing a program sends raises; recvmsg answers
whole datagrams or BLOCK; bind/connect/getsockname speak struct sockaddr_nl (12 bytes).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import struct
import time
from typing import Any

from .netconf import (AF_INET, AF_NETLINK, BOOT, IFF_BROADCAST, IFF_LOOPBACK,
                      MSG_PEEK, RT_SCOPE_HOST, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTN_LOCAL,
                      RTN_UNICAST, TXQUEUELEN, Iface, Route, interfaces, routes, stack_of)
from .pipe import BLOCK
from .sockets import Socket

__all__ = ["BLOCK", "NetlinkSocket"]

NLMSG_HDR = struct.Struct("<IHHII")           # len, type, flags, seq, pid
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_MIN_TYPE = 1, 2, 3, 0x10
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_CAPPED = 0x100
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
RTM_NEWROUTE, RTM_GETROUTE, RTM_NEWNEIGH, RTM_GETNEIGH = 24, 26, 28, 30
RTM_MAX = 127                                 # types above every rtnetlink family's
NETLINK_ROUTE = 0
SOCK_RAW = 3
SOL_NETLINK = 270
POLLIN, POLLOUT = 0x1, 0x4
SOCKADDR_NL = struct.Struct("<HHII")          # family, pad, nl_pid, nl_groups: 12 bytes
CHUNK = 4096                                  # a dump's datagrams hold up to this much
IFLA_ADDRESS, IFLA_BROADCAST, IFLA_IFNAME, IFLA_MTU, IFLA_QDISC = 1, 2, 3, 4, 6
IFLA_STATS, IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_LINKMODE, IFLA_STATS64 = 7, 13, 16, 17, 23
IFLA_GROUP, IFLA_PROMISCUITY, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 27, 30, 31, 32
IFLA_CARRIER = 33
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 4, 6, 8
IFA_F_PERMANENT = 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
NDA_DST, NDA_LLADDR, NUD_REACHABLE = 1, 2, 0x02
RTM_F_CLONED = 0x200
INFINITY = 0xFFFFFFFF


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    """One struct rtattr (length, type) and its data, padded to RTA_ALIGNTO."""
    raw = struct.pack("<HH", 4 + len(data), kind) + data
    return raw + bytes(_align(len(raw)) - len(raw))


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("<I", v))


def message(kind: int, flags: int, seq: int, pid: int, body: bytes) -> bytes:
    """One netlink message: header, body, padding to NLMSG_ALIGNTO (4)."""
    raw = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, pid) + body
    return raw + bytes(_align(len(raw)) - len(raw))


def link_body(i: Iface) -> bytes:
    """struct ifinfomsg (family, type, index, flags, change) and the IFLA_* attributes."""
    s = i.stats
    stats = [s["rx_packets"], s["tx_packets"], s["rx_bytes"], s["tx_bytes"], 0, 0,
             s["rx_dropped"], 0] + [0] * 16
    bcast = b"\xff" * 6 if i.flags & IFF_BROADCAST else bytes(6)
    return (struct.pack("<BxHiII", 0, i.hwtype, i.ifindex, i.flags, 0)
            + _attr(IFLA_IFNAME, i.name.encode() + b"\0") + _u32(IFLA_TXQLEN, TXQUEUELEN)
            + _attr(IFLA_OPERSTATE, bytes([IF_OPER_UNKNOWN if i.flags & IFF_LOOPBACK
                                           else IF_OPER_UP]))
            + _attr(IFLA_LINKMODE, b"\0") + _u32(IFLA_MTU, i.mtu) + _u32(IFLA_GROUP, 0)
            + _u32(IFLA_PROMISCUITY, 0) + _u32(IFLA_NUM_TX_QUEUES, 1)
            + _u32(IFLA_NUM_RX_QUEUES, 1) + _attr(IFLA_CARRIER, b"\x01")
            + _attr(IFLA_QDISC, b"noqueue\0" if i.flags & IFF_LOOPBACK else b"pfifo_fast\0")
            + _attr(IFLA_ADDRESS, i.mac) + _attr(IFLA_BROADCAST, bcast)
            + _attr(IFLA_STATS64, struct.pack("<24Q", *stats))
            + _attr(IFLA_STATS, struct.pack("<24I", *(v & INFINITY for v in stats))))


def addr_body(i: Iface) -> bytes:
    """struct ifaddrmsg (family, prefixlen, flags, scope, index) and the IFA_* attributes."""
    assert i.addr is not None
    scope = RT_SCOPE_HOST if i.flags & IFF_LOOPBACK else RT_SCOPE_UNIVERSE
    stamp = int((time.monotonic() - BOOT) * 100) & INFINITY
    out = (struct.pack("<BBBBI", AF_INET, i.plen, IFA_F_PERMANENT, scope, i.ifindex)
           + _attr(IFA_ADDRESS, i.addr) + _attr(IFA_LOCAL, i.addr))
    if any(i.bcast):
        out += _attr(IFA_BROADCAST, i.bcast)
    return (out + _attr(IFA_LABEL, i.name.encode() + b"\0") + _u32(IFA_FLAGS, IFA_F_PERMANENT)
            + _attr(IFA_CACHEINFO, struct.pack("<IIII", INFINITY, INFINITY, stamp, stamp)))


def route_body(r: Route) -> bytes:
    """struct rtmsg (family, dst_len, src_len, tos, table, protocol, scope, type, flags)
    and the RTA_* attributes."""
    out = struct.pack("<BBBBBBBBI", AF_INET, r.plen, 0, 0, r.table, r.protocol, r.scope,
                      r.type, 0) + _u32(RTA_TABLE, r.table)
    if r.plen:
        out += _attr(RTA_DST, r.dst)
    if r.prefsrc is not None:
        out += _attr(RTA_PREFSRC, r.prefsrc)
    if r.gateway is not None:
        out += _attr(RTA_GATEWAY, r.gateway)
    return out + _u32(RTA_OIF, r.iface.ifindex)


def route_get(px: Any, body: bytes) -> bytes | int:
    """RTM_GETROUTE of one destination (`ip route get`): the route a packet to RTA_DST
    takes — one of our addresses is local (through lo), else the longest prefix of table
    main — as Linux answers it (RTM_F_CLONED, table main for both: busybox prints the table
    of any other), or -errno."""
    if len(body) < 12:                        # struct rtmsg
        return -errno.EINVAL
    dst = _find_attr(body[12:], RTA_DST)
    if dst is None or len(dst) != 4:
        return -errno.EINVAL
    ifaces = interfaces(px)
    own = [i for i in ifaces if i.addr == dst]
    if own or dst[0] == 127:
        lo = ifaces[0]
        return (struct.pack("<BBBBBBBBI", AF_INET, 32, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_HOST,
                            RTN_LOCAL, RTM_F_CLONED) + _u32(RTA_TABLE, RT_TABLE_MAIN)
                + _attr(RTA_DST, dst) + _u32(RTA_OIF, lo.ifindex)
                + _attr(RTA_PREFSRC, own[0].addr if own and own[0].addr else lo.addr or dst))
    best = None
    for r in routes(px):
        mask = (0xFFFFFFFF << (32 - r.plen)) & 0xFFFFFFFF
        if r.table == RT_TABLE_MAIN and int.from_bytes(dst, "big") & mask == \
                int.from_bytes(r.dst, "big") and (best is None or r.plen > best.plen):
            best = r
    if best is None:
        return -errno.ENETUNREACH
    out = struct.pack("<BBBBBBBBI", AF_INET, 32, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_UNIVERSE,
                      RTN_UNICAST, RTM_F_CLONED) + _u32(RTA_TABLE, RT_TABLE_MAIN) \
        + _attr(RTA_DST, dst) + _u32(RTA_OIF, best.iface.ifindex)
    if best.iface.addr is not None:
        out += _attr(RTA_PREFSRC, best.iface.addr)
    return out + (_attr(RTA_GATEWAY, best.gateway) if best.gateway is not None else b"")


def neigh_bodies(px: Any) -> list[bytes]:
    """struct ndmsg (family, ifindex, state, flags, type) per ARP entry of the stack."""
    stack = stack_of(px)
    if stack is None:
        return []
    with stack.lock:
        arp = [(bytes(ip), bytes(mac)) for ip, (mac, _) in stack.arp.items()]
    return [struct.pack("<BxxxiHBB", AF_INET, 2, NUD_REACHABLE, 0, RTN_UNICAST)
            + _attr(NDA_DST, ip) + _attr(NDA_LLADDR, mac) for ip, mac in arp]


class NetlinkSocket(Socket):
    """An AF_NETLINK socket (module docstring): requests answered at once into `queue`."""

    _ports: dict[int, "NetlinkSocket"] = {}   # bound port ids of this personality's sockets
    _rover = -4096                            # Linux's next autobind id after the first

    def __init__(self, px: Any, type: int, protocol: int) -> None:
        super().__init__(AF_NETLINK, type & 0xF, protocol)
        self.px = px
        self.port = 0                         # nl_pid: 0 until bound
        self.groups = 0
        self.peer = (0, 0)                    # connect(): the default destination
        self.queue: list[bytes] = []          # datagrams to read, oldest first

    # -- addresses ----------------------------------------------------------------------------
    def _autobind(self) -> None:
        if self.port:
            return
        first = int(getattr(self.px, "tid", 0) or 0)     # the caller's tid: its pid, at first
        if first > 0 and first not in self._ports:
            self.port = first
        else:
            while NetlinkSocket._rover in self._ports:
                NetlinkSocket._rover -= 1
            self.port = NetlinkSocket._rover
            NetlinkSocket._rover -= 1
        self._ports[self.port] = self

    @staticmethod
    def _parse(addr: bytes) -> tuple[int, int] | int:
        if len(addr) < SOCKADDR_NL.size:
            return -errno.EINVAL
        family, _, pid, groups = SOCKADDR_NL.unpack_from(addr)
        return (pid, groups) if family == AF_NETLINK else -errno.EINVAL

    def bind(self, addr: bytes) -> int:
        got = self._parse(addr)
        if isinstance(got, int):
            return got
        pid, groups = got
        if self.port and pid and pid != self.port:
            return -errno.EINVAL
        if pid and not self.port:
            if pid in self._ports:
                return -errno.EADDRINUSE
            self.port = pid
            self._ports[pid] = self
        self._autobind()
        self.groups = groups                  # subscribed; no notification is ever sent
        return 0

    def connect(self, addr: bytes) -> int:
        got = self._parse(addr)
        if isinstance(got, int):
            return got
        self.peer = got
        self._autobind()
        return 0

    def getsockname(self) -> bytes:
        return SOCKADDR_NL.pack(AF_NETLINK, 0, self.port & INFINITY, self.groups)

    def getpeername(self) -> bytes:
        return SOCKADDR_NL.pack(AF_NETLINK, 0, self.peer[0] & INFINITY, self.peer[1])

    # -- messages -----------------------------------------------------------------------------
    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> int:
        dest = self.peer if addr is None else self._parse(addr)
        if isinstance(dest, int):
            return dest
        if dest[0] != 0:
            return -errno.ECONNREFUSED        # only the kernel (nl_pid 0) listens here
        self._autobind()
        out: list[bytes] = []
        pos = 0
        while len(data) - pos >= NLMSG_HDR.size:
            length, kind, mflags, seq, _ = NLMSG_HDR.unpack_from(data, pos)
            if length < NLMSG_HDR.size or length > len(data) - pos:
                out.append(self._error(-errno.EINVAL, data[pos:pos + NLMSG_HDR.size], seq))
                break
            out += self._request(kind, mflags, seq, data[pos:pos + length])
            pos += _align(length)
        self._queue(out)
        return len(data)

    def _queue(self, messages: list[bytes]) -> None:
        datagram = b""
        for m in messages:
            if datagram and len(datagram) + len(m) > CHUNK:
                self.queue.append(datagram)
                datagram = b""
            datagram += m
        if datagram:
            self.queue.append(datagram)

    def _error(self, code: int, request: bytes, seq: int) -> bytes:
        """NLMSG_ERROR: struct nlmsgerr (the error, then the request's header — the whole
        request for an error, only the header for an ACK, as Linux without NLM_F_CAPPED)."""
        echo = request[:NLMSG_HDR.size] if code == 0 else request
        return message(NLMSG_ERROR, 0 if code else NLM_F_CAPPED, seq, self.port,
                       struct.pack("<i", code) + echo.ljust(NLMSG_HDR.size, b"\0"))

    def _request(self, kind: int, flags: int, seq: int, req: bytes) -> list[bytes]:
        if not flags & NLM_F_REQUEST or kind < NLMSG_MIN_TYPE:
            return [self._error(0, req, seq)] if flags & NLM_F_ACK else []
        if self.protocol != NETLINK_ROUTE or kind > RTM_MAX:
            return [self._error(-errno.EOPNOTSUPP, req, seq)]
        body = req[NLMSG_HDR.size:]
        op = (kind - RTM_NEWLINK) % 4         # each family: NEW, DEL, GET, SET
        if op != 2:
            return [self._error(-errno.EPERM, req, seq)]
        if flags & NLM_F_DUMP:                # NLM_F_ROOT or NLM_F_MATCH, as Linux tests
            if len(body) < 1:                 # struct rtgenmsg: the family
                return [self._error(-errno.EINVAL, req, seq)]
            bodies = self._dump(kind, body[0])
            if bodies is None:
                return [self._error(-errno.EOPNOTSUPP, req, seq)]
            return [message(kind - 2, NLM_F_MULTI, seq, self.port, b) for b in bodies] + \
                [message(NLMSG_DONE, NLM_F_MULTI, seq, self.port, struct.pack("<i", 0))]
        if kind == RTM_GETROUTE:
            got = route_get(self.px, body)
            if isinstance(got, int):
                return [self._error(got, req, seq)]
            return [message(RTM_NEWROUTE, 0, seq, self.port, got)] + \
                ([self._error(0, req, seq)] if flags & NLM_F_ACK else [])
        if kind != RTM_GETLINK:
            return [self._error(-errno.EOPNOTSUPP, req, seq)]
        if len(body) < 16:                    # struct ifinfomsg
            return [self._error(-errno.EINVAL, req, seq)]
        (index,) = struct.unpack_from("<i", body, 4)
        name = _find_attr(body[16:], IFLA_IFNAME)
        found = [i for i in interfaces(self.px)
                 if (index and i.ifindex == index)
                 or (not index and name is not None and i.name.encode() == name.rstrip(b"\0"))]
        if not found:
            return [self._error(-errno.ENODEV if index or name else -errno.EINVAL, req, seq)]
        out = [message(RTM_NEWLINK, 0, seq, self.port, link_body(found[0]))]
        return out + ([self._error(0, req, seq)] if flags & NLM_F_ACK else [])

    def _dump(self, kind: int, family: int) -> list[bytes] | None:
        ifaces = interfaces(self.px)
        inet = family in (0, AF_INET)
        if kind == RTM_GETLINK:
            return [link_body(i) for i in ifaces]
        if kind == RTM_GETADDR:
            return [addr_body(i) for i in ifaces if i.addr is not None] if inet else []
        if kind == RTM_GETROUTE:
            return [route_body(r) for r in routes(self.px)] if inet else []
        if kind == RTM_GETNEIGH:
            return neigh_bodies(self.px) if inet else []
        return None

    def recvmsg(self, n: int, flags: int) -> Any:
        """The oldest datagram whole (the caller truncates it to the buffer and reports
        MSG_TRUNC), from the kernel's address; BLOCK while there is none."""
        if not self.queue:
            return BLOCK
        datagram = self.queue[0] if flags & MSG_PEEK else self.queue.pop(0)
        return datagram, SOCKADDR_NL.pack(AF_NETLINK, 0, 0, 0)

    def poll(self, events: int) -> int:
        return POLLOUT | (POLLIN if self.queue else 0)

    # -- the rest of the socket calls -----------------------------------------------------
    def shutdown(self, how: int) -> int:
        return -errno.EOPNOTSUPP              # Linux's netlink has none (sock_no_shutdown)

    def setsockopt(self, level: int, name: int, value: bytes) -> int:
        if level == SOL_NETLINK:              # memberships, extended ACKs, strict checks:
            return 0 if 1 <= name <= 12 else -errno.ENOPROTOOPT   # taken, changing nothing
        return super().setsockopt(level, name, value)

    def getsockopt(self, level: int, name: int, size: int) -> bytes | int:
        if level == SOL_NETLINK:
            return struct.pack("<i", 0) if 1 <= name <= 12 else -errno.ENOPROTOOPT
        return super().getsockopt(level, name, size)

    def close(self) -> None:
        if self._ports.get(self.port) is self:
            del self._ports[self.port]
        self.queue.clear()


def _find_attr(attrs: bytes, kind: int) -> bytes | None:
    """The data of the first attribute `kind` in a run of struct rtattr, None if absent or
    the run is malformed there."""
    pos = 0
    while len(attrs) - pos >= 4:
        length, k = struct.unpack_from("<HH", attrs, pos)
        if length < 4 or length > len(attrs) - pos:
            return None
        if k == kind:
            return attrs[pos + 4:pos + length]
        pos += _align(length)
    return None

