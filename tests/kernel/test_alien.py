"""Alien threads (paper §4.1): every system call of an alien thread is first reported to its
exception handler ("before"), which allows or denies it; an allowed call runs and the handler
is told how it ended ("after") before the thread gets its answer.

Two kinds of handler are used: the test's main thread answering each report by hand (to see
the exact sequence), and a handler thread of the root task with a policy (to drive an agent
through many calls).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

import pytest

from kernel.abi import AlienVerdict, Err, Proto, Rights, Sys, unpack
from kernel.user.errors import Denied, InvalidArgument, NoCapability, Timeout
from kernel.user.testing import wait_for

H_LABEL = 0xA11E


def go(kit: Any, name: str) -> tuple[str, dict[str, str]]:
    path = os.path.join(kit.sys.run_dir, f"go-{name}")
    return path, {"L4_TEST_GO": path}


def test_allow_runs_the_call_and_reports_after_deny_fails_it(kit: Any) -> None:
    handler = kit.root.create_gate(H_LABEL)
    path, env = go(kit, "w")
    proc = kit.sys.spawn("tests.kernel.tasks:alien_worker", "alien", handler=handler, env=env)
    kit.root.thread_control(proc.thread, alien=True)
    open(path, "w").close()

    msg = kit.collect(H_LABEL)                           # 1st FACTORY_INFO: before
    body = msg.body()
    assert msg.proto == Proto.ALIEN and msg.reply
    assert body["phase"] == "before" and body["call"] == "FACTORY_INFO"
    assert body["sysno"] == Sys.FACTORY_INFO and body["task"] == "alien"
    kit.root.reply(msg.reply, proto=AlienVerdict.ALLOW)
    msg = kit.collect(H_LABEL)                           # … it ran: after
    body = msg.body()
    assert body["phase"] == "after" and body["call"] == "FACTORY_INFO" and body["err"] == Err.OK
    kit.root.reply(msg.reply)                            # only now the thread gets its answer
    msg = kit.collect(H_LABEL)                           # 2nd FACTORY_INFO: before → deny
    assert msg.body()["phase"] == "before" and msg.body()["call"] == "FACTORY_INFO"
    kit.root.reply(msg.reply, proto=AlienVerdict.DENY)

    # The worker ends (its EXIT is an alien call too); allow whatever comes until the death notice.
    seen = []
    while True:
        msg = kit.collect(H_LABEL)
        if msg.proto == Proto.EXCEPTION:
            assert msg.body()["event"] == "exit"
            break
        seen.append((msg.body()["phase"], msg.body()["call"]))
        if msg.reply:
            kit.root.reply(msg.reply, proto=AlienVerdict.ALLOW)
    assert ("before", "EXIT") in seen
    assert proc.wait() == 0, "the worker saw: first call allowed and answered, second denied"


def test_no_answering_handler_means_denied(kit: Any) -> None:
    nowhere = kit.root.create_gate(0xDEAD, thread=None)   # a gate bound to no thread
    path, env = go(kit, "o")
    proc = kit.sys.spawn("tests.kernel.tasks:alien_orphan", "orphan", handler=nowhere, env=env)
    kit.root.thread_control(proc.thread, alien=True)
    open(path, "w").close()
    assert proc.wait() == 0
    kit.wait_gone(proc)


def test_alien_needs_a_handler(kit: Any) -> None:
    a = kit.agent("plain")
    with pytest.raises(InvalidArgument):
        kit.root.thread_control(a.thread, alien=True)
    assert kit.root.cap_inspect(a.thread)["alien"] is False


class PolicyHandler:
    """A root thread that answers alien reports: DENY for the calls named in `deny`, else ALLOW.
    It records every report it saw."""

    def __init__(self, kit: Any, deny: set[str]) -> None:
        self.l4, slot = kit._root_thread()
        self.gate = kit.root.create_gate(H_LABEL, thread=slot)
        self.deny = deny
        self.reports: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, name="alien-handler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        reply, proto = 0, 0
        while not self.stop:
            try:
                msg = self.l4.reply_and_wait(reply, b"", proto=proto, timeout=100)
            except Timeout:
                reply = 0
                continue
            body = unpack(msg.data)
            with self.lock:
                self.reports.append(body)
            reply = msg.reply
            denied = body.get("phase") == "before" and body.get("call") in self.deny
            proto = AlienVerdict.DENY if denied else AlienVerdict.ALLOW

    def seen(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.reports if pred(r)]

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)


def test_alien_agent_every_call_is_reported_and_policy_applies(kit: Any) -> None:
    srv, svc = kit.server(0x5)
    a = kit.agent("hybrid", caps={"svc": (svc, Rights.INVOKE)})
    h = PolicyHandler(kit, deny={"CAP_INSPECT"})
    try:
        kit.root.thread_control(a.thread, handler=h.gate, alien=True)
        r = a.do("call", a.caps["svc"], b"through the handler")
        assert unpack(r["data"])["data"] == b"through the handler"
        with pytest.raises(Denied):
            a.do("cap_inspect", a.caps["svc"])
        with pytest.raises(NoCapability):                # allowed, and it failed on its own
            a.do("cap_delete", 999)
        assert a.do("factory_info")["limit"] == 64
        calls = h.seen(lambda r: r["phase"] == "before")
        names = [r["call"] for r in calls]
        for name in ("CALL", "CAP_INSPECT", "CAP_DELETE", "FACTORY_INFO"):
            assert name in names
        call_before = next(r for r in calls if r["call"] == "CALL")
        assert call_before["args"][0] == a.caps["svc"]
        assert call_before["payload_len"] == len(b"through the handler")
        after = {r["call"]: r["err"] for r in h.seen(lambda r: r["phase"] == "after")}
        assert after["CALL"] == Err.OK and after["CAP_DELETE"] == Err.NO_CAP
        assert after["FACTORY_INFO"] == Err.OK
        assert "CAP_INSPECT" not in after                # a denied call has no "after"
        # the alien flag can be lifted again; then the handler sees nothing more
        kit.root.thread_control(a.thread, alien=False)
        a.do("factory_info")                             # (its control loop may report once)
        n = len(h.reports)
        a.do("factory_info")
        a.do("factory_info")
        assert len(h.reports) == n
    finally:
        h.close()


def test_handler_dying_with_a_report_in_hand_denies_the_call(kit: Any) -> None:
    h = kit.agent("handler")                         # reports land in its inbox, unanswered
    gate = kit.gate_to(h, H_LABEL)
    path, env = go(kit, "d")
    proc = kit.sys.spawn("tests.kernel.tasks:alien_orphan", "orphan2", handler=gate, env=env)
    kit.root.thread_control(proc.thread, alien=True)
    open(path, "w").close()
    held: list[Any] = []
    wait_for(lambda: bool(held.extend(h.do("inbox")) or held), what="the report at the handler")
    assert unpack(held[0]["data"])["phase"] == "before" and held[0]["reply"]
    assert proc.proc.poll() is None                  # the call is held, the worker waits
    h.kill()
    assert proc.wait() == 0, "the held call failed with Denied once its handler died"
