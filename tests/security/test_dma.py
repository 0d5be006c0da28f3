"""The IOMMU: a driver's device reaches only memory the driver's task maps (issue 11).

A real booted system (kernel RAM, the HAL as the DMA engine, io, sigma0) and a hostile
driver (tests/security/dma_hostile.py) with a disk. The disk image is the judge of what
left memory: the test reads it itself. With the IOMMU switched off (`L4PY_SANDBOX_OFF=iommu`,
hal/iommu.py) the same attempts succeed: the control test proves the protection is what
refuses them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernel.user.testing import PROJECT_ROOT
from launcher import control
from tests.launcher.helpers import assert_clean, l4run, system_pids, wait_for, write

DENIED = 10          # ErrCode.DMA_DENIED
IMAGE = """
[system]
name = "dma"
ram = "16M"

[memory]
moe = false

[[device]]
kind = "disk"
name = "disk0"
size = "1M"

[[task]]
name = "evil"
run = "tests.security.dma_hostile:run"
devices = ["disk0"]
caps = {{ sigma0 = {{ service = "sigma0", label = 2 }} }}
restart = "never"
"""


def _boot(tmp_path, off: str = "") -> tuple[str, dict, bytes]:
    rd = str(tmp_path / "run")
    img = write(str(tmp_path / "dma.toml"), IMAGE.format())
    shm = set(os.listdir("/dev/shm"))
    env = {**os.environ, "L4PY_SANDBOX_OFF": off} if off else None
    p = subprocess.run([sys.executable, "-m", "launcher", "boot", img, "--detach", "--run-dir", rd],
                       cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    log = os.path.join(rd, "logs", "evil.log")
    try:
        pids = system_pids(rd)
        wait_for(lambda: os.path.exists(log) and "DMA " in open(log).read(), 60, "the driver's report")
        res = json.loads(open(log).read().split("DMA ", 1)[1].splitlines()[0])
        stats = control.request(rd, "status")["kernel_stats"]
        with open(os.path.join(rd, "disk0.img"), "rb") as f:
            disk = f.read(1024)
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, shm)
    return rd, {**res, "stats": stats}, disk


def test_a_device_reaches_only_memory_its_driver_maps(tmp_path):
    _, r, disk = _boot(tmp_path)
    assert r["bind"]["enforcing"] and r["bind"]["bound"]
    assert r["unbound"] == DENIED                    # no domain bound yet: no DMA at all
    assert r["own"] == 0                             # its own buffer: the sector arrives
    assert r["own_data"] == disk[:16].hex()
    assert r["next_frame"] == DENIED and r["other_frame"] == DENIED
    assert r["leak"] == DENIED
    assert disk[512:1024] == bytes(512)              # nothing of another frame reached the disk
    assert r["ring"] == DENIED                       # a queue in someone else's frame
    assert r["after_unmap"] == DENIED                # given back: refused from then on
    # the kernel counted each refusal it made (the unbound one is the HAL's alone)
    assert r["stats"]["mem_dma_refused"] == 5


def test_control_without_the_iommu_the_same_attempts_succeed(tmp_path):
    _, r, disk = _boot(tmp_path, off="iommu")
    assert not r["bind"]["enforcing"]
    assert r["unbound"] == 0 and r["next_frame"] == 0 and r["other_frame"] == 0 and r["leak"] == 0
    assert r["after_unmap"] == 0
