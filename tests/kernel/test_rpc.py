"""kernel.user.rpc: one protocol declaration drives the client stub and the server dispatch.

Real processes: the KV server is a task process (tests/kernel/rpc_tasks.py); clients are
root-created tasks in this process, or task processes of their own.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from kernel import abi
from kernel.abi import Rights
from kernel.user.client import L4
from kernel.user.rpc import (BadRequest, Protocol, RemoteFailure, ServerFault, Status, op)
from kernel.user.testing import System
from tests.kernel.rpc_tasks import KV

SERVER = "tests.kernel.rpc_tasks:kv_server"


@pytest.fixture(scope="module")
def kv_system() -> Iterator[tuple[System, int, object]]:
    """A kernel, a KV server process, and root's gate to it (label 7)."""
    s = System()
    try:
        srv = s.spawn(SERVER, "kv")
        gate = s.root.create_gate(7, thread=srv.thread)
        yield s, gate, srv
    finally:
        s.close()


def client_task(s: System, gate: int, name: str, rights: int = Rights.INVOKE) -> L4:
    """A task of its own (in this process) holding the KV gate in slot 16."""
    new = s.root.create_task(name, 16)
    s.root.task_map(new.slot, gate, 16, rights)
    return L4(s.sock, new.secret, {"kv": 16})


def test_round_trip_and_declared_reply_shapes(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "c1") as l4:
        kv = KV.client(l4, l4.caps["kv"], timeout=10_000)
        assert kv.put("a", b"1") is None
        assert kv.get("a") == b"1"
        assert kv.get(key="a") == b"1"
        st = kv.stats()
        assert st.keys >= 1 and st.caller_label == 7      # the label is the kernel's word
        assert kv.delete("a") is True
        assert kv.delete("a") is False


def test_declared_error_is_remote_failure(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "c2") as l4:
        kv = KV.client(l4, 16)
        with pytest.raises(RemoteFailure) as ei:
            kv.get("missing")
        assert ei.value.error == "NOT_FOUND" and "missing" in ei.value.reason
        assert ei.value.status == Status.FAILED


def test_server_bugs_are_server_faults_and_server_survives(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "c3") as l4:
        kv = KV.client(l4, 16)
        with pytest.raises(ServerFault) as ei:
            kv.crash()
        assert ei.value.error == "ZeroDivisionError"
        with pytest.raises(ServerFault) as ei:
            kv.lie()
        assert "undeclared" in ei.value.reason
        kv.put("still", b"alive")
        assert kv.get("still") == b"alive"


def test_stub_checks_arguments_before_sending(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "c4") as l4:
        kv = KV.client(l4, 16)
        with pytest.raises(TypeError, match="value.*bytes"):
            kv.put("k", "not bytes")
        with pytest.raises(TypeError, match="missing argument 'value'"):
            kv.put("k")
        with pytest.raises(TypeError, match="unexpected"):
            kv.get("k", bogus=1)


@pytest.mark.parametrize("data, status", [
    (b"\xc1", Status.BAD_REQUEST),                       # not msgpack
    (abi.pack({"op": 1}), Status.BAD_REQUEST),           # not [opcode, ...]
    (abi.pack([]), Status.BAD_REQUEST),
    (abi.pack([99]), Status.UNKNOWN_OP),                 # unknown opcode
    (abi.pack([2]), Status.BAD_REQUEST),                 # too few arguments
    (abi.pack([2, "a", "b"]), Status.BAD_REQUEST),       # too many
    (abi.pack([2, 5]), Status.BAD_REQUEST),              # wrong type
    (abi.pack(["get", "a"]), Status.BAD_REQUEST),        # opcode not an int
    (b"", Status.BAD_REQUEST),                           # empty
])
def test_malformed_requests_get_error_replies(kv_system, data: bytes, status: Status) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, f"raw{status}") as l4:
        msg = l4.call(16, data, rcv_timeout=10_000)
        rep = abi.unpack(msg.data)
        assert rep[0] == status and rep[0] > 0 and isinstance(rep[2], str)
        kv = KV.client(l4, 16)                           # the server still serves
        kv.put("x", b"y")
        assert kv.get("x") == b"y"


def test_wrong_proto_tag_is_unknown_op(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "tag") as l4:
        msg = l4.call(16, abi.pack([2, "x"]), proto=99, rcv_timeout=10_000)
        assert abi.unpack(msg.data)[0] == Status.UNKNOWN_OP


def test_one_way_send_is_dispatched_without_reply(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "oneway") as l4:
        l4.send(16, abi.pack([1, "sent", b"v"]), timeout=10_000)
        kv = KV.client(l4, 16)
        assert kv.get("sent") == b"v"


def test_reply_carries_a_capability(kv_system) -> None:
    s, gate, _ = kv_system
    with client_task(s, gate, "caps") as l4:
        kv = KV.client(l4, 16)
        kv.share_gate(_window=(40, 1))
        assert kv.last_items == [[1, 40, int(Rights.INVOKE)]]
        info = l4.cap_inspect(40)
        assert info["type"] == "gate" and info["label"] == 4242 and info["rights"] == Rights.INVOKE
        # Without a window the kernel refuses the reply's items: the server answers an error.
        with pytest.raises(ServerFault, match="REPLY_ITEMS|window"):
            kv.share_gate()


def test_client_task_processes_sync_and_async(kv_system) -> None:
    s, gate, _ = kv_system
    c1 = s.spawn("tests.kernel.rpc_tasks:kv_client", "pc1", args=("p", "one"),
                 caps={"kv": (gate, Rights.INVOKE)})
    c2 = s.spawn("tests.kernel.rpc_tasks:async_kv_client", "pc2", args=("q", "two"),
                 caps={"kv": (gate, Rights.INVOKE)})
    assert c1.wait(30) == 0
    assert c2.wait(30) == 0


def test_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="twice"):
        Protocol("p", [op("a", 1), op("b", 1)])
    with pytest.raises(ValueError, match="unknown type"):
        op("a", 1, ["x:complex"])
    with pytest.raises(ValueError, match="negative"):
        Protocol("p", [op("a", 1)], tag=-1)


def test_stop_ends_the_server_process() -> None:
    with System() as s:
        srv = s.spawn(SERVER, "kv2")
        gate = s.root.create_gate(1, thread=srv.thread)
        kv = KV.client(s.root, gate, timeout=10_000)
        kv.put("k", b"v")
        kv.stop()
        assert srv.wait(20) == 0


def test_server_in_process_with_bad_client_counts() -> None:
    """serve() in this process (a second thread of a task), clients from the test thread."""
    import threading

    from kernel.user.rpc import Call
    proto = Protocol("echo", [op("echo", 1, ["x"], "x"), op("bye", 2)], tag=3)

    class Impl:
        done = False

        def echo(self, call: Call, x: object) -> object:
            return x

        def bye(self, call: Call) -> None:
            self.done = True

    with System() as s:
        new = s.root.create_task("srv", 16)
        srv = L4(s.sock, new.secret)
        gate = s.root.create_gate(0, thread=new.thread)
        impl = Impl()
        out: list[int] = []
        t = threading.Thread(target=lambda: out.append(proto.serve(srv, impl, until=lambda: impl.done)))
        t.start()
        try:
            c = proto.client(s.root, gate, timeout=10_000)
            assert c.echo([1, "two", b"3"]) == [1, "two", b"3"]
            with pytest.raises(BadRequest):
                KV.client(s.root, gate, timeout=10_000).get("x")   # wrong protocol tag
            c.bye()
        finally:
            t.join(20)
            srv.close()
        assert out == [3]
