"""Conformance adapter of the ORe switch (servers/ore).

It boots a kernel with a small RAM and sigma0 (the session blocks' memory), then starts ORe
as a real task with capability "sigma0" and a policy for one client label, without an uplink
(the uplink is a nic session: tests/ore/test_ore.py boots that path). The checks are the
protocol's: bad input, dead clients, restart. The valid request asks `info` (the NIC op ORe
answers with the client's configured MAC and ip), opens a session as root (its block lands
at VADDR, never touched), reads its counters, turns broadcast on through ORe's own op,
releases it and finds it gone.

Register it in tests/conformance/servers.py's ADAPTERS: `from .adapter_ore import Ore`.
"""
from __future__ import annotations

import json
from typing import Any

from kernel.user.errors import NoCapability
from kernel.user.rpc import RemoteFailure
from kernel.user.testing import System, TaskProc
from kernel.user.vm import window

from .servers import CALL_MS, _RpcServer

RAM_MB = 16
SIGMA0_LABEL = 9
VADDR = 0x32_0000_0000          # where a session's block lands in root (never touched)
RECV_SLOT = 3970                # where its kick and signal IRQs land in root
MAC = "02:00:00:00:c0:01"
IP = "10.0.2.15/24"


class Ore(_RpcServer):
    name = "ore"
    label = 1                               # in ORe's policy
    request = [3]                           # info()
    wrong_types = [6, 1, "on"]              # broadcast(session:int, on:bool) with a str

    def __init__(self) -> None:
        from servers.ore.protocol import ORE
        self.protocol = ORE
        super().__init__()

    def up(self) -> None:
        from servers.sigma0 import boot
        self.sys = System(kernel_args=("--ram", str(RAM_MB)))
        sigma0 = boot(self.sys)
        self.caps = {"sigma0": self.root.create_gate(SIGMA0_LABEL, thread=sigma0.thread)}
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        policy = json.dumps({"clients": {str(self.label): {"name": "conformance", "mac": MAC,
                                                           "ip": IP}}})
        return self.sys.spawn("servers.ore.server:main", "ore", args=(policy,), caps=self.caps)

    def check(self, stub: Any) -> None:
        from servers.nic.stream import SESSION_ORDER
        info = stub.info()
        assert info["mac"] == MAC and info["ip"] == IP and info["switch"] == "ore", info
        s = stub.open(_window=window(VADDR, SESSION_ORDER, RECV_SLOT, 2), _timeout=CALL_MS)
        assert s["order"] == SESSION_ORDER and s["mac"] == MAC and s["ip"] == IP, s
        assert [self.root.cap_inspect(RECV_SLOT + i)["type"] for i in (0, 1)] == ["irq", "irq"]
        st = stub.stats(s["session"])
        assert st["session"] == s["session"] and st["tx_frames"] == 0, st
        assert stub.broadcast(s["session"], True) is True
        stub.release(s["session"])
        for i in (0, 1):
            try:
                self.root.cap_inspect(RECV_SLOT + i)
                raise AssertionError("a session's IRQ object outlived its session")
            except NoCapability:
                pass                        # the server deleted it: our copy went with it
        try:
            stub.stats(s["session"])
            raise AssertionError("stats of a released session answered")
        except RemoteFailure as e:
            assert e.error == "INVALID", e
