"""Network configuration as Linux programs see it: the personality's interfaces, the socket
ioctls that read them, rtnetlink (NETLINK_ROUTE) and the /proc/net files.

Mechanism. The interfaces are computed afresh at every question from what the personality
has (`interfaces`): `lo` always (127.0.0.1/8, UP|LOOPBACK|RUNNING, mtu 65536) and, when the
image gives the personality a network (`px.net`: the started netstack `Stack` and its name,
"eth0"), that interface — the stack's MAC, address, netmask and broadcast, mtu 1500,
UP|BROADCAST|RUNNING|MULTICAST, and the frame counters the stack keeps. The routes are what
such a Linux would have: the subnet's link route and the default route through the gateway
in table main, the local and broadcast routes in table local (`routes`).

Two views of that one model here (a third, /proc/net, in procfs.py), each in the real
kernel's binary format (the layouts
of <linux/if.h>, <linux/sockios.h>, <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h>, <linux/if_addr.h>, x86-64):
- `ioctl`: SIOCGIF* on a socket descriptor (busybox ifconfig, hostname -i, ip's qlen):
  `struct ifreq` is 40 bytes (IFNAMSIZ name, a 24-byte union), `struct ifconf` 16 (an int
  length, a pointer at offset 8). The setting ones (SIOCSIF*, SIOCADDRT, SIOCDELRT, the ARP
  and multicast ones) answer EPERM: the interface is the image's, not the program's.
- `NetlinkSocket`: an AF_NETLINK socket (busybox ip addr/link/route/neigh). Requests are
  answered at once into the socket's queue: RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE and
  RTM_GETNEIGH dumps (NLM_F_DUMP) end with NLMSG_DONE; RTM_GETLINK of one interface answers
  one RTM_NEWLINK; anything that would change the configuration (RTM_NEW*/DEL*/SET*) is
  NLMSG_ERROR EPERM; other types NLMSG_ERROR EOPNOTSUPP; a header whose length does not fit
  the datagram, or a body shorter than its family header, NLMSG_ERROR EINVAL. Messages are
  4-byte aligned (NLMSG_ALIGN), each reply carries the request's sequence number and the
  socket's port id, and comes from the kernel (nl_pid 0), as busybox checks.
- /proc/net/{dev,route,arp,tcp,udp,unix,...}: procfs.py's `proc_net`, from `interfaces`
  and `routes` here and the stack's ARP table and sockets.

Contract: nothing a program passes raises here — a bad pointer is the memory helpers'
`Fault` (-EFAULT), every malformed structure an errno or an NLMSG_ERROR. The stack's
structures are read under its lock (its pump thread changes them).

Ownership: the personality's single serving thread (the stack's pump only through its lock).
"""
from __future__ import annotations

import errno
import struct
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .pipe import BLOCK
from .sockets import Socket

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
IFNAMSIZ = 16
IFREQ = 40                                    # sizeof(struct ifreq) on x86-64
IFF_UP, IFF_BROADCAST, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x2, 0x8, 0x40
IFF_MULTICAST, IFF_LOWER_UP = 0x1000, 0x10000
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
TXQUEUELEN = 1000
BOOT = time.monotonic()


class Iface(NamedTuple):
    ifindex: int
    name: str
    flags: int                  # IFF_* as netlink reports them (ifreq gets the low 16 bits)
    mtu: int
    hwtype: int                 # ARPHRD_*
    mac: bytes
    addr: bytes | None          # None: no IPv4 address (a stack still waiting for DHCP)
    plen: int
    mask: bytes
    bcast: bytes                # b"\0" * 4 where there is none (lo)
    stats: dict[str, int]       # rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped


class Route(NamedTuple):
    table: int                  # RT_TABLE_MAIN, RT_TABLE_LOCAL
    type: int                   # RTN_*
    dst: bytes
    plen: int
    gateway: bytes | None
    iface: Iface
    scope: int                  # RT_SCOPE_*
    protocol: int               # RTPROT_*
    prefsrc: bytes | None


def stack_of(px: Any) -> Any:
    """The started netstack Stack of the personality's interface (`px.net`), or None."""
    net = getattr(px, "net", None)
    return getattr(net, "stack", None) if net is not None else None


def _stack_stats(stack: Any) -> dict[str, int]:
    """The stack's counters as an interface's (it counts frames; bytes if it counts them)."""
    counts = dict(stack.counts)
    return {"rx_packets": counts.get("rx_frames", 0), "tx_packets": counts.get("tx_frames", 0),
            "rx_bytes": counts.get("rx_bytes", 0), "tx_bytes": counts.get("tx_bytes", 0),
            "rx_dropped": sum(v for k, v in counts.items() if k.startswith("drop_"))}


def interfaces(px: Any) -> list[Iface]:
    """lo, and the personality's network interface if it has one (module docstring)."""
    zero = {"rx_packets": 0, "tx_packets": 0, "rx_bytes": 0, "tx_bytes": 0, "rx_dropped": 0}
    out = [Iface(1, "lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_LOWER_UP, 65536,
                 ARPHRD_LOOPBACK, bytes(6), b"\x7f\0\0\x01", 8, b"\xff\0\0\0", bytes(4), zero)]
    stack = stack_of(px)
    if stack is not None:
        with stack.lock:
            configured = any(stack.addr)
            out.append(Iface(2, str(getattr(px.net, "name", "eth0")),
                             IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST | IFF_LOWER_UP,
                             1500, ARPHRD_ETHER, bytes(stack.mac),
                             bytes(stack.addr) if configured else None, stack.plen,
                             bytes(stack.mask), bytes(stack.bcast), _stack_stats(stack)))
    return out


RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST = 1, 2, 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTPROT_KERNEL, RTPROT_BOOT = 2, 3


def routes(px: Any) -> list[Route]:
    """Table main (the default route first, as /proc/net/route lists it), then table local."""
    ifaces = interfaces(px)
    main: list[Route] = []
    local: list[Route] = []
    stack = stack_of(px)
    gateway = bytes(stack.gateway) if stack is not None and stack.gateway else None
    for i in ifaces:
        if i.addr is None:
            continue
        net = bytes(a & m for a, m in zip(i.addr, i.mask))
        if i.hwtype != ARPHRD_LOOPBACK:
            if gateway is not None:
                main.insert(0, Route(RT_TABLE_MAIN, RTN_UNICAST, bytes(4), 0, gateway, i,
                                     RT_SCOPE_UNIVERSE, RTPROT_BOOT, None))
            main.append(Route(RT_TABLE_MAIN, RTN_UNICAST, net, i.plen, None, i, RT_SCOPE_LINK,
                              RTPROT_KERNEL, i.addr))
        else:
            local.append(Route(RT_TABLE_LOCAL, RTN_LOCAL, net, i.plen, None, i, RT_SCOPE_HOST,
                               RTPROT_KERNEL, i.addr))
        local.append(Route(RT_TABLE_LOCAL, RTN_LOCAL, i.addr, 32, None, i, RT_SCOPE_HOST,
                           RTPROT_KERNEL, i.addr))
        bcast = i.bcast if any(i.bcast) else bytes(n | (~m & 0xFF) for n, m in zip(net, i.mask))
        local.append(Route(RT_TABLE_LOCAL, RTN_BROADCAST, bcast, 32, None, i, RT_SCOPE_LINK,
                           RTPROT_KERNEL, i.addr))
    return main + local


# -- the socket ioctls ------------------------------------------------------------------------

SIOCGIFNAME, SIOCGIFCONF, SIOCGIFFLAGS, SIOCGIFADDR = 0x8910, 0x8912, 0x8913, 0x8915
SIOCGIFDSTADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK, SIOCGIFMETRIC = 0x8917, 0x8919, 0x891B, 0x891D
SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX, SIOCGIFTXQLEN = 0x8921, 0x8927, 0x8933, 0x8942
SIOCGIFMAP = 0x8970
FIONBIO, FIONREAD, TIOCOUTQ, O_NONBLOCK = 0x5421, 0x541B, 0x5411, 0o4000
# Every command that would change an interface, a route, the ARP table or a multicast list.
SETTING = frozenset({0x890B, 0x890C, 0x8911, 0x8914, 0x8916, 0x8918, 0x891A, 0x891C, 0x891E,
                     0x8920, 0x8922, 0x8923, 0x8924, 0x8926, 0x8930, 0x8931, 0x8932, 0x8934,
                     0x8936, 0x8937, 0x8941, 0x8943, 0x8953, 0x8955, 0x8960, 0x8962, 0x8971})


def _sockaddr_in(addr: bytes) -> bytes:
    return struct.pack("<H", AF_INET) + b"\0\0" + addr + bytes(8)


def ifreq_answer(ifaces: list[Iface], cmd: int, req: bytes) -> bytes | int:
    """The struct ifreq (40 bytes) a SIOCGIF* command `cmd` answers to `req`, or -errno.
    Pure: the caller reads and writes the process's memory."""
    if len(req) != IFREQ:
        return -errno.EFAULT
    if cmd == SIOCGIFNAME:
        (index,) = struct.unpack_from("<i", req, IFNAMSIZ)
        found = [i for i in ifaces if i.ifindex == index]
        if not found:
            return -errno.ENODEV
        return found[0].name.encode().ljust(IFNAMSIZ, b"\0") + req[IFNAMSIZ:]
    name = req[:IFNAMSIZ].split(b"\0", 1)[0]
    found = [i for i in ifaces if i.name.encode() == name]
    if not found:
        return -errno.ENODEV
    i = found[0]
    head = req[:IFNAMSIZ]
    if cmd == SIOCGIFFLAGS:
        body = struct.pack("<H", i.flags & 0xFFFF)
    elif cmd in (SIOCGIFADDR, SIOCGIFDSTADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK):
        if i.addr is None:
            return -errno.EADDRNOTAVAIL
        body = _sockaddr_in({SIOCGIFADDR: i.addr, SIOCGIFDSTADDR: i.addr,
                             SIOCGIFBRDADDR: i.bcast, SIOCGIFNETMASK: i.mask}[cmd])
    elif cmd == SIOCGIFHWADDR:
        body = struct.pack("<H", i.hwtype) + i.mac + bytes(8)
    elif cmd in (SIOCGIFMETRIC, SIOCGIFMTU, SIOCGIFINDEX, SIOCGIFTXQLEN):
        body = struct.pack("<i", {SIOCGIFMETRIC: 0, SIOCGIFMTU: i.mtu, SIOCGIFINDEX: i.ifindex,
                                  SIOCGIFTXQLEN: TXQUEUELEN}[cmd])
    elif cmd == SIOCGIFMAP:
        body = bytes(24)                      # struct ifmap: no memory, I/O port, IRQ or DMA
    else:
        return -errno.ENOTTY
    return head + body + req[IFNAMSIZ + len(body):]


def ifconf_entries(ifaces: list[Iface]) -> bytes:
    """SIOCGIFCONF's array: one struct ifreq (name, AF_INET address) per IPv4 address."""
    return b"".join(i.name.encode().ljust(IFNAMSIZ, b"\0") + _sockaddr_in(i.addr) + bytes(8)
                    for i in ifaces if i.addr is not None)


def ioctl(px: "Personality", p: "Process", f: Any, cmd: int, arg: int) -> Any:
    """An ioctl on a socket descriptor: the interface ones here, anything else the socket's
    own (`f.sock.ioctl`, if it has one), else ENOTTY as Linux answers an unknown one."""
    if cmd in SETTING:
        return -errno.EPERM
    if cmd == SIOCGIFCONF:
        length, buf = struct.unpack("<iiQ", px.read(p, arg, 16))[0::2]
        entries = ifconf_entries(interfaces(px))
        if buf:                               # whole entries that fit (NULL: the size needed)
            entries = entries[:max(0, length) // IFREQ * IFREQ]
            px.write(p, buf, entries)
        px.write(p, arg, struct.pack("<i", len(entries)))
        return 0
    if cmd in (SIOCGIFNAME, SIOCGIFFLAGS, SIOCGIFADDR, SIOCGIFDSTADDR, SIOCGIFBRDADDR,
               SIOCGIFNETMASK, SIOCGIFMETRIC, SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX,
               SIOCGIFTXQLEN, SIOCGIFMAP):
        got = ifreq_answer(interfaces(px), cmd, px.read(p, arg, IFREQ))
        if isinstance(got, int):
            return got
        px.write(p, arg, got)
        return 0
    if cmd in (FIONREAD, TIOCOUTQ):           # SIOCINQ: what a read would get now (a
        got = 0                               # datagram's length); SIOCOUTQ: all is sent
        sock = getattr(f, "sock", None)
        if cmd == FIONREAD and sock is not None:
            peek = sock.recvmsg(1 << 20, MSG_PEEK)
            got = len(peek[0]) if isinstance(peek, tuple) else 0
        px.write(p, arg, struct.pack("<i", got))
        return 0
    if cmd == FIONBIO:                        # any descriptor's, as Linux's do_vfs_ioctl
        (on,) = struct.unpack("<i", px.read(p, arg, 4))
        f.flags = f.flags | O_NONBLOCK if on else f.flags & ~O_NONBLOCK
        return 0
    own = getattr(getattr(f, "sock", None), "ioctl", None)
    return own(px, p, cmd, arg) if own is not None else -errno.ENOTTY


# -- rtnetlink ----------------------------------------------------------------------------------

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
MSG_PEEK = 0x2
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

