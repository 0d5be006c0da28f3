"""Each device's registers on a thread of its own (hal/machine.py RegisterThread), and the
disk's per-job stage times (hal/disk.py, the `trace` knob)."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from hal.disk import ENTRY
from hal.testing import HalRig
from hal.tools import control, set_faults
from kernel.abi import Proto

DEVICES = ["disk:disk0:size=1M", "nic:nic0:backend=loopback"]


@pytest.fixture(scope="module")
def rig() -> Iterator[HalRig]:
    r = HalRig({"hal": DEVICES}, ram_size=4 << 20)
    try:
        r.devs = r.open("hal")  # type: ignore[attr-defined]
        yield r
    finally:
        r.close()


def _thread_names(pid: int) -> list[str]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            pass
    return out


def test_every_device_but_the_pic_has_its_register_thread(rig: HalRig) -> None:
    names = _thread_names(rig.procs["hal"].pid)
    assert "regs-disk0" in names and "regs-nic0" in names, names
    assert "regs-pic" not in names, names                        # the main thread's
    # each answers on its own gate: the registers still read and write as before
    d, n = rig.devs["disk0"], rig.devs["nic0"]  # type: ignore[attr-defined]
    assert d.read("SECTORS") == 2048 and n.read("ID") != d.read("ID")


def test_disk_trace_knob_shows_each_queue_job_in_order(rig: HalRig) -> None:
    d, mem = rig.devs["disk0"], rig.ram_map("hal")  # type: ignore[attr-defined]
    set_faults(rig.run_dir, "disk0", trace=8)
    d.attach_irq(label=77)
    qbase, buf = 0x20000, 0x30000
    d.writes(Q_BASE=qbase, Q_SIZE=8)
    for i in range(3):                       # three jobs, one doorbell each
        ENTRY.pack_into(mem, qbase + i * 32, 1, 2, 2 * i, buf, 0xFFFF_FFFF, 0)
        d.write("Q_TAIL", i + 1)
        m = rig.root.wait(timeout=20_000)
        assert m.proto == Proto.IRQ and m.label == 77, m
        d.eoi()
    st = control(rig.run_dir, {"op": "status"})
    trace = st.get("ok", st)["devices"]["disk0"]["trace"]
    assert trace["fields"] == ["doorbell", "start", "checked", "done", "irq", "entries"]
    rows = trace["rows"][-3:]
    assert len(rows) == 3 and all(r[5] == 1 for r in rows), rows
    for r in rows:                           # each job's stages in time order
        assert r[0] <= r[1] <= r[2] <= r[3] <= r[4], r
    # one after the other (a job's `irq` is stamped when the kernel answered the trigger,
    # which may be after the driver saw the interrupt and rang the next doorbell)
    assert rows[0][3] <= rows[1][0] <= rows[1][3] <= rows[2][0], rows
    set_faults(rig.run_dir, "disk0", trace=0)
    st = control(rig.run_dir, {"op": "status"})
    assert "trace" not in st.get("ok", st)["devices"]["disk0"]
