"""Sockets of Linux processes: the object protocol every socket kind follows.

Mechanism. A socket descriptor's open file description (`files.Open`, kind "socket") holds
one `Socket`. The system calls (netcalls.py) decode and check the process's arguments —
pointers, lengths, the raw sockaddr bytes — and then call the socket's methods, which
answer one of:
- a value (a count, bytes, a new Socket, a (data, address) pair), or 0 for success;
- a negative errno, as Linux would answer it;
- `pipe.BLOCK`: not now. The call is kept and retried after every change (the caller
  turns BLOCK into -EAGAIN for a non-blocking description: O_NONBLOCK is the Open's flag,
  MSG_DONTWAIT the call's; a socket never looks at either itself).
A method that answers BLOCK has changed nothing, so a retry is the same call again.

Addresses cross this interface raw: `bind`, `connect` and `sendmsg` take the sockaddr bytes
the process passed (length checked by the caller to be at most 128), and `recvmsg`,
`getsockname`, `getpeername` answer sockaddr bytes the caller copies out (truncated to the
process's buffer, the full length reported, as Linux).

Datagram kinds answer `recvmsg` with the whole datagram, however long: the caller truncates
it to the process's buffer (and reports MSG_TRUNC); stream kinds answer at most `n` bytes.

The kinds: AF_UNIX stream and datagram (unixsock.py), AF_INET stream, datagram and ICMP
echo (inet.py), AF_NETLINK NETLINK_ROUTE (netconf.py `NetlinkSocket`, another module's).
socket(2) makes one as `Kind(px, type, protocol)` — the personality, the type without
SOCK_NONBLOCK/SOCK_CLOEXEC, the protocol as the process passed it. Readiness
(`poll`) is what `files.Open.poll` reports, so poll/select/ppoll/pselect6 need nothing
socket-specific.

Ownership: the personality's single serving thread calls every method. A kind whose state
another thread changes (the IP stack's pump) reads it there without waiting and asks the
personality to retry through its wake IRQ (server.py).
"""
from __future__ import annotations

import errno
import struct
from typing import Any

from .pipe import BLOCK

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET = 1, 2, 3, 5
SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_TYPE_MASK = 0o4000, 0o2000000, 0xF
SOL_SOCKET = 1
SO_DEBUG, SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_DONTROUTE, SO_BROADCAST = 1, 2, 3, 4, 5, 6
SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE, SO_OOBINLINE, SO_LINGER = 7, 8, 9, 10, 13
SO_REUSEPORT, SO_PASSCRED, SO_PEERCRED, SO_RCVLOWAT, SO_SNDLOWAT = 15, 16, 17, 18, 19
SO_RCVTIMEO, SO_SNDTIMEO, SO_ACCEPTCONN, SO_PROTOCOL, SO_DOMAIN = 20, 21, 30, 38, 39
MSG_OOB, MSG_PEEK, MSG_DONTROUTE, MSG_TRUNC, MSG_DONTWAIT = 1, 2, 4, 0x20, 0x40
MSG_EOF, MSG_WAITALL, MSG_NOSIGNAL, MSG_CMSG_CLOEXEC = 0x200, 0x100, 0x4000, 0x40000000
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
DEFAULT_BUF = 212992               # Linux's net.core.[rw]mem_default
MAX_BUF = 4 * 1024 * 1024
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLRDHUP = 1, 2, 4, 8, 16, 0x2000

__all__ = ["BLOCK", "Socket"]


class Socket:
    """One socket (the state behind a socket descriptor). The defaults answer what Linux
    answers for an operation the kind does not support; a kind overrides what it does.

    The common socket-level options (SOL_SOCKET) are kept here in `opts`, so every kind
    answers getsockopt for SO_TYPE, SO_ERROR, SO_RCVBUF … alike; a kind reads the ones
    that change its behaviour (SO_REUSEADDR for bind, SO_BROADCAST for sendto)."""

    family = 0
    type = 0
    protocol = 0

    def __init__(self, family: int, type_: int, protocol: int) -> None:
        self.family, self.type, self.protocol = family, type_, protocol
        self.error = 0               # SO_ERROR: a pending asynchronous error (positive)
        self.listening = False
        self.opts: dict[int, bytes] = {
            SO_RCVBUF: struct.pack("<i", DEFAULT_BUF), SO_SNDBUF: struct.pack("<i", DEFAULT_BUF),
        }

    # -- addresses and connections --------------------------------------------------------
    def bind(self, addr: bytes) -> int:
        return -errno.EOPNOTSUPP

    def connect(self, addr: bytes) -> int:
        return -errno.EOPNOTSUPP

    def listen(self, backlog: int) -> int:
        return -errno.EOPNOTSUPP

    def accept(self) -> "Socket | int":
        return -errno.EOPNOTSUPP

    def shutdown(self, how: int) -> int:
        return -errno.ENOTCONN

    def getsockname(self) -> bytes:
        return struct.pack("<H", self.family)

    def getpeername(self) -> bytes | int:
        return -errno.ENOTCONN

    # -- data ------------------------------------------------------------------------------
    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        return -errno.EOPNOTSUPP

    def recvmsg(self, n: int, flags: int) -> Any:
        return -errno.EOPNOTSUPP

    # -- options ---------------------------------------------------------------------------
    def setsockopt(self, level: int, name: int, value: bytes) -> int:
        if level != SOL_SOCKET:
            return -errno.EOPNOTSUPP
        if name in (SO_TYPE, SO_ERROR, SO_PROTOCOL, SO_DOMAIN, SO_ACCEPTCONN, SO_PEERCRED):
            return -errno.ENOPROTOOPT
        if name in (SO_RCVTIMEO, SO_SNDTIMEO):
            if len(value) < 16:
                return -errno.EINVAL
            self.opts[name] = value[:16]
            return 0
        if name == SO_LINGER:
            if len(value) < 8:
                return -errno.EINVAL
            self.opts[name] = value[:8]
            return 0
        if len(value) < 4:
            return -errno.EINVAL
        if name in (SO_RCVBUF, SO_SNDBUF):
            v = struct.unpack("<i", value[:4])[0]
            v = min(max(v, 1152), MAX_BUF) * 2          # Linux doubles what was asked
            self.opts[name] = struct.pack("<i", v)
            return 0
        self.opts[name] = value[:4]
        return 0

    def getsockopt(self, level: int, name: int, size: int) -> bytes | int:
        if level != SOL_SOCKET:
            return -errno.EOPNOTSUPP
        fixed = {SO_TYPE: self.type, SO_PROTOCOL: self.protocol, SO_DOMAIN: self.family,
                 SO_ACCEPTCONN: int(self.listening)}
        if name in fixed:
            return struct.pack("<i", fixed[name])
        if name == SO_ERROR:
            err, self.error = self.error, 0
            return struct.pack("<i", err)
        if name in (SO_RCVTIMEO, SO_SNDTIMEO):
            return self.opts.get(name, bytes(16))
        if name == SO_LINGER:
            return self.opts.get(name, bytes(8))
        if name in (SO_DEBUG, SO_REUSEADDR, SO_DONTROUTE, SO_BROADCAST, SO_KEEPALIVE,
                    SO_OOBINLINE, SO_REUSEPORT, SO_PASSCRED, SO_RCVBUF, SO_SNDBUF,
                    SO_RCVLOWAT, SO_SNDLOWAT):
            return self.opts.get(name, struct.pack("<i", 1 if name in (
                SO_RCVLOWAT, SO_SNDLOWAT) else 0))
        return -errno.ENOPROTOOPT

    def flag(self, name: int) -> bool:
        """A SOL_SOCKET boolean option's value (SO_REUSEADDR, SO_BROADCAST …)."""
        v = self.opts.get(name)
        return bool(v and struct.unpack("<i", v[:4])[0])

    # -- readiness and end -----------------------------------------------------------------
    def poll(self, events: int) -> int:
        """The poll events the socket has now (POLLIN, POLLOUT, POLLHUP, POLLERR …); the
        caller masks them with what was asked."""
        return POLLOUT

    def close(self) -> None:
        """The last descriptor on it went (close, exit): release what it holds."""


# -- local streams: the byte pipes of AF_UNIX stream sockets and of loopback TCP -------------
STREAM_BUF = 256 * 1024


class Buf:
    """One direction of a local connection. `shut`: the writer is done (EOF once the
    bytes are read); `gone`: the reader is closed (a write is EPIPE); `reset`: the writer
    reset the connection (loopback TCP closed with unread data: the next read is
    ECONNRESET, the ones after it EOF)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.shut = False
        self.gone = False
        self.reset = False

    def room(self) -> int:
        return STREAM_BUF - len(self.data)


def stream_send(tx: Buf, data: bytes) -> Any:
    """Write into a local connection: a count, -EPIPE, or BLOCK (full)."""
    if tx.gone or tx.shut:
        return -errno.EPIPE
    room = tx.room()
    if room <= 0:
        return BLOCK if data else 0
    tx.data += data[:room]
    return min(len(data), room)


def stream_recv(rx: Buf, n: int, flags: int) -> Any:
    """Read from a local connection: (bytes, None), b"" at EOF, or BLOCK."""
    if rx.reset:
        rx.reset, rx.shut = False, True
        rx.data.clear()
        return -errno.ECONNRESET
    if rx.data:
        out = bytes(rx.data[:n])
        if not flags & MSG_PEEK:
            del rx.data[:n]
        return out, None
    return (b"", None) if rx.shut else BLOCK


def stream_poll(rx: Buf, tx: Buf) -> int:
    got = 0
    if rx.data or rx.shut:
        got |= POLLIN
    if rx.shut:
        got |= POLLRDHUP
    if tx.gone or not tx.shut and tx.room() > 0:
        got |= POLLOUT
    if rx.shut and (tx.gone or tx.shut):
        got |= POLLHUP
    if rx.reset:
        got |= POLLERR | POLLIN | POLLHUP
    return got


def local_pair() -> tuple[tuple[Buf, Buf], tuple[Buf, Buf]]:
    """The (rx, tx) of both ends of a new local connection."""
    a, b = Buf(), Buf()
    return (a, b), (b, a)
