"""Network configuration as Linux programs see it: the personality's interfaces and routes,
and the socket ioctls that read them (rtnetlink in rtnetlink.py, /proc/net in procfs.py).

Mechanism. The interfaces are computed afresh at every question from what the personality
has (`interfaces`): `lo` always (127.0.0.1/8, UP|LOOPBACK|RUNNING, mtu 65536) and, when the
image gives the personality a network (`px.net`: the started netstack `Stack` and its name,
"eth0"), that interface — the stack's MAC, address, netmask and broadcast, mtu 1500,
UP|BROADCAST|RUNNING|MULTICAST, and the frame counters the stack keeps. The routes are what
such a Linux would have: the subnet's link route and the default route through the gateway
in table main, the local and broadcast routes in table local (`routes`).

Three views of that one model, each in the real kernel's format (the layouts
of <linux/if.h>, <linux/sockios.h>, <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h>, <linux/if_addr.h>, x86-64):
- `ioctl`: SIOCGIF* on a socket descriptor (busybox ifconfig, ip's qlen), and FIONBIO,
  FIONREAD, TIOCOUTQ of any socket:
  `struct ifreq` is 40 bytes (IFNAMSIZ name, a 24-byte union), `struct ifconf` 16 (an int
  length, a pointer at offset 8). The setting ones (SIOCSIF*, SIOCADDRT, SIOCDELRT, the ARP
  and multicast ones) answer EPERM: the interface is the image's, not the program's.
- `NetlinkSocket` (rtnetlink.py, re-exported here): an AF_NETLINK socket, NETLINK_ROUTE's
  link, address, route and neighbour dumps of this model (busybox ip).
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
MSG_PEEK = 0x2
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


def __getattr__(name: str) -> Any:
    """`netconf.NetlinkSocket`, where socket(2) looks for it (netcalls.py), from rtnetlink.py
    (imported on first use: rtnetlink imports this module)."""
    if name == "NetlinkSocket":
        from .rtnetlink import NetlinkSocket
        return NetlinkSocket
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
