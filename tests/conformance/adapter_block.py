"""Conformance adapter for the `block` device server (servers/block on DDE/Linux).

What the server needs, booted by hand in a `kernel.user.testing` System: a HAL with a disk
(`hal.testing.HalRig`), io with a policy giving the server that disk, sigma0 (the driver's
DMA memory, label SIGMA0_LABEL) and moe (a session: the server attaches its clients'
buffers through it). Each incarnation gets a fresh moe session; before a new one starts,
sigma0 is told the old one is gone (its frames come back), as the launcher does.

The valid request is `info()` through a client gate whose label the policy names: it needs
no session and no DMA, so the checks (bad input, dead clients, restart) exercise the server
loop itself. Registered in tests/conformance/servers.py as `BlockServer`.
"""
from __future__ import annotations

import json
from typing import Any

from kernel.user.testing import TaskProc

from .servers import _RpcServer

SIGMA0_LABEL = 2
IO_LABEL = 100


class BlockServer(_RpcServer):
    name = "block"
    label = 5
    request = [4]                            # info()
    wrong_types = [2, "not a list"]          # submit(reqs:list) with a str

    def __init__(self) -> None:
        from servers.block.protocol import BLOCK
        self.protocol = BLOCK
        self.incarnations = 0
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        from servers.moe import MoeAdmin
        from servers.sigma0 import boot
        self.rig = HalRig({"hal": ["disk:disk0:size=1M"]}, ram_size=64 << 20)
        self.sys = self.rig.sys
        self.sigma0 = boot(self.sys)
        self.moe = self.sys.spawn("servers.moe.server:main", "moe", caps={
            "sigma0": self.root.create_gate(1, thread=self.sigma0.thread)})
        self.moe_admin = MoeAdmin(self.root, self.root.create_gate(0, thread=self.moe.thread),
                                  timeout=30_000)
        self.io = self.sys.spawn("servers.io.server:serve", "io",
                                 args=(json.dumps({str(IO_LABEL): ["disk0"]}),),
                                 caps={"hal": self.rig.bus["hal"]})
        self.io_gate = self.root.create_gate(IO_LABEL, thread=self.io.thread)
        self.s0_gate = self.root.create_gate(SIGMA0_LABEL, thread=self.sigma0.thread)
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        if self.incarnations:                # the dead incarnation's DMA frames go back
            from servers.sigma0 import SIGMA0
            admin: Any = SIGMA0.client(self.root, self.root.create_gate(0, thread=self.sigma0.thread),
                                       timeout=30_000)
            admin.client_gone(SIGMA0_LABEL)
        self.incarnations += 1
        session = self.moe_admin.session(f"block{self.incarnations}", 1 << 20)
        policy = json.dumps({str(self.label): {"disk": "disk0", "write": True}})
        return self.sys.spawn("servers.block.server:main", "block", args=(policy,),
                              caps={"io": self.io_gate, "sigma0": self.s0_gate, "moe": session})

    def down(self) -> None:
        self.rig.close()

    def check(self, stub: Any) -> None:
        info = stub.info()
        assert info["policy"]["disk"] == "disk0" and info["policy"]["write"], info
        assert info["open"] is False and info["counters"]["refused"] == 0, info
