"""Conformance adapters of the fb and input device servers (servers/fb, servers/input).

Each boots a kernel with a small RAM, a HAL (`hal.testing.HalRig`) with the server's device,
sigma0 (DDEKit's memory) and io (policy: the device for the driver's label), then starts the
server as a real task with capabilities "io" and "sigma0" — the DDE/Linux driver loads in it
as in an image. The HAL's RAM is the rig's own memfd here, not the kernel's, so what the
driver scans out is not checked (tests/dde_linux/test_fb_input.py does that in a booted
image); the checks are the protocol's: bad input, dead clients, restart.

Register them in tests/conformance/servers.py's ADAPTERS: `from .adapter_gui import Fb, Input`.
"""
from __future__ import annotations

import json
from typing import Any

from kernel.abi import SLOT_TASK, Rights
from kernel.user.client import map_cap
from kernel.user.errors import NoCapability
from kernel.user.rpc import RemoteFailure
from kernel.user.testing import System, TaskProc
from kernel.user.vm import window

from .servers import CALL_MS, _RpcServer

RAM_MB = 16                     # the kernel's and the HAL's RAM: sigma0's frames lie inside both
IO_LABEL = 20                   # the driver's label at io (its policy)
SIGMA0_LABEL = 9
VADDR = 0x30_0000_0000          # where the session's memory lands in root (never touched)
RECV_SLOT = 3950                # where the input session's IRQ object lands in root


class _DriverServer(_RpcServer):
    """A DDE/Linux device server task with its device behind a HAL and io."""
    device = ""
    target = ""
    args: tuple[str, ...] = ()

    def up(self) -> None:
        from hal.testing import HalRig
        from servers.sigma0 import boot
        self.sys = System(kernel_args=("--ram", str(RAM_MB)))
        self.rig = HalRig({"hal": [self.device]}, ram_size=RAM_MB << 20, system=self.sys)
        sigma0 = boot(self.sys)
        io = self.sys.spawn("servers.io.server:serve", "io",
                            args=(json.dumps({str(IO_LABEL): [self.device.split(":")[1]]}),),
                            caps={"hal": self.rig.bus["hal"]})
        self.caps = {"io": self.root.create_gate(IO_LABEL, thread=io.thread),
                     "sigma0": self.root.create_gate(SIGMA0_LABEL, thread=sigma0.thread)}
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn(self.target, self.name, args=self.args, caps=self.caps)

    def down(self) -> None:
        try:
            self.rig.close()
        finally:
            if self.sys is not None:
                self.sys.close()


class Fb(_DriverServer):
    name = "fb"
    device = "fb:fb0:width=64,height=48"
    target = "servers.fb.server:main"
    args = ("fb0", "1")                     # label 1: the whole screen
    request = [1]                           # mode()
    wrong_types = [3, "x", 0, 1, 1]         # refresh(x:int, ...) with a str

    def __init__(self) -> None:
        from servers.fb.protocol import FB
        self.protocol = FB
        super().__init__()

    def check(self, stub: Any) -> None:
        m = stub.mode()
        assert (m["width"], m["height"], m["format"]) == (64, 48, "XRGB8888"), m
        stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)], _window=window(VADDR, m["order"]))
        stub.refresh(0, 0, 64, 48)
        try:
            stub.refresh(0, 0, 65, 48)
            raise AssertionError("a rectangle outside the viewport was accepted")
        except RemoteFailure as e:
            assert e.error == "INVALID", e
        assert stub.stats()["refused"] == 1
        stub.end()


class Input(_DriverServer):
    name = "input"
    device = "input:input0"
    target = "servers.input.server:main"
    args = ("1",)                           # label 1 may read input
    request = [3]                           # stats() (NO_SESSION without a session)
    wrong_types = [2, 5]                    # end() with an argument

    def __init__(self) -> None:
        from servers.input.protocol import INPUT
        self.protocol = INPUT
        super().__init__()

    def check(self, stub: Any) -> None:
        from servers.input.protocol import ENTRIES, RING_ORDER
        info = stub.open(_items=[map_cap(SLOT_TASK, Rights.NONE)],
                         _window=window(VADDR, RING_ORDER, RECV_SLOT, 1), _timeout=CALL_MS)
        assert info["entries"] == ENTRIES and info["label"] == self.label, info
        assert self.root.cap_inspect(RECV_SLOT)["type"] == "irq"
        assert stub.stats()["session"]
        stub.end()
        try:
            self.root.cap_inspect(RECV_SLOT)
            raise AssertionError("the session's IRQ object outlived its session")
        except NoCapability:
            pass                            # the server destroyed it: our copy went with it
        try:
            stub.stats()
            raise AssertionError("stats answered after end")
        except RemoteFailure as e:
            assert e.error == "NO_SESSION", e


ADAPTERS = [Fb, Input]
