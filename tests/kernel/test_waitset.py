"""The kernel loop's waitset (kernel/core/waitset.py): what zmq.Poller answered, from one
epoll set — real ZeroMQ sockets and real descriptors, no kernel."""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest
import zmq

from kernel.core.waitset import Waitset


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket, Waitset]]:
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    router.bind("inproc://ws")
    dealer.connect("inproc://ws")
    ws = Waitset()
    try:
        yield router, dealer, ws
    finally:
        ws.close()
        router.close(0)
        dealer.close(0)
        ctx.term()


def _until(ws: Waitset, want: Any, seconds: float = 5.0) -> list[tuple[Any, int]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = ws.poll(100)
        if any(s is want or s == want for s, _ in got):
            return got
    raise AssertionError(f"{want!r} never became ready")


def test_a_socket_with_a_message_is_ready_even_after_its_signal_was_taken(pair: Any) -> None:
    router, dealer, ws = pair
    ws.register(router, zmq.POLLIN)
    assert ws.poll(0) == []
    dealer.send(b"hi")
    _until(ws, router)
    # EVENTS (as a send would) takes ZMQ_FD's signal; the message still waits: ready.
    assert router.get(zmq.EVENTS) & zmq.POLLIN
    assert ws.poll(0) == [(router, zmq.POLLIN)]
    router.recv_multipart()
    assert ws.poll(0) == []


def test_descriptors_come_back_as_registered_and_go_when_unregistered(pair: Any) -> None:
    router, _, ws = pair
    r, w = os.pipe()
    try:
        ws.register(router, zmq.POLLIN)
        ws.register(r, zmq.POLLIN)
        ws.register(r, zmq.POLLIN)                 # again: no change, no error
        os.write(w, b"x")
        assert [fd for fd, _ in ws.poll(1000)] == [r]
        ws.unregister(r)
        assert ws.poll(0) == []
        ws.unregister(r)                           # not registered (any more): no error
    finally:
        os.close(r)
        os.close(w)
    r2, w2 = os.pipe()
    ws.register(r2, zmq.POLLIN)
    os.close(r2)                                   # closed before it is unregistered
    os.close(w2)
    ws.unregister(r2)


def test_timeout_and_poll_only_for_sockets(pair: Any) -> None:
    router, _, ws = pair
    ws.register(router, zmq.POLLIN)
    t = time.monotonic()
    assert ws.poll(50) == []
    assert time.monotonic() - t >= 0.045
    other = router.context.socket(zmq.PAIR)
    try:
        with pytest.raises(ValueError, match="POLLIN only"):
            ws.register(other, zmq.POLLOUT)
    finally:
        other.close(0)
    ws.unregister(router)
    assert ws.hot == [] and ws.hot_fds == {}
