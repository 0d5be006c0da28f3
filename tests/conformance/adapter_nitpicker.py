"""Conformance adapter of Nitpicker (servers/nitpicker), the secure GUI server.

What Nitpicker needs, booted by hand in a `kernel.user.testing` System: a HAL with a small
framebuffer (`hal.testing.HalRig`), io, sigma0, the fb device server (its policy: the whole
screen for Nitpicker's label), and moe (each incarnation of Nitpicker gets a fresh session,
made its main thread's pager, as the launcher does). No input server: Nitpicker runs without
one when the image routes none.

The valid request opens a session (the watch: root's own task capability), makes a view,
sets and checks a geometry, refuses a negative one (INVALID) and an unknown view (NO_VIEW),
and ends the session. Registered in tests/conformance/servers.py's ADAPTERS.
"""
from __future__ import annotations

import json
from typing import Any

from kernel.abi import SLOT_TASK, Rights
from kernel.user.client import map_cap
from kernel.user.errors import NoCapability
from kernel.user.rpc import RemoteFailure
from kernel.user.testing import System, TaskProc

from .servers import CALL_MS, _RpcServer

RAM_MB = 24
IO_LABEL = 20
FB_SIGMA0_LABEL = 9
FB_LABEL = 1                    # Nitpicker's label at fb
IRQ_SLOT = 3960                 # where the session's IRQ object lands in root


class Nitpicker(_RpcServer):
    name = "nitpicker"
    label = 3
    request = [10]                          # info() (NO_SESSION without a session)
    wrong_types = [8, "x", 0, 1, 1]         # refresh(x:int, ...) with a str

    def __init__(self) -> None:
        from servers.nitpicker.protocol import NITPICKER
        self.protocol = NITPICKER
        self.incarnations = 0
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        from servers.moe import MoeAdmin
        from servers.sigma0 import boot
        self.sys = System(kernel_args=("--ram", str(RAM_MB)))
        self.rig = HalRig({"hal": ["fb:fb0:width=64,height=48"]}, ram_size=RAM_MB << 20,
                          system=self.sys)
        sigma0 = boot(self.sys)
        io = self.sys.spawn("servers.io.server:serve", "io",
                            args=(json.dumps({str(IO_LABEL): ["fb0"]}),),
                            caps={"hal": self.rig.bus["hal"]})
        fb = self.sys.spawn("servers.fb.server:main", "fb", args=("fb0", str(FB_LABEL)), caps={
            "io": self.root.create_gate(IO_LABEL, thread=io.thread),
            "sigma0": self.root.create_gate(FB_SIGMA0_LABEL, thread=sigma0.thread)})
        self.fb_gate = self.root.create_gate(FB_LABEL, thread=fb.thread)
        moe = self.sys.spawn("servers.moe.server:main", "moe", caps={
            "sigma0": self.root.create_gate(1, thread=sigma0.thread)})
        self.moe_admin = MoeAdmin(self.root, self.root.create_gate(0, thread=moe.thread),
                                  timeout=CALL_MS)
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        self.incarnations += 1
        session = self.moe_admin.session(f"nitpicker{self.incarnations}", 4 << 20)
        proc = self.sys.spawn("servers.nitpicker.server:main", "nitpicker",
                              args=(f"{self.label}=conformance:64K",),
                              caps={"fb": self.fb_gate, "moe": session})
        self.root.thread_control(proc.thread, pager=session)
        return proc

    def down(self) -> None:
        try:
            self.rig.close()
        finally:
            if self.sys is not None:
                self.sys.close()

    def check(self, stub: Any) -> None:
        info = stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)], _window=(IRQ_SLOT, 1),
                         _timeout=CALL_MS)
        assert (info["name"], info["width"], info["height"]) == ("conformance", 64, 48), info
        assert self.root.cap_inspect(IRQ_SLOT)["type"] == "irq"
        v = stub.view_create("check")
        stub.view_geometry(v, 4, 4, 20, 10, 0, 0)
        for bad, error in (((v, 0, 0, -1, 5, 0, 0), "INVALID"), ((v + 99, 0, 0, 5, 5, 0, 0),
                                                                  "NO_VIEW")):
            try:
                stub.view_geometry(*bad)
                raise AssertionError(f"view_geometry{bad} was accepted")
            except RemoteFailure as e:
                assert e.error == error, e
        assert stub.info()["views"] == [v]
        stub.end()
        try:
            self.root.cap_inspect(IRQ_SLOT)
            raise AssertionError("the session's IRQ object outlived its session")
        except NoCapability:
            pass                            # Nitpicker destroyed it: our copy went with it
