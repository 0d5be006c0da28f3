"""AF_UNIX sockets between the personality's Linux processes: stream and datagram.

Mechanism. A name is a path in the file system — bind makes a socket inode there
(S_IFSOCK, the process's umask applied; EADDRINUSE if the name exists, as Linux) — or an
abstract name (the address starts with a NUL byte; every byte of its length counts), kept
in `UnixSpace.abstract`. A path's binding is found through the inode the path names, so
an unlinked or renamed socket file behaves as on Linux (connect: ENOENT, or the new name
works); on a mounted disk, where there is no socket inode, through the absolute path.
- Stream: connect to a listening socket makes the server's end at once and queues it for
  accept (connect returns 0; a full backlog BLOCKs); the two ends share two `Buf`s
  (sockets.py). Reads after the peer closed are EOF, writes EPIPE.
- Datagram: each datagram is queued on the receiver with the sender's address (unnamed:
  family only); a full queue BLOCKs the sender; to a name nobody has bound: ECONNREFUSED
  (ENOENT for a path that does not exist). connect sets the default destination and the
  only sender accepted.
socketpair makes two connected ends of either type. SCM_RIGHTS (passing descriptors) is
not served: the control data is ignored.

Contract: the caller (netcalls.py) sets `UnixSpace.caller` to the calling process before
each call (bind and connect resolve relative paths from its working directory).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import stat
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from . import fs
from .pipe import BLOCK
from .sockets import (AF_UNIX, MSG_PEEK, POLLHUP, POLLIN, POLLOUT, SHUT_RD, SHUT_RDWR, SHUT_WR,
                      SOCK_DGRAM, SOCK_STREAM, Buf, Socket, local_pair, stream_poll,
                      stream_recv, stream_send)

if TYPE_CHECKING:
    from .server import Personality

UNNAMED = struct.pack("<H", AF_UNIX)
MAX_PATH = 108                      # sun_path's size
DGRAM_QUEUE = 512                   # datagrams queued per receiver (net.unix.max_dgram_qlen)


class UnixSpace:
    """The names of the personality's AF_UNIX sockets."""

    def __init__(self, px: "Personality") -> None:
        self.px = px
        self.bound: dict[Any, "UnixSocket"] = {}     # inode, or ("path", abs) on a disk
        self.abstract: dict[bytes, "UnixSocket"] = {}
        self.caller: Any = None                      # the process making the call

    def parse(self, addr: bytes) -> tuple[str, bytes] | int:
        """("path", path) or ("abstract", name), or -errno for a bad address."""
        if len(addr) < 2 or struct.unpack_from("<H", addr)[0] != AF_UNIX:
            return -errno.EINVAL
        name = addr[2:]
        if not name:
            return -errno.EINVAL
        if name[0] == 0:
            return ("abstract", name)
        path = name.split(b"\0", 1)[0]
        if len(path) >= MAX_PATH:
            return -errno.EINVAL
        return ("path", path)

    def _cwd(self) -> fs.Inode:
        return self.caller.cwd if self.caller is not None else self.px.fs.root

    def bind(self, sock: "UnixSocket", where: tuple[str, bytes]) -> int:
        kind, name = where
        if kind == "abstract":
            if name in self.abstract:
                return -errno.EADDRINUSE
            self.abstract[name] = sock
            sock.key = ("abstract", name)
            return 0
        fsys = self.px.fs
        try:
            parent, leaf = fsys.parent_of(name, self._cwd())
        except fs.FsError as e:
            return -e.errno
        if leaf in parent.entries:
            return -errno.EADDRINUSE
        if parent.mount is not None:
            key: Any = ("path", fsys.path_of(parent).rstrip(b"/") + b"/" + leaf.encode(
                errors="surrogateescape"))
            if key in self.bound:
                return -errno.EADDRINUSE
        else:
            umask = self.caller.umask if self.caller is not None else 0o022
            key = fs.Inode(stat.S_IFSOCK | (0o777 & ~umask))
            fsys.link_into(parent, leaf, key)
        self.bound[key] = sock
        sock.key = key
        return 0

    def find(self, where: tuple[str, bytes]) -> "UnixSocket | int":
        kind, name = where
        if kind == "abstract":
            return self.abstract.get(name) or -errno.ECONNREFUSED
        fsys = self.px.fs
        try:
            node = fsys.walk(name, self._cwd())
        except fs.FsError as e:
            return -e.errno
        key: Any = node
        if node.mount is not None:
            try:
                parent, leaf = fsys.parent_of(name, self._cwd())
            except fs.FsError as e:
                return -e.errno
            key = ("path", fsys.path_of(parent).rstrip(b"/") + b"/" + leaf.encode(
                errors="surrogateescape"))
        elif not stat.S_ISSOCK(node.mode):
            return -errno.ECONNREFUSED
        return self.bound.get(key) or -errno.ECONNREFUSED

    def unbind(self, sock: "UnixSocket") -> None:
        key = sock.key
        if key is None:
            return
        table = self.abstract if isinstance(key, tuple) and key[0] == "abstract" else self.bound
        name = key[1] if table is self.abstract else key
        if table.get(name) is sock:
            del table[name]


class UnixSocket(Socket):
    """What both types share: the name and its address bytes."""

    def __init__(self, px: "Personality", type_: int, protocol: int) -> None:
        super().__init__(AF_UNIX, type_, protocol)
        self.space: UnixSpace = px.unix
        self.key: Any = None
        self.addr = UNNAMED                 # our address as getsockname answers it
        self.closed = False

    def _name(self, addr: bytes, where: tuple[str, bytes]) -> bytes:
        if where[0] == "abstract":
            return addr
        return UNNAMED + where[1] + b"\0"

    def bind(self, addr: bytes) -> int:
        where = self.space.parse(addr)
        if isinstance(where, int):
            return where
        if self.key is not None:
            return -errno.EINVAL            # bound already
        err = self.space.bind(self, where)
        if err == 0:
            self.addr = self._name(addr, where)
        return err

    def getsockname(self) -> bytes:
        return self.addr

    def close(self) -> None:
        self.closed = True
        self.space.unbind(self)


class UnixStream(UnixSocket):
    def __init__(self, px: "Personality", type_: int = SOCK_STREAM, protocol: int = 0) -> None:
        super().__init__(px, type_, protocol)
        self.rx: Buf | None = None
        self.tx: Buf | None = None
        self.peer_addr = UNNAMED
        self.pending: deque[UnixStream] = deque()
        self.backlog = 0

    def listen(self, backlog: int) -> int:
        if self.rx is not None:
            return -errno.EINVAL
        if self.key is None:
            return -errno.EINVAL            # Linux autobinds; a nameless listener is unreachable
        self.listening = True
        self.backlog = max(1, min(backlog, 4096))
        return 0

    def connect(self, addr: bytes) -> Any:
        if self.rx is not None:
            return -errno.EISCONN
        if self.listening:
            return -errno.EINVAL
        where = self.space.parse(addr)
        if isinstance(where, int):
            return where
        srv = self.space.find(where)
        if isinstance(srv, int):
            return srv
        if not isinstance(srv, UnixStream) or srv.type != self.type:
            return -errno.EPROTOTYPE
        if not srv.listening or srv.closed:
            return -errno.ECONNREFUSED
        if len(srv.pending) >= srv.backlog:
            return BLOCK
        mine, theirs = local_pair()
        end = UnixStream(self.space.px, self.type, self.protocol)
        end.rx, end.tx = theirs
        end.addr, end.peer_addr = srv.addr, self.addr
        self.rx, self.tx = mine
        self.peer_addr = srv.addr
        srv.pending.append(end)
        return 0

    def accept(self) -> Any:
        if not self.listening:
            return -errno.EINVAL
        if not self.pending:
            return BLOCK
        return self.pending.popleft()

    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        if self.tx is None:
            return -errno.ENOTCONN
        return stream_send(self.tx, data)

    def recvmsg(self, n: int, flags: int) -> Any:
        if self.rx is None:
            return -errno.EINVAL
        return stream_recv(self.rx, n, flags)

    def shutdown(self, how: int) -> int:
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            return -errno.EINVAL
        if self.rx is None or self.tx is None:
            return -errno.ENOTCONN
        if how in (SHUT_WR, SHUT_RDWR):
            self.tx.shut = True
        if how in (SHUT_RD, SHUT_RDWR):
            self.rx.gone = True
            self.rx.shut = True
        return 0

    def getpeername(self) -> bytes | int:
        return self.peer_addr if self.rx is not None else -errno.ENOTCONN

    def poll(self, events: int) -> int:
        if self.listening:
            return POLLIN if self.pending else 0
        if self.rx is None or self.tx is None:
            return POLLOUT | POLLHUP        # unconnected: as Linux
        return stream_poll(self.rx, self.tx)

    def close(self) -> None:
        super().close()
        if self.rx is not None and self.tx is not None:
            self.tx.shut = True
            self.rx.gone = True
        while self.pending:
            self.pending.popleft().close()
        self.listening = False


class UnixDgram(UnixSocket):
    def __init__(self, px: "Personality", type_: int = SOCK_DGRAM, protocol: int = 0) -> None:
        super().__init__(px, type_, protocol)
        self.queue: deque[tuple[bytes, bytes]] = deque()
        self.peer: UnixDgram | None = None

    def connect(self, addr: bytes) -> int:
        if len(addr) >= 2 and struct.unpack_from("<H", addr)[0] == 0:      # AF_UNSPEC
            self.peer = None
            return 0
        where = self.space.parse(addr)
        if isinstance(where, int):
            return where
        dst = self.space.find(where)
        if isinstance(dst, int):
            return dst
        if not isinstance(dst, UnixDgram):
            return -errno.EPROTOTYPE
        self.peer = dst
        return 0

    def sendmsg(self, data: bytes, addr: bytes | None, flags: int) -> Any:
        if addr is not None:
            where = self.space.parse(addr)
            if isinstance(where, int):
                return where
            dst: Any = self.space.find(where)
            if isinstance(dst, int):
                return dst
            if not isinstance(dst, UnixDgram):
                return -errno.EPROTOTYPE
        else:
            dst = self.peer
            if dst is None:
                return -errno.ENOTCONN
        if dst.closed:
            return -errno.ECONNREFUSED
        if dst.peer is not None and dst.peer is not self:
            return -errno.EPERM             # it is connected to someone else
        if len(data) > 212992:
            return -errno.EMSGSIZE
        if len(dst.queue) >= DGRAM_QUEUE:
            return BLOCK
        dst.queue.append((bytes(data), self.addr if self.key is not None else b""))
        return len(data)

    def recvmsg(self, n: int, flags: int) -> Any:
        if not self.queue:
            return BLOCK
        data, src = self.queue[0]
        if not flags & MSG_PEEK:
            self.queue.popleft()
        return data, src

    def shutdown(self, how: int) -> int:
        return 0 if how in (SHUT_RD, SHUT_WR, SHUT_RDWR) else -errno.EINVAL

    def getpeername(self) -> bytes | int:
        return self.peer.addr if self.peer is not None else -errno.ENOTCONN

    def poll(self, events: int) -> int:
        got = POLLIN if self.queue else 0
        dst = self.peer
        if dst is None or dst.closed or len(dst.queue) < DGRAM_QUEUE:
            got |= POLLOUT
        return got


def make(px: "Personality", type_: int, protocol: int) -> UnixSocket | int:
    if protocol not in (0, AF_UNIX):
        return -errno.EPROTONOSUPPORT
    if type_ == SOCK_STREAM or type_ == 5:          # SOCK_SEQPACKET: as a stream (no records)
        return UnixStream(px, type_, protocol)
    if type_ == SOCK_DGRAM:
        return UnixDgram(px, type_, protocol)
    return -errno.ESOCKTNOSUPPORT


def pair(px: "Personality", type_: int, protocol: int) -> tuple[UnixSocket, UnixSocket] | int:
    a = make(px, type_, protocol)
    b = make(px, type_, protocol)
    if isinstance(a, int) or isinstance(b, int):
        return a if isinstance(a, int) else b          # type: ignore[return-value]
    if isinstance(a, UnixStream) and isinstance(b, UnixStream):
        (a.rx, a.tx), (b.rx, b.tx) = local_pair()
    elif isinstance(a, UnixDgram) and isinstance(b, UnixDgram):
        a.peer, b.peer = b, a
    return a, b
