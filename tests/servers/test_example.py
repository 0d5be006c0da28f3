"""servers/example: the model server, run as a real task process, through its own stub.

Two clients (gate labels 1 and 2) and the launcher's admin gate (label 0) of one store: each
client sees only its keys, a missing key is the declared NOT_FOUND, admin ops are DENIED
through a client gate and work through the admin gate.
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.user.rpc import ADMIN_LABEL, BadRequest, RemoteFailure
from kernel.user.testing import System
from servers.example.protocol import KV

CALL_MS = 20_000


def test_example_store_as_a_task_process() -> None:
    with System() as s:
        srv = s.spawn("servers.example.server:main", "kv")
        a, b, admin = (KV.client(s.root, s.root.create_gate(label, thread=srv.thread),
                                 timeout=CALL_MS) for label in (1, 2, ADMIN_LABEL))
        ka: Any = a
        kb: Any = b
        ka.put("colour", b"green")
        kb.put("colour", b"red")
        assert ka.get("colour") == b"green" and kb.get("colour") == b"red"   # one space each
        assert ka.keys() == ["colour"]
        with pytest.raises(RemoteFailure) as e:
            kb.get("size")
        assert e.value.error == "NOT_FOUND"
        with pytest.raises(RemoteFailure) as e:
            ka.forget(2)                                  # a client is no admin
        assert e.value.error == "DENIED"
        with pytest.raises(TypeError):
            ka.put("colour", "not bytes")                 # the stub checks before sending
        adm: Any = admin
        assert adm.usage() == {"1": 5, "2": 3}
        assert adm.forget(2) == 1
        assert kb.keys() == [] and ka.get("colour") == b"green"
        raw = s.root.call(s.root.create_gate(3, thread=srv.thread), b"\xc1", proto=KV.tag,
                          rcv_timeout=CALL_MS)
        assert KV.decode_reply(KV.ops["get"], raw.data).__class__ is BadRequest
        assert srv.proc.poll() is None
