"""AF_INET sockets of Linux processes: TCP, UDP and ICMP echo, over the personality's IP
stack (servers/netstack) and, for its own addresses, inside the personality.

Mechanism.
- The interface (`Interface`, `px.net`): the netstack `Stack` on the personality's ORe
  session (eth0), started at boot (server.py `start_net`). Its pump thread owns the link;
  every change a socket may wait for (a segment, an ACK that made room, a connection, a
  datagram) makes the pump call our watcher, which triggers the personality's wake IRQ —
  at most one trigger in flight (`pending`, cleared by the serving thread when the IRQ
  arrives, before it retries the waiting calls). The trigger goes through an L4 thread of
  its own, used by the pump only.
- The sockets read the stack's state without waiting (Tcb states, rcvbuf, sndbuf room, a
  Listener's ready queue, our own datagram queues) under the stack's lock, and answer
  BLOCK when a blocking call would wait.
- Loopback: 127.0.0.0/8 and the interface's own address are served here, without frames:
  a connect to a port one of our sockets listens on joins the two ends through two `Buf`s
  (sockets.py), as AF_UNIX streams are; a datagram goes straight into the bound socket's
  queue; an echo request is answered at once. So loopback works with no interface at all.
- Ports (`InetSpace`): our TCP listeners and bound sockets, UDP and ICMP sockets by port
  (for ICMP, SOCK_DGRAM's echo identifier). A port is in use if one of our sockets holds
  it, or — without SO_REUSEADDR — a connection of the stack still has it (TIME_WAIT).
- Errors as Linux: a RST to our SYN is ECONNREFUSED, a RST later ECONNRESET, a connection
  whose retransmissions all went unanswered ETIMEDOUT; a close with unread data resets
  the connection (RST), else it sends FIN and the stack finishes it in the background.
Not served: IP options, multicast, MSG_OOB, MSG_WAITALL's wait (partial reads are answered).

Ownership: the personality's serving thread calls the sockets; the stack's fields are
read and changed only under `stack.lock`. `Interface.watch` runs on the pump thread.
"""
from __future__ import annotations

import errno
import random
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from servers.netstack import tcp, wire

from .pipe import BLOCK
from .sockets import (AF_INET, MSG_PEEK, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP,
                      SHUT_RD, SHUT_RDWR, SHUT_WR, SO_LINGER, SO_REUSEADDR,
                      SOCK_DGRAM, SOCK_RAW, SOCK_STREAM, Buf, Socket, local_pair, stream_poll,
                      stream_recv, stream_send)

if TYPE_CHECKING:
    from servers.netstack import Stack

    from .inetdgram import IcmpSock, UdpSock

    from .server import Personality

IPPROTO_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 0, 1, 6, 17
TCP_NODELAY, TCP_MAXSEG = 1, 2
ANY = bytes(4)
EPHEMERAL = (32768, 60999)          # Linux's ip_local_port_range
UDP_QUEUE = 256
MAX_UDP = 65507
MAX_FRAME_UDP = 1472                # no fragments: one datagram, one frame
Addr = tuple[bytes, int]


def sockaddr(ip: bytes, port: int) -> bytes:
    return struct.pack("<H", AF_INET) + struct.pack("!H", port) + ip + bytes(8)


def parse(addr: bytes) -> Addr | int:
    if len(addr) < 16:
        return -errno.EINVAL
    fam = struct.unpack_from("<H", addr)[0]
    if fam != AF_INET:
        return -errno.EAFNOSUPPORT
    return addr[4:8], struct.unpack_from("!H", addr, 2)[0]


def _error(e: BaseException | None) -> int:
    if isinstance(e, ConnectionRefusedError):
        return errno.ECONNREFUSED
    if isinstance(e, TimeoutError):
        return errno.ETIMEDOUT
    return errno.ECONNRESET if e is not None else errno.EPIPE


class Interface:
    """eth0: the stack over the personality's ORe session, and its wake path."""

    name = "eth0"

    def __init__(self, stack: "Stack", waker: Any, irq: int) -> None:
        self.stack, self.waker, self.irq = stack, waker, irq
        self.pending = False
        self.wakes = 0
        stack.watchers.append(self.watch)

    def watch(self) -> None:
        """Pump thread: wake the personality (one trigger in flight)."""
        if self.pending:
            return
        self.pending = True
        self.wakes += 1
        try:
            self.waker.irq_trigger(self.irq)
        except Exception:
            self.pending = False                     # shutting down


def start_interface(px: "Personality", opts: dict[str, str], label: int) -> Interface:
    """eth0: the IP stack on the personality's ORe session (capability `cap`, default
    "net"), its address from `ip` (else the session's) or `dhcp`, gateway `gw`. The link
    waits on an L4 thread of its own (NicLink attaches the session's signal to the thread
    it is given: never the main thread, which waits for Linux calls); the pump wakes the
    main thread through an IRQ attached to it with `label`, triggered from a third thread."""
    import sys

    from kernel.abi import SLOT_THREAD
    from kernel.user.client import L4
    from servers.netstack import config as netconfig
    from servers.netstack.link import NicLink
    from servers.netstack.stack import Stack
    l4 = px.l4
    cap = opts.get("cap") or "net"
    if cap not in l4.caps:
        raise ValueError(f"--net needs a capability {cap!r} (the image's [linux] net table "
                         f"gives it); have {sorted(l4.caps)}")
    t = l4.create_thread()
    own = L4(l4.kernel_sock, t.secret, l4.caps, l4.ctx, l4.server_key)
    link = NicLink(own, l4.caps[cap], thread=t.slot, vm=px.memory())   # its faults: over own
    name = "l4linux-eth0"
    if "dhcp" in opts:
        stack = netconfig._dhcp_stack(link, opts, name)
    else:
        address = opts.get("ip") or str(link.info.get("ip") or "")
        if not address:
            raise ValueError("--net: no address (give ip=A.B.C.D/N, or the session's)")
        stack = Stack(link, address, gateway=opts.get("gw") or link.info.get("gateway")
                      or None, name=name)
    irq = l4.create_irq()
    l4.irq_attach(irq, SLOT_THREAD, label)
    net = Interface(stack, l4.spawn_thread(), irq)
    if not stack.running:
        stack.start()
    print(f"[l4linux] eth0: {wire.ip_str(stack.addr)}/{stack.plen} on session "
          f"{link.nic.sid} (MAC {stack.mac.hex(':')}), gateway "
          f"{wire.ip_str(stack.gateway) if stack.gateway else '-'}", file=sys.stderr, flush=True)
    return net


class InetSpace:
    """The ports of the personality's AF_INET sockets, and its addresses."""

    def __init__(self, px: "Personality") -> None:
        self.px = px
        self.tcp: dict[int, "TcpSock"] = {}          # bound or listening, by port
        self.udp: dict[int, "UdpSock"] = {}
        self.icmp: dict[int, "IcmpSock"] = {}        # SOCK_DGRAM by identifier; raw by id()

    @property
    def stack(self) -> "Stack | None":
        net = self.px.net
        return net.stack if net is not None else None

    def local(self, ip: bytes) -> bool:
        st = self.stack
        return ip[0] == 127 or ip == ANY or (st is not None and ip == st.addr)

    def our_addr(self) -> bytes:
        st = self.stack
        return st.addr if st is not None else b"\x7f\0\0\x01"

    def free(self, table: dict[int, Any]) -> int:
        st = self.stack
        for _ in range(1000):
            port = random.randint(*EPHEMERAL)
            if port in table or (st is not None and (
                    port in st.udp_socks or port in st.listeners
                    or any(k[0] == port for k in st.tcbs))):
                continue
            return port
        return 0

    def tcp_in_use(self, port: int, reuse: bool) -> bool:
        if port in self.tcp:
            return True
        st = self.stack
        if st is None:
            return False
        with st.lock:
            if port in st.listeners:
                return True
            return not reuse and any(k[0] == port for k in st.tcbs)

    def deliver_icmp(self, ip: wire.Ip4) -> None:
        """An ICMP message for our sockets (pump thread, or ours for loopback)."""
        for s in list(self.icmp.values()):
            s.deliver_icmp(ip)


class InetSocket(Socket):
    def __init__(self, px: "Personality", type_: int, protocol: int) -> None:
        super().__init__(AF_INET, type_, protocol)
        self.space: InetSpace = px.inet
        self.laddr = ANY
        self.port = 0
        self.ipopts: dict[tuple[int, int], bytes] = {}

    def _lock(self) -> Any:
        st = self.space.stack
        return st.lock if st is not None else _NoLock

    def setsockopt(self, level: int, name: int, value: bytes) -> int:
        if level in (IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP):
            if len(value) < 1:
                return -errno.EINVAL
            self.ipopts[(level, name)] = value[:64]
            return 0
        return super().setsockopt(level, name, value)

    def getsockopt(self, level: int, name: int, size: int) -> bytes | int:
        if level == IPPROTO_TCP and name == TCP_MAXSEG:
            return struct.pack("<i", tcp.MSS)
        if level == IPPROTO_IP and name == 2 and (level, name) not in self.ipopts:
            return struct.pack("<i", 64)             # IP_TTL
        if level in (IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP):
            return self.ipopts.get((level, name), struct.pack("<i", 0))
        return super().getsockopt(level, name, size)

    def getsockname(self) -> bytes:
        return sockaddr(self.laddr, self.port)

    def _bind_addr(self, addr: bytes) -> Addr | int:
        got = parse(addr)
        if isinstance(got, int):
            return got
        ip, port = got
        if self.port:
            return -errno.EINVAL                     # bound already
        if ip != ANY and not self.space.local(ip):
            return -errno.EADDRNOTAVAIL
        return ip, port


class _NoLockType:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


_NoLock = _NoLockType()


class TcpSock(InetSocket):
    def __init__(self, px: "Personality", type_: int = SOCK_STREAM, protocol: int = 0) -> None:
        super().__init__(px, type_, protocol)
        self.tcb: tcp.Tcb | None = None
        self.lst: tcp.Listener | None = None
        self.rx: Buf | None = None                   # a loopback connection's
        self.tx: Buf | None = None
        self.pending: deque[TcpSock] = deque()       # loopback connections to accept
        self.backlog = 0
        self.peer: Addr | None = None
        self.inprogress = False
        self.established = False
        self.rd_shut = False
        self.registered = False

    # -- state -------------------------------------------------------------------------
    # `inprogress` is Linux's SS_CONNECTING: set by a connect that did not finish at once,
    # cleared only by the connect call that sees the end (0, or the error); the handshake
    # itself is the Tcb's (`_pending`). A failed handshake leaves SO_ERROR set.
    def _pending(self) -> bool:
        return self.tcb is not None and self.tcb.state == tcp.SYN_SENT

    def _progress(self) -> None:
        """A handshake that ended in failure: SO_ERROR, and no connection."""
        t = self.tcb
        if t is None or not self.inprogress or t.state != tcp.CLOSED or self.established:
            if t is not None and t.state != tcp.SYN_SENT:
                self.established = True
            return
        self.error = _error(t.error) if t.error is not None else errno.ECONNREFUSED
        self.tcb, self.peer = None, None

    def _connected(self) -> bool:
        return self.rx is not None or (self.tcb is not None and not self._pending())

    # -- setting up --------------------------------------------------------------------
    def bind(self, addr: bytes) -> int:
        got = self._bind_addr(addr)
        if isinstance(got, int):
            return got
        ip, port = got
        port = port or self.space.free(self.space.tcp)
        if self.space.tcp_in_use(port, self.flag(SO_REUSEADDR)):
            return -errno.EADDRINUSE
        self.laddr, self.port = ip, port
        self.space.tcp[port] = self
        self.registered = True
        return 0

    def listen(self, backlog: int) -> int:
        if self._connected() or self.inprogress:
            return -errno.EINVAL
        if not self.port:
            err = self.bind(sockaddr(ANY, 0))
            if err:
                return err
        self.backlog = max(1, min(backlog, 4096))
        st = self.space.stack
        if not self.listening and st is not None and (self.laddr == ANY or self.laddr == st.addr):
            with st.lock:
                if self.port in st.listeners:
                    return -errno.EADDRINUSE
                self.lst = tcp.Listener(st, self.port, self.backlog)
                st.listeners[self.port] = self.lst
        self.listening = True
        return 0

    def accept(self) -> Any:
        if not self.listening:
            return -errno.EINVAL
        if self.pending:
            return self.pending.popleft()
        lst = self.lst
        if lst is None:
            return BLOCK
        with self._lock():
            if not lst.ready:
                return BLOCK
            t = lst.ready.pop(0)
        new = TcpSock(self.space.px, self.type, self.protocol)
        new.tcb, new.peer = t, (t.rip, t.rport)
        new.laddr, new.port = self.space.our_addr(), t.lport
        return new

    @property
    def connecting(self) -> bool:
        """A connect is in progress (netcalls: EALREADY rather than EINPROGRESS)."""
        return self.inprogress

    def connect(self, addr: bytes) -> Any:
        self._progress()
        if self.inprogress:
            if self._pending():
                return BLOCK
            self.inprogress = False
            if not self._connected():
                err, self.error = self.error or errno.ECONNREFUSED, 0
                return -err
            return 0
        if self._connected():
            return -errno.EISCONN
        if self.listening:
            return -errno.EISCONN
        got = parse(addr)
        if isinstance(got, int):
            return got
        ip, port = got
        if port == 0:
            return -errno.ECONNREFUSED
        if self.space.local(ip):
            return self._connect_local(ip, port)
        st = self.space.stack
        if st is None or (st.gateway is None and not st._on_link(ip)):
            return -errno.ENETUNREACH
        with st.lock:
            lport = self.port or self.space.free(self.space.tcp)
            if (lport, ip, port) in st.tcbs:
                return -errno.EADDRNOTAVAIL
            t = tcp.Tcb(st, lport, ip, port)
            st.tcbs[t.key] = t
            t.open_active()
        self.port, self.laddr = lport, st.addr
        self.tcb, self.peer, self.inprogress = t, (ip, port), True
        return BLOCK

    def _connect_local(self, ip: bytes, port: int) -> Any:
        srv = self.space.tcp.get(port)
        if srv is None or not srv.listening or (srv.laddr != ANY and srv.laddr != ip
                                                and not (srv.laddr[0] == ip[0] == 127)):
            return -errno.ECONNREFUSED
        if len(srv.pending) >= srv.backlog:
            return BLOCK
        if not self.port:
            self.port = self.space.free(self.space.tcp)
        self.laddr = b"\x7f\0\0\x01" if ip == ANY else ip
        mine, theirs = local_pair()
        end = TcpSock(self.space.px, self.type, self.protocol)
        end.rx, end.tx = theirs
        end.laddr, end.port, end.peer = self.laddr, port, (self.laddr, self.port)
        self.rx, self.tx = mine
        self.peer = (self.laddr, port)
        srv.pending.append(end)
        self.inprogress = True              # a blocking caller's retry answers 0 at once
        return BLOCK

    # -- data --------------------------------------------------------------------------
    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        self._progress()
        if self._pending():
            return BLOCK
        if self.error:
            err, self.error = self.error, 0
            return -err
        if self.tx is not None:
            return stream_send(self.tx, data)
        t = self.tcb
        if t is None:
            return -errno.EPIPE
        with self._lock():
            if t.state not in tcp.SENDING or t.fin_queued:
                if t.state == tcp.CLOSED and t.error is not None:
                    e, t.error = t.error, None
                    return -_error(e)
                return -errno.EPIPE
            room = tcp.SNDBUF - len(t.sndbuf)
            if room <= 0:
                return BLOCK if data else 0
            n = min(len(data), room)
            if n:
                t.queue(data[:n])
            return n

    def recvmsg(self, n: int, flags: int) -> Any:
        self._progress()
        if self._pending():
            return BLOCK
        if self.rd_shut:
            return b"", None
        if self.rx is not None:
            return stream_recv(self.rx, n, flags)
        t = self.tcb
        if t is None:
            if self.error:
                err, self.error = self.error, 0
                return -err
            return -errno.ENOTCONN
        with self._lock():
            if t.rcvbuf:
                out = bytes(t.rcvbuf[:n])
                if not flags & MSG_PEEK:
                    del t.rcvbuf[:n]
                    t.window_opened()
                return out, None
            if t.peer_fin:
                return b"", None
            if t.state == tcp.CLOSED:
                if t.error is not None:
                    e, t.error = t.error, None
                    return -_error(e)
                return b"", None
            return BLOCK

    def shutdown(self, how: int) -> int:
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            return -errno.EINVAL
        self._progress()
        if not self._connected():
            return -errno.ENOTCONN
        if how in (SHUT_RD, SHUT_RDWR):
            self.rd_shut = True
        if how in (SHUT_WR, SHUT_RDWR):
            if self.tx is not None:
                self.tx.shut = True
            elif self.tcb is not None:
                with self._lock():
                    self.tcb.close()
        return 0

    def getpeername(self) -> bytes | int:
        self._progress()
        if self.peer is None or self._pending():
            return -errno.ENOTCONN
        return sockaddr(*self.peer)

    def getsockopt(self, level: int, name: int, size: int) -> bytes | int:
        self._progress()
        return super().getsockopt(level, name, size)

    def poll(self, events: int) -> int:
        self._progress()
        if self.listening:
            if self.pending:
                return POLLIN
            with self._lock():
                return POLLIN if self.lst is not None and self.lst.ready else 0
        if self._pending():
            return 0
        err = POLLERR if self.error else 0
        if self.rx is not None and self.tx is not None:
            return stream_poll(self.rx, self.tx) | err | (POLLIN if self.rd_shut else 0)
        t = self.tcb
        if t is None:
            return POLLHUP | POLLOUT | err if self.type else 0
        with self._lock():
            got = err
            if t.rcvbuf or t.peer_fin or t.state == tcp.CLOSED or self.rd_shut:
                got |= POLLIN
            if t.peer_fin:
                got |= POLLRDHUP
            if t.state in tcp.SENDING and not t.fin_queued and (
                    not t.sndbuf or tcp.SNDBUF - len(t.sndbuf) >= tcp.SND_LOWAT):
                got |= POLLOUT
            if t.state == tcp.CLOSED:
                got |= POLLHUP | POLLOUT | (POLLERR if t.error is not None else 0)
            elif t.peer_fin and t.fin_queued:
                got |= POLLHUP
            return got

    def close(self) -> None:
        if self.registered and self.space.tcp.get(self.port) is self:
            del self.space.tcp[self.port]
        while self.pending:
            self.pending.popleft().close()
        if self.tx is not None and self.rx is not None:
            self.tx.shut = True
            self.rx.gone = True
            if self.rx.data and not self.rd_shut:
                self.tx.reset = True         # unread data: the peer sees a reset
        st = self.space.stack
        if st is None:
            return
        with st.lock:
            lst, self.lst = self.lst, None
            if lst is not None:
                lst.closed = True
                if st.listeners.get(lst.port) is lst:
                    del st.listeners[lst.port]
                for t in lst.ready:
                    t.abort()
                for t in [t for t in st.tcbs.values() if t.listener is lst
                          and t.state == tcp.SYN_RCVD]:
                    t.abort()
            conn = self.tcb
            if conn is not None:
                linger = self.opts.get(SO_LINGER, bytes(8))
                on, secs = struct.unpack("<ii", linger)
                if (conn.rcvbuf and not self.rd_shut) or (on and secs == 0):
                    conn.abort()                     # unread data, or linger 0: RST
                else:
                    conn.close()
        st.kick()


def make(px: "Personality", type_: int, protocol: int) -> Socket | int:
    from .inetdgram import IcmpSock, UdpSock
    if type_ == SOCK_STREAM and protocol in (0, IPPROTO_TCP):
        return TcpSock(px, type_, IPPROTO_TCP)
    if type_ == SOCK_DGRAM and protocol in (0, IPPROTO_UDP):
        return UdpSock(px, type_, IPPROTO_UDP)
    if type_ in (SOCK_DGRAM, SOCK_RAW) and protocol == IPPROTO_ICMP:
        return IcmpSock(px, type_, protocol)
    if type_ == SOCK_RAW:
        return -errno.EPROTONOSUPPORT
    if type_ in (SOCK_STREAM, SOCK_DGRAM):
        return -errno.EPROTONOSUPPORT
    return -errno.ESOCKTNOSUPPORT
