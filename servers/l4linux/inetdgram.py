"""AF_INET datagram sockets: UDP, and ICMP echo as `ping` uses it (inet.py's mechanism:
the stack's state read without waiting under its lock, our own addresses served here).

- UDP: a bound socket is in `InetSpace.udp` and, with an interface, in the stack's
  `udp_socks` (the pump delivers into our queue, marking the stack touched); a datagram to
  one of our addresses goes straight into the bound socket's queue; no fragments (a
  datagram longer than one frame answers EMSGSIZE); broadcast needs SO_BROADCAST (EACCES).
- ICMP: SOCK_RAW sends the ICMP message as given and reads every ICMP packet with its IP
  header; SOCK_DGRAM (a "ping socket") owns an echo identifier, rewrites it and the
  checksum, and reads only its echo replies. An echo request to our own address is
  answered here.

Ownership: the personality's serving thread; `deliver` and `deliver_icmp` run on the
stack's pump thread with the stack's lock held.
"""
from __future__ import annotations

import errno
import socket as _host
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from servers.netstack import wire

from .inet import (ANY, IPPROTO_ICMP, MAX_FRAME_UDP, MAX_UDP, UDP_QUEUE, Addr, InetSocket,
                   parse, sockaddr)
from .pipe import BLOCK
from .sockets import (MSG_PEEK, POLLIN, POLLOUT, SO_BROADCAST, SOCK_DGRAM, SOCK_RAW)

if TYPE_CHECKING:
    from .server import Personality


class _Datagrams(InetSocket):
    """What UDP and ICMP sockets share: a queue of (data, source) the pump fills."""
    queue: deque[tuple[bytes, Addr]]

    def recvmsg(self, n: int, flags: int) -> Any:
        if not self.queue:
            return BLOCK
        with self._lock():
            data, src = self.queue[0] if flags & MSG_PEEK else self.queue.popleft()
        return data, sockaddr(*src)


class UdpSock(_Datagrams):
    def __init__(self, px: "Personality", type_: int = SOCK_DGRAM, protocol: int = 0) -> None:
        super().__init__(px, type_, protocol)
        self.queue: deque[tuple[bytes, Addr]] = deque()
        self.peer: Addr | None = None
        self.dropped = 0

    def bind(self, addr: bytes) -> int:
        got = self._bind_addr(addr)
        if isinstance(got, int):
            return got
        return self._take(got[0], got[1] or self.space.free(self.space.udp))

    def _take(self, ip: bytes, port: int) -> int:
        st = self.space.stack
        if port in self.space.udp or (st is not None and port in st.udp_socks):
            return -errno.EADDRINUSE
        self.laddr, self.port = ip, port
        self.space.udp[port] = self
        if st is not None:
            with st.lock:
                st.udp_socks[port] = self
        return 0

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram from the stack (pump thread, lock held)."""
        self._queue(data, (_host.inet_aton(addr[0]), addr[1]))
        st = self.space.stack
        if st is not None:
            st.touched = True

    def _queue(self, data: bytes, src: Addr) -> None:
        if self.peer is not None and src != self.peer:
            return
        if len(self.queue) >= UDP_QUEUE:
            self.dropped += 1
            return
        self.queue.append((data, src))

    def connect(self, addr: bytes) -> int:
        if len(addr) >= 2 and struct.unpack_from("<H", addr)[0] == 0:      # AF_UNSPEC
            self.peer = None
            return 0
        got = parse(addr)
        if isinstance(got, int):
            return got
        if not self.port:
            err = self._take(ANY, self.space.free(self.space.udp))
            if err:
                return err
        self.peer = got
        return 0

    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        if addr is not None:
            got = parse(addr)
            if isinstance(got, int):
                return got
            dst = got
        elif self.peer is not None:
            dst = self.peer
        else:
            return -errno.EDESTADDRREQ
        if len(data) > MAX_UDP:
            return -errno.EMSGSIZE
        if not self.port:
            err = self._take(ANY, self.space.free(self.space.udp))
            if err:
                return err
        ip, port = dst
        st = self.space.stack
        bcast = ip == b"\xff" * 4 or (st is not None and ip == st.bcast)
        if bcast and not self.flag(SO_BROADCAST):
            return -errno.EACCES
        if self.space.local(ip) and not bcast:
            to = self.space.udp.get(port)
            src = self.laddr if self.laddr != ANY else (ip if ip != ANY else b"\x7f\0\0\x01")
            if to is not None:
                to._queue(bytes(data), (src, self.port))
            return len(data)
        if st is None or (st.gateway is None and not st._on_link(ip) and not bcast):
            return -errno.ENETUNREACH
        if len(data) > MAX_FRAME_UDP:
            return -errno.EMSGSIZE
        with st.lock:
            st.ip_output(ip, wire.PROTO_UDP, wire.udp(st.addr, ip, self.port, port, bytes(data)))
        return len(data)


    def getpeername(self) -> bytes | int:
        return sockaddr(*self.peer) if self.peer is not None else -errno.ENOTCONN

    def shutdown(self, how: int) -> int:
        return 0 if self.peer is not None else -errno.ENOTCONN

    def poll(self, events: int) -> int:
        return POLLOUT | (POLLIN if self.queue else 0)

    def close(self) -> None:
        if self.space.udp.get(self.port) is self:
            del self.space.udp[self.port]
        st = self.space.stack
        if st is not None:
            with st.lock:
                if st.udp_socks.get(self.port) is self:
                    del st.udp_socks[self.port]


class IcmpSock(_Datagrams):
    """ICMP echo as `ping` uses it: SOCK_RAW (we send the ICMP message as given, read every
    ICMP packet with its IP header) or SOCK_DGRAM (the identifier is the socket's, the
    checksum ours; only its echo replies arrive, without the IP header)."""

    def __init__(self, px: "Personality", type_: int, protocol: int = IPPROTO_ICMP) -> None:
        super().__init__(px, type_, protocol)
        self.queue: deque[tuple[bytes, Addr]] = deque()
        self.peer: Addr | None = None
        self.key = id(self) if type_ == SOCK_RAW else 0
        if type_ == SOCK_RAW:
            self._register(self.key)

    def _register(self, key: int) -> None:
        self.key = key
        self.space.icmp[key] = self
        if self.type == SOCK_DGRAM:
            self.port = key
        st = self.space.stack
        if st is not None and self.space.deliver_icmp not in st.icmp_taps:
            with st.lock:
                st.icmp_taps.append(self.space.deliver_icmp)

    def bind(self, addr: bytes) -> int:
        got = self._bind_addr(addr) if self.type == SOCK_DGRAM else parse(addr)
        if isinstance(got, int):
            return got
        if self.type == SOCK_DGRAM:
            ident = got[1] or self.space.free(self.space.icmp)
            if ident in self.space.icmp:
                return -errno.EADDRINUSE
            self._register(ident)
        self.laddr = got[0]
        return 0

    def connect(self, addr: bytes) -> int:
        got = parse(addr)
        if isinstance(got, int):
            return got
        self.peer = got
        return 0

    def deliver_icmp(self, ip: wire.Ip4) -> None:
        p = ip.payload
        if self.type == SOCK_DGRAM:
            if p[0] != wire.ICMP_ECHO_REPLY or struct.unpack_from("!H", p, 4)[0] != self.key:
                return
            data = p
        else:
            data = wire.ip4(ip.src, ip.dst, wire.PROTO_ICMP, p, 0, ip.ttl)
        if len(self.queue) < UDP_QUEUE:
            self.queue.append((data, (ip.src, 0)))
        st = self.space.stack
        if st is not None:
            st.touched = True

    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        if addr is not None:
            got = parse(addr)
            if isinstance(got, int):
                return got
            ip = got[0]
        elif self.peer is not None:
            ip = self.peer[0]
        else:
            return -errno.EDESTADDRREQ
        if len(data) < 8 or len(data) > MAX_FRAME_UDP + 8:
            return -errno.EINVAL if len(data) < 8 else -errno.EMSGSIZE
        msg = bytes(data)
        if self.type == SOCK_DGRAM:
            if msg[0] != wire.ICMP_ECHO:
                return -errno.EINVAL
            if not self.key:
                self._register(self.space.free(self.space.icmp))
            seq = struct.unpack_from("!H", msg, 6)[0]
            msg = wire.icmp_echo(wire.ICMP_ECHO, self.key, seq, msg[8:])
        st = self.space.stack
        if self.space.local(ip):
            me = ip if ip != ANY else b"\x7f\0\0\x01"
            self.space.deliver_icmp(wire.Ip4(me, me, wire.PROTO_ICMP, 64, msg))
            if msg[0] == wire.ICMP_ECHO:
                reply = bytearray(msg)
                reply[0], reply[2:4] = wire.ICMP_ECHO_REPLY, b"\0\0"
                reply[2:4] = wire.checksum(bytes(reply)).to_bytes(2, "big")
                self.space.deliver_icmp(wire.Ip4(me, me, wire.PROTO_ICMP, 64, bytes(reply)))
            return len(data)
        if st is None or (st.gateway is None and not st._on_link(ip)):
            return -errno.ENETUNREACH
        with st.lock:
            st.ip_output(ip, wire.PROTO_ICMP, msg)
        return len(data)


    def poll(self, events: int) -> int:
        return POLLOUT | (POLLIN if self.queue else 0)

    def close(self) -> None:
        if self.key and self.space.icmp.get(self.key) is self:
            del self.space.icmp[self.key]
