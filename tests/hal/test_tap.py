"""The NIC's tap back end: host tools see the emulated NIC's frames (needs root, /dev/net/tun;
skipped otherwise) — and hal/DEVICES.md stays in step with the register declarations."""
from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest

from hal.cable import tap_available
from hal.device import COMMON
from hal.disk import Disk
from hal.driver import NicRings
from hal.fb import Framebuffer
from hal.input import Input
from hal.nic import Nic
from hal.pic import Pic
from hal.testing import HalRig
from hal.timer import Timer
from kernel.user.testing import wait_for

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "hal", "DEVICES.md")


def test_devices_md_names_every_register() -> None:
    text = open(DOC).read()
    for cls in (Pic, Timer, Disk, Framebuffer, Input, Nic):
        for name, (idx, _) in {**COMMON, **cls.REGS}.items():
            assert re.search(rf"\| {idx} \| {name}\b|{idx} {name}\b", text), f"{cls.kind}: {idx} {name}"


def _tap_works() -> bool:
    if not tap_available():
        return False
    try:
        from hal.cable import TapCable
        TapCable("l4tapprobe").close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _tap_works(), reason="needs root and a working /dev/net/tun")
def test_tap_backend_frames_reach_the_host_and_back() -> None:
    ifname = f"l4t{os.getpid() % 100000}"
    with HalRig({"hal": [f"nic:nic0:backend=tap,tap={ifname}"]}, ram_size=1 << 20) as rig:
        subprocess.run(["ip", "link", "set", "dev", ifname, "up"], check=True)
        host = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
        host.bind((ifname, 0))
        host.settimeout(20)
        try:
            nic = rig.open("hal")["nic0"]
            drv = NicRings(nic, rig.ram_map("hal"), 0x10000, ring=16)
            frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x07" + b"\x88\xb5" + b"to the host" + bytes(40)
            drv.send([frame])
            assert host.recv(2048) == frame
            back = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x09" + b"\x88\xb5" + b"from the host" + bytes(40)
            host.send(back)
            got: list[bytes] = []
            wait_for(lambda: bool(got.extend(drv.recv()) or back in got), 20, "the host's frame")
        finally:
            host.close()
