"""Every right a call needs is checked, on every path the call can take.

A capability whose rights lack the one a call needs gets NO_RIGHTS and changes nothing:
INVOKE to send or call through a gate — whether the server is waiting (the IPC fast path,
kernel/core/fastpath.py, would serve it) or not (the generic path) —, GRANT to pass a
capability on (TASK_MAP, or a map item in a reply, which only delivery checks), DELETE to
destroy an object. Each test then shows that the same call with the right works, so a
refusal is the right's doing. (`l4run selftest mutants` plants each missing check.)
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import Rights, unpack
from kernel.user.client import map_cap
from kernel.user.errors import NoRights

NO_INVOKE = Rights.ALL & ~Rights.INVOKE
NO_GRANT = Rights.ALL & ~Rights.GRANT


def received(kit: Any, proc: Any) -> int:
    """How many messages the kernel delivered to `proc`'s task."""
    return next(t["stats"]["received"] for t in kit.root.kernel_info()["tasks"]
                if t["id"] == proc.task_id)


@pytest.fixture(scope="module")
def echo(shared_kit: Any) -> tuple[Any, int]:
    """An echo server (always back in its open wait at once) and root's gate to it."""
    return shared_kit.server(0x5E)


def test_call_and_send_without_invoke_are_refused_while_the_server_waits(shared_kit: Any,
                                                                        echo: Any) -> None:
    kit = shared_kit
    srv, gate = echo
    a = kit.agent("no-invoke")
    without, with_ = kit.give(a, gate, NO_INVOKE), kit.give(a, gate, Rights.INVOKE)
    kit.wait_state(srv.thread, "receiving")            # a call now would take the fast path
    before = received(kit, srv)
    with pytest.raises(NoRights):
        a.do("call", without, b"x")
    with pytest.raises(NoRights):
        a.do("send", without, b"x", timeout=0)
    assert received(kit, srv) == before, "a refused message reached the server"
    assert unpack(a.do("call", with_, b"x")["data"])["label"] == 0x5E


def test_call_without_invoke_to_a_busy_server_is_no_rights_not_a_timeout(shared_kit: Any) -> None:
    kit = shared_kit
    busy = kit.spawn("sleeper", "busy")                 # never waits: only the generic path
    gate = kit.root.create_gate(0x5F, thread=busy.thread)
    a = kit.agent("no-invoke-busy")
    without = kit.give(a, gate, NO_INVOKE)
    with pytest.raises(NoRights):
        a.do("call", without, b"x", snd_timeout=0)
    with pytest.raises(NoRights):
        a.do("send", without, b"x", timeout=0)


def test_task_map_needs_grant_on_the_source(shared_kit: Any) -> None:
    kit = shared_kit
    a, b = kit.agent("mapper"), kit.agent("mapped")
    gate = kit.root.create_gate(0x60, thread=b.thread)
    to_b = kit.give(a, b.task, Rights.ALL)               # a may write b's capability space
    plain, grantable = kit.give(a, gate, NO_GRANT), kit.give(a, gate, Rights.ALL)
    with pytest.raises(NoRights):
        a.do("task_map", to_b, plain, 90, Rights.INVOKE)
    with pytest.raises(Exception):
        b.do("cap_inspect", 90)                           # nothing landed
    assert a.do("task_map", to_b, grantable, 90, Rights.INVOKE) == 90
    assert b.do("cap_inspect", 90)["rights"] == int(Rights.INVOKE)


def test_a_reply_cannot_carry_a_capability_without_grant(shared_kit: Any) -> None:
    """The caller's own check (at CALL) does not see a reply's items: delivery must."""
    kit = shared_kit
    caller, server = kit.agent("reply-caller"), kit.agent("reply-server")
    gate = kit.gate_to(server, 0x61)
    to_server = kit.give(caller, gate, Rights.INVOKE)
    thing = kit.root.create_gate(0x62)
    plain, grantable = kit.give(server, thing, NO_GRANT), kit.give(server, thing, Rights.ALL)
    pending = caller.start("call", to_server, b"give me one", window=(120, 1))
    inbox: list[Any] = []
    kit.wait_state(caller.thread, "await_reply")
    while not inbox:
        inbox = server.do("inbox")
    reply = inbox[0]["reply"]
    with pytest.raises(NoRights):
        server.do("reply", reply, b"here", items=[map_cap(plain, Rights.INVOKE)])
    assert kit.state(caller.thread) == "await_reply"     # refused: nothing moved, still waiting
    server.do("reply", reply, b"here", items=[map_cap(grantable, Rights.INVOKE)])
    got = pending.result(20)
    assert got["data"] == b"here" and len(got["items"]) == 1
    assert caller.do("cap_inspect", 120)["rights"] == int(Rights.INVOKE)


def test_destroy_needs_delete(shared_kit: Any) -> None:
    kit = shared_kit
    a = kit.agent("destroyer")
    gate = kit.root.create_gate(0x63)
    no_delete = kit.give(a, gate, Rights.ALL & ~Rights.DELETE)
    with pytest.raises(NoRights):
        a.do("destroy", no_delete)
    assert kit.root.cap_inspect(gate)["type"] == "gate"   # still there
    assert a.do("cap_inspect", no_delete)["type"] == "gate"
    kit.root.destroy(gate)
