"""The server framework's own contracts (kernel.user.rpc), the ones every server inherits:

- kernel messages go to the handler `KERNEL_HANDLERS` names, with the decoded payload; a
  kind without a handler is answered UNKNOWN_OP, with proto DENY (never "allow" an alien
  call by accident);
- every error reason is bounded by MAX_REASON;
- the dispatch checks before it acts: a foreign tag, an admin op through a client gate, a
  request without its declared capability items never reach the implementation, and the
  capabilities that came with a refused request, or beyond what the op declares, do not
  stay in the receive window to block the next request's;
- a reply the kernel refuses (too big) is answered with an error instead, and the loop goes on.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from kernel.abi import AlienVerdict, Proto, pack, unpack
from kernel.user.client import L4, Message
from kernel.user.rpc import (ADMIN_LABEL, MAX_REASON, Call, Protocol, Reply, RemoteFailure,
                             ServerFault, Status, error_answer, kernel_answer, op)
from kernel.user.testing import System

P = Protocol("probe", [
    op("echo", 1, ["x:str"], "x"),
    op("big", 2, ["n:int"], "blob"),
    op("reset", 3, [], None, admin=True),
    op("take", 4, [], "count", caps_in=1),
    op("bye", 5),
], tag=0x7072)


class Impl:
    def __init__(self, l4: Any = None) -> None:
        self.l4 = l4
        self.calls: list[str] = []
        self.done = False

    def echo(self, call: Call, x: str) -> str:
        return x

    def big(self, call: Call, n: int) -> bytes:
        return b"x" * n

    def reset(self, call: Call) -> None:
        self.calls.append("reset")

    def take(self, call: Call) -> int:
        self.calls.append("take")
        self.l4.cap_delete(call.items[0][1])        # the implementation owns what it took
        return len(call.items)

    def bye(self, call: Call) -> None:
        self.done = True

    def on_page_fault(self, call: Call, body: dict) -> Reply:
        return Reply(None, [[3, body["addr"], 12, 6]])


def _msg(proto: int, body: Any, reply: int = 9) -> Message:
    return Message(label=5, rights=0, reply=reply, proto=proto, items=[], data=pack(body))


def test_kernel_messages_go_to_their_handler() -> None:
    data, items, tag = kernel_answer(Impl(), _msg(Proto.PAGE_FAULT, {"addr": 0x5000}))
    assert unpack(data) == [Status.OK, None] and items == [[3, 0x5000, 12, 6]] and tag == 0
    data, items, tag = kernel_answer(Impl(), _msg(Proto.ALIEN, {"phase": "before"}))
    assert unpack(data)[0] == Status.UNKNOWN_OP and tag == AlienVerdict.DENY and not items


def test_reasons_are_bounded() -> None:
    status, error, reason = unpack(error_answer(Status.FAILED, "E" * 999, "r" * 70_000))
    assert status == Status.FAILED and len(error) <= MAX_REASON and len(reason) <= MAX_REASON


@pytest.fixture(scope="module")
def server() -> Any:
    """P served in this process by a second task's thread; root's client and admin gates."""
    with System() as s:
        new = s.root.create_task("probe", 16)
        srv = L4(s.sock, new.secret)
        impl = Impl(srv)
        t = threading.Thread(target=lambda: P.serve(srv, impl, window=(200, 1),
                                                    until=lambda: impl.done))
        t.start()
        client = s.root.create_gate(1, thread=new.thread)
        admin = s.root.create_gate(ADMIN_LABEL, thread=new.thread)
        try:
            yield (s, impl, client, P.client(s.root, client, timeout=10_000),
                   P.client(s.root, admin, timeout=10_000))
        finally:
            P.client(s.root, client, timeout=10_000).bye()
            t.join(20)
            srv.close()


def test_checks_come_before_the_implementation(server: Any) -> None:
    s, impl, gate, c, admin = server
    with pytest.raises(RemoteFailure) as e:
        c.reset()
    assert e.value.error == "DENIED" and impl.calls == []
    admin.reset()
    assert impl.calls == ["reset"]
    raw = unpack(s.root.call(gate, pack([4]), proto=P.tag, rcv_timeout=10_000).data)
    assert raw[0] == Status.BAD_REQUEST and "capability" in raw[2] and impl.calls == ["reset"]


def test_a_refused_reply_becomes_an_error_and_the_loop_goes_on(server: Any) -> None:
    s, impl, gate, c, admin = server
    with pytest.raises(ServerFault) as e:
        c.big(100_000)                           # more than a message holds
    assert e.value.error == "REPLY_REFUSED"
    assert c.echo("still here") == "still here"


def test_capabilities_of_a_refused_request_do_not_block_the_window(server: Any) -> None:
    s, impl, gate, c, admin = server
    cap = [[1, gate, 1]]                         # any capability of ours will do (MAP_CAP)
    for _ in range(3):                           # wrong arguments, each with a capability
        raw = unpack(s.root.call(gate, pack([4, "extra"]), proto=P.tag, items=cap,
                                 rcv_timeout=10_000).data)
        assert raw[0] == Status.BAD_REQUEST
    assert c.take(_items=cap) == 1               # the window is free for the next one


def test_capabilities_an_op_does_not_declare_are_dropped(server: Any) -> None:
    s, impl, gate, c, admin = server
    cap = [[1, gate, 1]]
    for _ in range(3):                           # echo takes no capability: each is deleted
        assert c.echo("x", _items=cap) == "x"
    assert c.take(_items=cap) == 1
