"""Conformance adapter of the DHCP server task (servers/dhcpd).

It boots a kernel with a small RAM and sigma0, an ORe switch (servers/ore, no uplink) whose
policy has one client, the DHCP server (label 1: its MAC and address), and then the server
itself as a real task with capability "net" to ORe: its stack opens the ORe session, and its
protocol (servers/dhcpd/protocol.py) is served on its main thread while the stack's pump waits
there. The checks are the protocol's: bad input, dead clients, restart (the new incarnation
opens a new ORe session). The valid request asks `stats` and `leases` (waiting through
NOT_READY while a new incarnation's stack comes up). What clients send it over the network is
checked in tests/netstack/test_dhcp.py.

Register it in tests/conformance/servers.py's ADAPTERS: `from .adapter_dhcpd import Dhcpd`.
"""
from __future__ import annotations

import json
import time
from typing import Any

from kernel.user.rpc import RemoteFailure
from kernel.user.testing import System, TaskProc

from .servers import _RpcServer

RAM_MB = 16
SIGMA0_LABEL = 9
ORE_LABEL = 1                   # the DHCP server's label at ORe
MAC = "02:00:00:00:d4:01"
IP = "10.0.2.3/24"
READY_S = 60.0


class Dhcpd(_RpcServer):
    name = "dhcpd"
    label = 1
    request = [2]                           # stats()
    wrong_types = [1, "extra"]              # leases() takes no argument

    def __init__(self) -> None:
        from servers.dhcpd.protocol import DHCPD
        self.protocol = DHCPD
        super().__init__()

    def up(self) -> None:
        from servers.sigma0 import boot
        self.sys = System(kernel_args=("--ram", str(RAM_MB)))
        sigma0 = boot(self.sys)
        policy = json.dumps({"clients": {str(ORE_LABEL): {"name": "dhcpd", "mac": MAC, "ip": IP,
                                                           "broadcast": True}}})
        ore = self.sys.spawn("servers.ore.server:main", "ore", args=(policy,), caps={
            "sigma0": self.root.create_gate(SIGMA0_LABEL, thread=sigma0.thread)})
        self.caps = {"net": self.root.create_gate(ORE_LABEL, thread=ore.thread)}
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("servers.dhcpd.server:main", "dhcpd",
                              args=("pool=10.0.2.100-10.0.2.109/24", "router=10.0.2.2"),
                              caps=self.caps)

    def check(self, stub: Any) -> None:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                st = stub.stats()
                break
            except RemoteFailure as e:
                assert e.error == "NOT_READY" and time.monotonic() < deadline, e
                time.sleep(0.2)
        assert st["server"] == IP.split("/")[0] and st["pool"] == "10.0.2.100-10.0.2.109/24", st
        assert st["lease_s"] == 600 and stub.leases() == [], st

