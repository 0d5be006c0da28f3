"""A reply capability is used once (kernel/core/ipc.py's contract), on both IPC paths.

A server that answers a call with REPLY (the generic path) or REPLY_WAIT (the fast path
serves that) and then uses the same reply capability again gets NO_CAP, and the caller gets
exactly one answer: the first. (`l4run selftest mutants` plants a reply capability that
stays usable, in each path.)
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import SLOT_TASK, Rights
from kernel.user.errors import NoCapability, Timeout


def _delivered_call(kit: Any, name: str) -> tuple[Any, Any, Any, int]:
    """An agent `caller` blocked in a call to agent `server`, which holds it in its inbox.
    Answers (caller, server, the call's Future, the reply capability)."""
    caller, server = kit.agent(f"{name}-caller"), kit.agent(f"{name}-server")
    to_server = kit.give(caller, kit.gate_to(server, 0x70), Rights.INVOKE)
    pending = caller.start("call", to_server, b"once, please")
    kit.wait_state(caller.thread, "await_reply")
    inbox: list[Any] = []
    while not inbox:
        inbox = server.do("inbox")
    assert inbox[0]["data"] == b"once, please" and inbox[0]["reply"]
    return caller, server, pending, inbox[0]["reply"]


def _answered(kit: Any, caller: Any) -> int:
    """How many messages the kernel delivered to `caller`'s task."""
    return next(t["stats"]["received"] for t in kit.root.kernel_info()["tasks"]
                if t["id"] == caller.proc.task_id)


def test_reply_twice_is_no_cap_and_the_caller_gets_one_answer(shared_kit: Any) -> None:
    kit = shared_kit
    caller, server, pending, reply = _delivered_call(kit, "generic")
    server.do("reply", reply, b"first")
    assert pending.result(20)["data"] == b"first"
    got = _answered(kit, caller)
    with pytest.raises(NoCapability):
        server.do("reply", reply, b"second")
    assert _answered(kit, caller) == got, "the second reply reached the caller"
    assert caller.do("cap_inspect", SLOT_TASK)["type"] == "task"    # still in step


def test_reply_and_wait_twice_is_no_cap(shared_kit: Any) -> None:
    kit = shared_kit
    caller, server, pending, reply = _delivered_call(kit, "fast")
    # reply, then an open wait that times out at once: nothing else is queued for it
    with pytest.raises(Timeout):
        server.do("reply_and_wait", reply, b"first", timeout=0)
    assert pending.result(20)["data"] == b"first"
    got = _answered(kit, caller)
    with pytest.raises(NoCapability):
        server.do("reply_and_wait", reply, b"second", timeout=0)
    assert _answered(kit, caller) == got, "the second reply reached the caller"
    stats = kit.root.kernel_info()["stats"]
    assert stats["fastpath"] > 0 and stats["kernel_bugs"] == 0
