"""Sockets: the user's side of the stack, blocking calls with timeouts, like the host's.

    u = stack.udp(7)                       u.sendto(b"x", ("10.0.2.2", 7)); u.recvfrom(timeout=1)
    s = stack.tcp(); s.bind(80); s.listen(16); c, (ip, port) = s.accept(timeout=None)
    c = stack.tcp(); c.connect(("10.0.2.2", 8000), timeout=5)
    c.sendall(data); c.send(data) -> n; c.recv(65536, timeout=None) -> bytes (b"" at the end)
    c.close(); with stack.tcp() as s: ...

Errors are the host's: TimeoutError (the timeout passed; the socket stays usable),
ConnectionRefusedError (RST to our SYN), ConnectionResetError (RST, or aborted),
TimeoutError from a send/recv on a connection whose retransmissions were all lost (the
connection is gone), BrokenPipeError (send after close), OSError (a port in use, a call in
the wrong state: the caller's mistake). `timeout=None` blocks; each socket also has a default,
`settimeout`. Any thread may use a socket; one socket is not meant for two threads at once.
"""
from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import tcp, wire

if TYPE_CHECKING:
    from .stack import Stack

UDP_QUEUE = 256                    # datagrams kept per socket before new ones are dropped
Addr = tuple[str, int]


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class UdpSocket:
    def __init__(self, stack: "Stack", port: int = 0) -> None:
        self.stack = stack
        self.queue: deque[tuple[bytes, Addr]] = deque()
        self.timeout: float | None = None
        self.dropped = 0
        with stack.lock:
            self.cond = stack.condition()
            self.port = port or stack.free_port()
            if self.port in stack.udp_socks:
                raise OSError(f"UDP port {self.port} is in use")
            stack.udp_socks[self.port] = self

    def settimeout(self, t: float | None) -> None:
        self.timeout = t

    def deliver(self, data: bytes, addr: Addr) -> None:      # pump thread, lock held
        if len(self.queue) >= UDP_QUEUE:
            self.dropped += 1
            return
        self.queue.append((data, addr))
        self.cond.notify()

    def sendto(self, data: bytes, addr: Addr) -> int:
        if len(data) > 1472:
            raise OSError(f"a datagram of {len(data)} bytes does not fit one frame (max 1472)")
        dst = wire.ip_bytes(addr[0])
        with self.stack.lock:
            self.stack.ip_output(dst, wire.PROTO_UDP,
                                 wire.udp(self.stack.addr, dst, self.port, addr[1], data))
        return len(data)

    def recvfrom(self, timeout: float | None = -1.0) -> tuple[bytes, Addr]:
        t = self.timeout if timeout == -1.0 else timeout
        with self.stack.lock:
            if not self.cond.wait_for(lambda: bool(self.queue), t):
                raise TimeoutError(f"no datagram on UDP port {self.port} within {t} s")
            return self.queue.popleft()

    def close(self) -> None:
        with self.stack.lock:
            if self.stack.udp_socks.get(self.port) is self:
                del self.stack.udp_socks[self.port]

    def __enter__(self) -> "UdpSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TcpSocket:
    def __init__(self, stack: "Stack", tcb: tcp.Tcb | None = None) -> None:
        self.stack = stack
        self.tcb = tcb
        self.listener: tcp.Listener | None = None
        self.port = tcb.lport if tcb is not None else 0
        self.timeout: float | None = None

    def settimeout(self, t: float | None) -> None:
        self.timeout = t

    def _t(self, timeout: float | None) -> float | None:
        return self.timeout if timeout == -1.0 else timeout

    # -- setting up ------------------------------------------------------------------------------
    def bind(self, port: int) -> None:
        with self.stack.lock:
            if port in self.stack.listeners or any(k[0] == port for k in self.stack.tcbs):
                raise OSError(f"TCP port {port} is in use")
            self.port = port

    def listen(self, backlog: int = 16) -> None:
        with self.stack.lock:
            if not self.port:
                self.port = self.stack.free_port()
            if self.port in self.stack.listeners:
                raise OSError(f"TCP port {self.port} is in use")
            self.listener = tcp.Listener(self.stack, self.port, backlog)
            self.stack.listeners[self.port] = self.listener

    def accept(self, timeout: float | None = -1.0) -> tuple["TcpSocket", Addr]:
        lst = self.listener
        if lst is None:
            raise OSError("accept() on a socket that is not listening")
        t = self._t(timeout)
        with self.stack.lock:
            if not lst.cond.wait_for(lambda: bool(lst.ready) or lst.closed, t):
                raise TimeoutError(f"no connection on port {self.port} within {t} s")
            if lst.closed:
                raise OSError("the listening socket was closed")
            tcb = lst.ready.pop(0)
            return TcpSocket(self.stack, tcb), (wire.ip_str(tcb.rip), tcb.rport)

    def connect(self, addr: Addr, timeout: float | None = -1.0) -> None:
        t = self._t(timeout)
        rip = wire.ip_bytes(addr[0])
        with self.stack.lock:
            if self.tcb is not None or self.listener is not None:
                raise OSError("connect() on a socket already in use")
            port = self.port or self.stack.free_port()
            tcb = self.tcb = tcp.Tcb(self.stack, port, rip, addr[1])
            self.port = port
            self.stack.tcbs[tcb.key] = tcb
            tcb.open_active()
            ok = tcb.cond.wait_for(lambda: tcb.state != tcp.SYN_SENT, t)
            if not ok:
                tcb.abort()
                raise TimeoutError(f"connect to {addr[0]}:{addr[1]}: no answer within {t} s")
            if tcb.state == tcp.CLOSED:
                raise tcb.error or ConnectionRefusedError(f"connect to {addr[0]}:{addr[1]} failed")

    # -- data --------------------------------------------------------------------------------------
    def _conn(self) -> tcp.Tcb:
        if self.tcb is None:
            raise OSError("the socket is not connected")
        return self.tcb

    def send(self, data: bytes | memoryview, timeout: float | None = -1.0) -> int:
        """Queue as much of `data` as the send buffer takes (waiting for room: all of it, or
        SND_LOWAT bytes, whichever is less): its length."""
        tcb = self._conn()
        t = self._t(timeout)
        want = min(len(data), tcp.SND_LOWAT)
        with self.stack.lock:
            ok = tcb.cond.wait_for(lambda: tcb.state not in tcp.SENDING or tcb.fin_queued
                                   or tcp.SNDBUF - len(tcb.sndbuf) >= want, t)
            if tcb.state not in tcp.SENDING or tcb.fin_queued:
                if tcb.error is not None:
                    raise tcb.error
                raise BrokenPipeError(f"the connection is {tcb.state} (closed for sending)")
            n = min(len(data), tcp.SNDBUF - len(tcb.sndbuf))
            if not ok and not n:
                raise TimeoutError(f"no room to send within {t} s")
            tcb.queue(data[:n])
            return n

    def sendall(self, data: bytes, timeout: float | None = -1.0) -> None:
        deadline = _deadline(self._t(timeout))
        view = memoryview(data)
        while view:
            n = self.send(view, _left(deadline))      # copied once: into the send buffer
            view = view[n:]

    def recv(self, n: int = 65536, timeout: float | None = -1.0) -> bytes:
        """Up to `n` bytes as soon as any are there; b"" once the peer closed its side."""
        tcb = self._conn()
        t = self._t(timeout)
        with self.stack.lock:
            if not tcb.cond.wait_for(lambda: bool(tcb.rcvbuf) or tcb.peer_fin
                                     or tcb.state == tcp.CLOSED, t):
                raise TimeoutError(f"nothing received within {t} s")
            if tcb.rcvbuf:
                out = bytes(tcb.rcvbuf[:n])
                del tcb.rcvbuf[:n]
                tcb.window_opened()
                return out
            if tcb.peer_fin:
                return b""
            raise tcb.error or ConnectionResetError("the connection is closed")

    def drain(self, timeout: float | None = -1.0) -> None:
        """Wait until everything sent was acknowledged (or the connection ended)."""
        tcb = self._conn()
        t = self._t(timeout)
        with self.stack.lock:
            if not tcb.cond.wait_for(lambda: not tcb.sndbuf or tcb.state == tcp.CLOSED, t):
                raise TimeoutError(f"{len(tcb.sndbuf)} bytes still unacknowledged after {t} s")

    @property
    def state(self) -> str:
        return self.tcb.state if self.tcb is not None else ("LISTEN" if self.listener else "CLOSED")

    def close(self) -> None:
        with self.stack.lock:
            if self.listener is not None:
                lst, self.listener = self.listener, None
                lst.closed = True
                lst.cond.notify_all()
                if self.stack.listeners.get(lst.port) is lst:
                    del self.stack.listeners[lst.port]
                for t in lst.ready:
                    t.abort()
                for t in [t for t in self.stack.tcbs.values() if t.listener is lst
                          and t.state == tcp.SYN_RCVD]:
                    t.abort()
            if self.tcb is not None:
                self.tcb.close()

    def __enter__(self) -> "TcpSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
