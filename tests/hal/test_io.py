"""The io server hands each driver exactly the devices its policy names (real processes)."""
from __future__ import annotations

import json
import os

import pytest

from hal.testing import HalRig
from hal.driver import DeviceHandle
from kernel.abi import Rights
from kernel.user.client import L4
from kernel.user.errors import NoCapability
from kernel.user.rpc import RemoteFailure
from servers.io.protocol import ADMIN_LABEL, IO

POLICY = {"20": ["disk0"], "21": ["timer0", "disk0"]}


def client(rig: HalRig, gate: int, name: str) -> L4:
    """A task of its own (in this process) holding an io gate in slot 16."""
    new = rig.root.create_task(name, 32)
    rig.root.task_map(new.slot, gate, 16, Rights.INVOKE)
    return L4(rig.sys.sock, new.secret, {"io": 16})


def test_io_policy_open_deny_revoke() -> None:
    with HalRig({"hal": ["timer:timer0", "disk:disk0:size=64K"]}, ram_size=1 << 20) as rig:
        io = rig.sys.spawn("servers.io.server:serve", "io", args=(json.dumps(POLICY),),
                           caps={"hal": rig.bus["hal"]})
        g20 = rig.root.create_gate(20, thread=io.thread)
        g21 = rig.root.create_gate(21, thread=io.thread)
        admin = rig.root.create_gate(ADMIN_LABEL, thread=io.thread)

        # a real driver process: disk0 allowed, timer0 denied, DMA write lands on the image
        drv = rig.sys.spawn("tests.hal.drivers:disk_driver", "diskdrv", args=("7", "hello from a driver"),
                            caps={"io": (g20, Rights.INVOKE)})
        assert drv.wait(60) == 0
        with open(os.path.join(rig.run_dir, "disk0.img"), "rb") as f:
            f.seek(7 * 512)
            assert f.read(19) == b"hello from a driver"

        a, b = client(rig, g20, "a"), client(rig, g21, "b")
        try:
            ia, ib = IO.client(a, 16, timeout=30_000), IO.client(b, 16, timeout=30_000)
            assert ia.devices() == ["disk0"] and ib.devices() == ["timer0", "disk0"]
            with pytest.raises(RemoteFailure, match="DENIED"):
                ia.open("timer0", _window=(100, 2))
            with pytest.raises(RemoteFailure, match="NOT_FOUND"):
                ia.open("nic9", _window=(100, 2))
            with pytest.raises(RemoteFailure, match="DENIED"):
                ia.set_policy(20, ["timer0"])                         # not the admin gate
            info = ia.open("disk0", _window=(100, 2))
            da = DeviceHandle(a, 100, 101, info)
            assert da.read("SECTORS") == 128
            # a capability the driver was not given can't be used: slot 102 is empty
            with pytest.raises(NoCapability):
                DeviceHandle(a, 102).read("ID")
            db = DeviceHandle(b, *[s for s in (100, 101)], ib.open("disk0", _window=(100, 2)))
            assert db.read("SECTORS") == 128

            # the launcher takes disk0 away from client 20: its capabilities vanish, 21 keeps its own
            with L4(rig.sys.sock, rig.root.create_thread().secret) as r2:
                r2_io = IO.client(r2, admin, timeout=30_000)
                r2_io.set_policy(20, [])
                assert r2_io.policy()["20"] == []
            with pytest.raises(NoCapability):
                da.read("SECTORS")
            with pytest.raises(NoCapability):
                a.irq_attach(101)
            assert db.read("SECTORS") == 128
        finally:
            a.close()
            b.close()


def test_io_refuses_bad_policy() -> None:
    with HalRig({"hal": ["timer:timer0"]}, ram_size=1 << 20) as rig:
        io = rig.sys.spawn("servers.io.server:serve", "io", args=('{"20": ["nope"]}',),
                           caps={"hal": rig.bus["hal"]})
        assert io.wait(60) == 2
