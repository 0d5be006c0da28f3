"""The socket system calls: socket 41, socketpair 53, connect 42, accept 43/288, sendto 44,
recvfrom 45, sendmsg 46, recvmsg 47, shutdown 48, bind 49, listen 50, getsockname 51,
getpeername 52, setsockopt 54, getsockopt 55, recvmmsg 299, sendmmsg 307 (`syscalls.TABLE`
entries; the conventions are `syscalls`'s).

Mechanism: decode and check first — the descriptor is a socket (EBADF, ENOTSOCK), an
address length is 0..128 (EINVAL), a length pointer's value is not negative, every pointer
is read or written through the personality (a bad one: -EFAULT) — then call the socket
(the protocol of sockets.py). Its BLOCK becomes, on a non-blocking description
(O_NONBLOCK, or MSG_DONTWAIT for this call), EAGAIN — EINPROGRESS for a connect just
started, EALREADY for one still going on; on a blocking one with SO_RCVTIMEO/SO_SNDTIMEO
set, EAGAIN once that much time passed (the process's sleep, `Personality.sleep`). A
stream write to a closed connection is EPIPE and SIGPIPE, unless MSG_NOSIGNAL.
read/write/readv/writev on a socket go to the same socket methods (files.Open).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any

from . import files, inet, unixsock
from .pipe import BLOCK
from .sockets import (AF_INET, AF_NETLINK, AF_UNIX, MSG_DONTWAIT, MSG_NOSIGNAL,
                      MSG_TRUNC, SO_RCVTIMEO, SO_SNDTIMEO, SOCK_CLOEXEC,
                      SOCK_NONBLOCK, SOCK_STREAM, SOCK_TYPE_MASK, Socket)
from .syscalls import SIGPIPE, _i32, scatter, sys

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

MAX_ADDR = 128
MAX_IO = 65536                      # bytes one call moves (a stream call may move fewer)
MAX_DGRAM = 65536
MAX_OPT = 4096
MAX_IOV = 1024
MAX_MMSG = 1024
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags


# -- the checks ------------------------------------------------------------------------------
def _sock(px: "Personality", p: "Process", fd: int) -> tuple[files.Open, Socket] | int:
    f = p.fds.get(_i32(fd))
    if f is None:
        return -errno.EBADF
    if f.kind != "socket" or f.sock is None:
        return -errno.ENOTSOCK
    px.unix.caller = p
    return f, f.sock


def _addr_in(px: "Personality", p: "Process", ptr: int, length: int) -> bytes | int:
    length = _i32(length)
    if length < 0 or length > MAX_ADDR:
        return -errno.EINVAL
    return px.read(p, ptr, length) if length else b""


def _addr_out(px: "Personality", p: "Process", ptr: int, lenp: int, sa: bytes | None) -> int:
    """Copy an address out (truncated to the buffer) and its full length; 0 or -errno."""
    if not ptr or not lenp:
        return 0
    (room,) = struct.unpack("<i", px.read(p, lenp, 4))
    if room < 0:
        return -errno.EINVAL
    sa = sa or b""
    if room and sa:
        px.write(p, ptr, sa[:room])
    px.write(p, lenp, struct.pack("<i", len(sa)))
    return 0


def _nonblock(f: files.Open, flags: int = 0) -> bool:
    return bool(f.flags & files.O_NONBLOCK or flags & MSG_DONTWAIT)


def _waited(px: "Personality", p: "Process", s: Socket, result: Any, nonblock: bool,
            timeo: int) -> Any:
    """What a call answers for `result`: BLOCK becomes EAGAIN when it must not wait (or
    waited its SO_*TIMEO); anything else drops the call's sleep."""
    if result is not BLOCK:
        px.sleepers.pop(px.tid, None)
        return result
    if nonblock:
        return -errno.EAGAIN
    raw = s.opts.get(timeo)
    if raw:
        sec, usec = struct.unpack("<qq", raw)
        if sec > 0 or usec > 0:
            if px.sleep(p, sec + usec / 1e6) is not BLOCK:
                return -errno.EAGAIN
    return BLOCK


def _piped(px: "Personality", p: "Process", s: Socket, result: Any, flags: int) -> Any:
    if result == -errno.EPIPE and s.type == SOCK_STREAM and not flags & MSG_NOSIGNAL:
        px.kill(p, SIGPIPE)
    return result


def _install(p: "Process", s: Socket, type_flags: int) -> int:
    f = files.Open("socket", files.O_RDWR | (files.O_NONBLOCK if type_flags & SOCK_NONBLOCK
                                            else 0), sock=s)
    fd = p.fds.install(f, bool(type_flags & SOCK_CLOEXEC))
    if fd < 0 and f.refs == 0:
        s.close()
    return fd


# -- making sockets -----------------------------------------------------------------------
def make(px: "Personality", family: int, type_: int, protocol: int) -> Socket | int:
    if family == AF_UNIX:
        return unixsock.make(px, type_, protocol)
    if family == AF_INET:
        return inet.make(px, type_, protocol)
    if family == AF_NETLINK:
        try:
            from .netconf import NetlinkSocket  # type: ignore[attr-defined]
        except ImportError:
            return -errno.EAFNOSUPPORT
        if protocol != 0:
            return -errno.EPROTONOSUPPORT
        return NetlinkSocket(px, type_, protocol)  # type: ignore[no-any-return]
    return -errno.EAFNOSUPPORT                   # AF_INET6 among them: IPv4 only


def _flags_ok(type_: int) -> bool:
    return not type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC)


@sys(41)
def sys_socket(px: "Personality", p: "Process", a: list[int]) -> Any:
    family, type_, protocol = _i32(a[0]), _i32(a[1]), _i32(a[2])
    if not _flags_ok(type_):
        return -errno.EINVAL
    s = make(px, family, type_ & SOCK_TYPE_MASK, protocol)
    if isinstance(s, int):
        return s
    return _install(p, s, type_)


@sys(53)
def sys_socketpair(px: "Personality", p: "Process", a: list[int]) -> Any:
    family, type_, protocol = _i32(a[0]), _i32(a[1]), _i32(a[2])
    if not _flags_ok(type_):
        return -errno.EINVAL
    if family != AF_UNIX:
        return -errno.EOPNOTSUPP if family in (AF_INET, AF_NETLINK) else -errno.EAFNOSUPPORT
    px.read(p, a[3], 8)                          # the result's place, checked first
    got = unixsock.pair(px, type_ & SOCK_TYPE_MASK, protocol)
    if isinstance(got, int):
        return got
    one = _install(p, got[0], type_)
    if one < 0:
        got[1].close()
        return one
    two = _install(p, got[1], type_)
    if two < 0:
        p.fds.close(one)
        return two
    px.write(p, a[3], struct.pack("<ii", one, two))
    return 0


# -- addresses and connections ------------------------------------------------------------
@sys(49)
def sys_bind(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    addr = _addr_in(px, p, a[1], a[2])
    return addr if isinstance(addr, int) else got[1].bind(addr)


@sys(50)
def sys_listen(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    backlog = _i32(a[1])
    return got[1].listen(128 if backlog < 0 or backlog > 4096 else backlog)


@sys(42)
def sys_connect(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    f, s = got
    addr = _addr_in(px, p, a[1], a[2])
    if isinstance(addr, int):
        return addr
    if len(addr) < 2:
        return -errno.EINVAL
    going = bool(getattr(s, "connecting", False))
    result = s.connect(addr)
    if result is BLOCK and _nonblock(f):
        return -errno.EALREADY if going else -errno.EINPROGRESS
    return _waited(px, p, s, result, False, SO_SNDTIMEO)


@sys(43, 288)
def sys_accept(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    f, s = got
    flags = _i32(a[3]) if px.nr == 288 else 0
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
        return -errno.EINVAL
    if a[1] and a[2]:
        (room,) = struct.unpack("<i", px.read(p, a[2], 4))
        if room < 0:
            return -errno.EINVAL
    result = _waited(px, p, s, s.accept(), _nonblock(f), SO_RCVTIMEO)
    if not isinstance(result, Socket):
        return result
    fd = _install(p, result, flags)
    if fd >= 0:
        peer = result.getpeername()
        _addr_out(px, p, a[1], a[2], peer if isinstance(peer, bytes) else result.getsockname())
    return fd


@sys(48)
def sys_shutdown(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    return got if isinstance(got, int) else got[1].shutdown(_i32(a[1]))


@sys(51, 52)
def sys_getname(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    s = got[1]
    sa = s.getsockname() if px.nr == 51 else s.getpeername()
    if isinstance(sa, int):
        return sa
    if not a[1] or not a[2]:
        return -errno.EFAULT
    return _addr_out(px, p, a[1], a[2], sa)


# -- options -----------------------------------------------------------------------------
@sys(54)
def sys_setsockopt(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    length = _i32(a[4])
    if length < 0 or length > MAX_OPT:
        return -errno.EINVAL
    value = px.read(p, a[3], length) if length else b""
    return got[1].setsockopt(_i32(a[1]), _i32(a[2]), value)


@sys(55)
def sys_getsockopt(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    (room,) = struct.unpack("<i", px.read(p, a[4], 4))
    if room < 0:
        return -errno.EINVAL
    value = got[1].getsockopt(_i32(a[1]), _i32(a[2]), room)
    if isinstance(value, int):
        return value
    if room and value:
        px.write(p, a[3], value[:room])
    px.write(p, a[4], struct.pack("<i", min(room, len(value))))
    return 0


# -- data --------------------------------------------------------------------------------
def _send(px: "Personality", p: "Process", f: files.Open, s: Socket, data: bytes,
          addr: bytes | None, flags: int) -> Any:
    result = s.sendmsg(data, addr, flags)
    return _piped(px, p, s, _waited(px, p, s, result, _nonblock(f, flags), SO_SNDTIMEO), flags)


def _recv(px: "Personality", p: "Process", f: files.Open, s: Socket, n: int,
          flags: int) -> Any:
    """(data for the buffer, source address, the datagram's full length) or an answer."""
    result = _waited(px, p, s, s.recvmsg(n, flags), _nonblock(f, flags), SO_RCVTIMEO)
    if not isinstance(result, tuple):
        return result
    data, src = result
    return bytes(data[:n]), src, len(data)


def _count(s: Socket, flags: int, data: bytes, full: int) -> int:
    """A receive's result: the bytes copied, or with MSG_TRUNC a datagram's whole length."""
    return full if flags & MSG_TRUNC and s.type != SOCK_STREAM else len(data)


@sys(44)
def sys_sendto(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    f, s = got
    flags = _i32(a[3])
    addr = _addr_in(px, p, a[4], a[5]) if a[4] else None
    if isinstance(addr, int):
        return addr
    data = px.read(p, a[1], min(a[2], MAX_IO)) if a[2] else b""
    return _send(px, p, f, s, data, addr or None, flags)


@sys(45)
def sys_recvfrom(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    f, s = got
    flags = _i32(a[3])
    result = _recv(px, p, f, s, min(a[2], MAX_IO), flags)
    if not isinstance(result, tuple):
        return result
    data, src, full = result
    if data:
        px.write(p, a[1], data)
    _addr_out(px, p, a[4], a[5], src)
    return _count(s, flags, data, full)


def _iovecs(px: "Personality", p: "Process", ptr: int, count: int) -> list[tuple[int, int]] | int:
    if count > MAX_IOV:
        return -errno.EMSGSIZE
    if not count:
        return []
    return [(b, min(n, MAX_IO)) for b, n in struct.iter_unpack("<QQ", px.read(p, ptr, 16 * count))
            if n < 1 << 63]


def _sendhdr(px: "Personality", p: "Process", f: files.Open, s: Socket, hdr: int,
             flags: int) -> Any:
    name, namelen, iov, iovlen, _, _, _ = MSGHDR.unpack(px.read(p, hdr, MSGHDR.size))
    addr = _addr_in(px, p, name, namelen) if name and namelen else None
    if isinstance(addr, int):
        return addr
    vecs = _iovecs(px, p, iov, iovlen)
    if isinstance(vecs, int):
        return vecs
    data = b"".join(px.read(p, b, n) for b, n in vecs if n)[:MAX_DGRAM]
    return _send(px, p, f, s, data, addr or None, flags)


def _recvhdr(px: "Personality", p: "Process", f: files.Open, s: Socket, hdr: int,
             flags: int) -> Any:
    name, namelen, iov, iovlen, _, _, _ = MSGHDR.unpack(px.read(p, hdr, MSGHDR.size))
    if _i32(namelen) < 0:
        return -errno.EINVAL
    vecs = _iovecs(px, p, iov, iovlen)
    if isinstance(vecs, int):
        return vecs
    want = min(sum(n for _, n in vecs), MAX_IO)
    result = _recv(px, p, f, s, want, flags)
    if not isinstance(result, tuple):
        return result
    data, src, full = result
    scatter(px, p, vecs, data)
    out_flags = MSG_TRUNC if full > len(data) and s.type != SOCK_STREAM else 0
    src = src or b""
    if name and namelen and src:
        px.write(p, name, src[:namelen])
    px.write(p, hdr + 8, struct.pack("<I", len(src) if name else 0))
    px.write(p, hdr + 40, struct.pack("<Q", 0))           # no control messages
    px.write(p, hdr + 48, struct.pack("<i", out_flags))
    return _count(s, flags, data, full)


@sys(46)
def sys_sendmsg(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    return got if isinstance(got, int) else _sendhdr(px, p, *got, a[1], _i32(a[2]))


@sys(47)
def sys_recvmsg(px: "Personality", p: "Process", a: list[int]) -> Any:
    got = _sock(px, p, a[0])
    return got if isinstance(got, int) else _recvhdr(px, p, *got, a[1], _i32(a[2]))


@sys(299, 307)
def sys_mmsg(px: "Personality", p: "Process", a: list[int]) -> Any:
    """recvmmsg / sendmmsg: message after message; only the first may wait, a later one
    that would wait (or fails) ends the call with the count so far."""
    got = _sock(px, p, a[0])
    if isinstance(got, int):
        return got
    f, s = got
    vlen, flags = min(a[2], MAX_MMSG), _i32(a[3])
    one = _recvhdr if px.nr == 299 else _sendhdr
    done = 0
    for i in range(vlen):
        hdr = a[1] + 64 * i
        result = one(px, p, f, s, hdr, flags | (MSG_DONTWAIT if done else 0))
        if result is BLOCK or (isinstance(result, int) and result < 0):
            return result if not done else done
        px.write(p, hdr + 56, struct.pack("<I", result))
        done += 1
    return done

