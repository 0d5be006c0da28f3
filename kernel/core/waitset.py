"""The kernel loop's wait: one epoll set for every socket and descriptor the kernel watches.

Mechanism: the kernel waits on few ZeroMQ sockets (each port's ROUTER and its monitor) and
on many plain descriptors (a pidfd per task, the memory channel's connections, Linux trap
listeners, the signal wakeup pipe). `zmq.Poller` (libzmq's `zmq_poll`) rebuilds a pollfd
array of all of them and calls poll(2) twice per wait (a first pass that does not block),
so every wake-up of the loop paid for every descriptor (measured in issue 21: ~20 pidfds
polled twice per wake, the socket list rebuilt and an array allocated per poll). Here every
descriptor is registered once in one epoll set; a ZeroMQ socket is registered by its
ZMQ_FD (the descriptor libzmq signals when the socket's state may have changed), and is
asked for ZMQ_EVENTS before the wait and after its descriptor fired — ZMQ_FD is
edge-like: a send or receive may take the signal while leaving messages queued, so only
ZMQ_EVENTS says whether a message waits.

Contract (what `zmq.Poller` gives the loop, for POLLIN):
- `register(sock_or_fd, flags)` / `unregister(sock_or_fd)`; a ZeroMQ socket is watched for
  POLLIN only. Registering again changes nothing; unregistering what is not (or no longer:
  a descriptor closed first) registered is no error.
- `poll(timeout_ms)` answers [(sock_or_fd, events)] for what is ready — a ZeroMQ socket with
  a message to read, a descriptor epoll reports — or [] after `timeout_ms` (< 0: forever), or
  [] at once when a signal interrupted the wait. A descriptor comes back as the int that was
  registered.
- `hot` (the ZeroMQ sockets, with their handle and ZMQ_FD), `hot_fds` and `epfd` are read by
  the compiled loop (`_fastpath.poll`), which makes the same wait in C.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import select
from types import MethodType
from typing import Any, NamedTuple

import zmq
import zmq.backend

_EVENTS, _FD, _POLLIN = int(zmq.EVENTS), int(zmq.FD), int(zmq.POLLIN)


class Hot(NamedTuple):
    """A ZeroMQ socket in the set: the socket, libzmq's handle of it, its signal descriptor,
    and pyzmq's getsockopt bound to it (the friendly `get` converts EVENTS to an enum)."""
    sock: zmq.Socket
    handle: int
    fd: int
    events: Any


class Waitset:
    """One epoll set: ZeroMQ sockets by their ZMQ_FD, every other descriptor as it is."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self.epfd = self._ep.fileno()
        self.hot: list[Hot] = []              # ZeroMQ sockets, in registration order
        self.hot_fds: dict[int, Hot] = {}     # ZMQ_FD -> its socket
        self.fds: set[int] = set()            # plain descriptors registered

    def register(self, sock: Any, flags: int) -> None:
        if isinstance(sock, zmq.Socket):
            if any(h.sock is sock for h in self.hot):
                return
            if flags != _POLLIN:
                raise ValueError(f"Waitset watches ZeroMQ sockets for POLLIN only, "
                                 f"not events {flags}")
            get = MethodType(zmq.backend.Socket.get, sock)
            h = Hot(sock, sock.underlying, int(get(_FD)), get)
            self._ep.register(h.fd, select.EPOLLIN)
            self.hot.append(h)
            self.hot_fds[h.fd] = h
            return
        fd = sock if type(sock) is int else sock.fileno()
        mask = (select.EPOLLIN if flags & _POLLIN else 0) | (
            select.EPOLLOUT if flags & int(zmq.POLLOUT) else 0)
        if fd in self.fds:
            self._ep.modify(fd, mask)
            return
        self._ep.register(fd, mask)
        self.fds.add(fd)

    def unregister(self, sock: Any) -> None:
        if isinstance(sock, zmq.Socket):
            for h in self.hot:
                if h.sock is sock:
                    self.hot.remove(h)
                    del self.hot_fds[h.fd]
                    self._unwatch(h.fd)
            return
        fd = sock if type(sock) is int else sock.fileno()
        if fd in self.fds:
            self.fds.discard(fd)
            self._unwatch(fd)

    def _unwatch(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass                # closed first: epoll forgot it with its last reference

    def poll(self, timeout_ms: int | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = [(h.sock, _POLLIN) for h in self.hot
                                        if h.events(_EVENTS) & _POLLIN]
        wait = 0.0 if ready else (-1.0 if timeout_ms is None or timeout_ms < 0
                                  else timeout_ms / 1000)
        try:
            fired = self._ep.poll(wait)
        except InterruptedError:
            return ready
        hot_fds = self.hot_fds
        for fd, ev in fired:
            h = hot_fds.get(fd)
            if h is None:
                ready.append((fd, ev))
            elif all(s is not h.sock for s, _ in ready) and h.events(_EVENTS) & _POLLIN:
                ready.append((h.sock, _POLLIN))
        return ready

    def close(self) -> None:
        self.hot.clear()
        self.hot_fds.clear()
        self.fds.clear()
        self._ep.close()
