"""The kernel's IPC trace (kernel/core/trace.py, TRACE): off records nothing; on, a call's
send, delivery and reply are recorded with both threads' ids and names and pair up by the
caller; an error answer (a timeout) and a task's death are recorded; the call's argument
checks answer INVALID."""
from __future__ import annotations

import pytest

from kernel.abi import Err
from kernel.user.errors import L4Error
from kernel.user.testing import System


def drain_all(l4) -> list[dict]:
    events: list[dict] = []
    while True:
        got = l4.trace("drain")["events"]
        if not got:
            return events
        events += got


def test_trace_records_a_call_an_error_and_a_death() -> None:
    with System() as s:
        assert s.root.trace("status")["on"] is False
        srv = s.spawn("tests.kernel.rpc_tasks:echo_server", "echo-traced")
        gate = s.root.create_gate(7, thread=srv.thread)
        assert s.root.call(gate, b"warm", rcv_timeout=20_000).data == b"warm"
        assert s.root.trace("drain")["events"] == [], "off: nothing is recorded"

        st = s.root.trace("on", 1000)
        assert st["on"] and st["capacity"] == 1000 and st["held"] == 0
        assert s.root.call(gate, b"abcd", proto=3, rcv_timeout=20_000).data == b"abcd"
        lonely = s.root.create_gate(8)          # bound to root's main thread, nobody waits
        with pytest.raises(L4Error) as e:
            s.root.call(lonely, b"x", snd_timeout=0)
        assert e.value.err == Err.TIMEOUT
        assert s.root.call(gate, b"stop", rcv_timeout=20_000).data == b"bye"
        assert srv.wait(20) == 0
        s.root.trace("off")
        events = drain_all(s.root)
        assert s.root.trace("status")["held"] == 0

        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and all(isinstance(e["ts"], int) for e in events)
        root_th = next(e["th"] for e in events if e["ev"] == "send" and e["name"] == "root")
        sends = [e for e in events if e["ev"] == "send" and e["th"] == root_th
                 and e["label"] == 7]
        recvs = [e for e in events if e["ev"] == "recv" and e["th"] == root_th
                 and e["to_name"] == "echo-traced"]
        replies = [e for e in events if e["ev"] == "reply" and e["to_th"] == root_th
                   and e["name"] == "echo-traced"]
        assert len(sends) == 2 and len(recvs) == 2 and len(replies) == 2, events
        assert sends[0]["size"] == 4 and sends[0]["proto"] == 3 and sends[0]["call"]
        assert recvs[0]["reply"] > 0 and recvs[0]["label"] == 7
        assert sends[0]["seq"] < recvs[0]["seq"] < replies[0]["seq"] < sends[1]["seq"]
        errors = [e for e in events if e["ev"] == "error"]
        assert any(e["err"] == "TIMEOUT" and e["th"] == root_th for e in errors)
        assert any(e["ev"] == "death" and e["name"] == "echo-traced" for e in events)


def test_trace_checks_its_arguments() -> None:
    with System() as s:
        for action, limit in (("sideways", 0), ("on", -1), ("drain", 1 << 21)):
            with pytest.raises(L4Error) as e:
                s.root.trace(action, limit)
            assert e.value.err == Err.INVALID
        assert s.root.trace("status")["on"] is False
