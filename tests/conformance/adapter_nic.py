"""Conformance adapter of the nic device server (servers/nic).

It boots a kernel with a small RAM, a HAL (`hal.testing.HalRig`) with a loopback NIC, sigma0
(DDEKit's memory) and io (policy: nic0 for the driver's label), then starts the server as a
real task with capabilities "io" and "sigma0": the l4nic driver loads in it through the
DDE/Linux glue, as in an image. The HAL's RAM is the rig's own memfd here, not the kernel's,
so frames are not checked (tests/dde_linux/test_net.py does that in a booted image); the
checks are the protocol's: bad input, dead clients, restart. The valid request opens a
session as root (its block lands at VADDR, never touched), reads its counters, releases it
and finds it gone.

Register it in tests/conformance/servers.py's ADAPTERS: `from .adapter_nic import Nic`.
"""
from __future__ import annotations

import json
from typing import Any

from kernel.user.errors import NoCapability
from kernel.user.rpc import RemoteFailure
from kernel.user.testing import System, TaskProc
from kernel.user.vm import window

from .servers import CALL_MS, _RpcServer

RAM_MB = 16                     # the kernel's and the HAL's RAM: sigma0's frames lie inside both
IO_LABEL = 20                   # the driver's label at io (its policy)
SIGMA0_LABEL = 9
VADDR = 0x31_0000_0000          # where a session's block lands in root (never touched)
RECV_SLOT = 3960                # where its kick and signal IRQs land in root


class Nic(_RpcServer):
    name = "nic"
    label = 1                               # in the server's policy
    request = [3]                           # info()
    wrong_types = [4, "one"]                # stats(session:int) with a str

    def __init__(self) -> None:
        from servers.nic.protocol import NIC
        self.protocol = NIC
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        from servers.sigma0 import boot
        self.sys = System(kernel_args=("--ram", str(RAM_MB)))
        self.rig = HalRig({"hal": ["nic:nic0:backend=loopback"]}, ram_size=RAM_MB << 20,
                          system=self.sys)
        sigma0 = boot(self.sys)
        io = self.sys.spawn("servers.io.server:serve", "io",
                            args=(json.dumps({str(IO_LABEL): ["nic0"]}),),
                            caps={"hal": self.rig.bus["hal"]})
        self.caps = {"io": self.root.create_gate(IO_LABEL, thread=io.thread),
                     "sigma0": self.root.create_gate(SIGMA0_LABEL, thread=sigma0.thread)}
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        policy = json.dumps({"clients": {str(self.label): {"name": "conformance"}}})
        return self.sys.spawn("servers.nic.server:main", "nic", args=(policy,), caps=self.caps)

    def down(self) -> None:
        try:
            self.rig.close()
        finally:
            if self.sys is not None:
                self.sys.close()

    def check(self, stub: Any) -> None:
        from servers.nic.stream import SESSION_ORDER
        info = stub.info()
        assert info["device"] == "eth0" and len(info["mac"]) == 17, info
        s = stub.open(_window=window(VADDR, SESSION_ORDER, RECV_SLOT, 2), _timeout=CALL_MS)
        assert s["order"] == SESSION_ORDER and s["mac"] == info["mac"], s
        assert [self.root.cap_inspect(RECV_SLOT + i)["type"] for i in (0, 1)] == ["irq", "irq"]
        assert stub.stats(s["session"])["session"] == s["session"]
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
