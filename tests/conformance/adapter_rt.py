"""Conformance adapter of the CPU reservation manager (servers/rt).

The manager runs as a real task with no launcher behind it (a bare `System`): a reservation
is then refused NO_TASK (nobody can confirm which task calls), which is what the valid
request checks besides `mine()`; the protocol's handling of bad input, dead clients and a
restart is the same as under l4run. Admission and enforcement are tested in tests/rt.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from kernel.user.rpc import RemoteFailure
from kernel.user.testing import TaskProc

from .servers import _RpcServer


class Rt(_RpcServer):
    name = "rt"
    request = [4]                              # mine()
    wrong_types = [1, "tid", 10_000, 1_000, 10_000]

    def __init__(self) -> None:
        from servers.rt.protocol import RT
        self.protocol = RT
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("servers.rt.server:main", "rt")

    def check(self, stub: Any) -> None:
        assert stub.mine() == []
        with pytest.raises(RemoteFailure) as e:
            stub.reserve(threading.get_native_id(), 10_000, 1_000, 10_000)
        assert e.value.error == "NO_TASK" and "launcher" in e.value.reason, e.value
