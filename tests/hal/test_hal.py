"""The HAL with real processes: a kernel, HAL task processes, the test process as the driver.

The test process is the root task; it opens devices through the bus gate, attaches their
IRQ objects to its main thread and touches physical RAM through the RAM file (the driver's
view of the frames it DMAs to/from).
"""
from __future__ import annotations

import io
import os
import struct
from typing import Iterator

import pytest
from PIL import Image

from hal.device import ErrCode, Status
from hal.disk import ENTRY, SECTOR
from hal.driver import NicRings
from hal.input import BUTTON, KEY, MOVE, unpack_event
from hal.testing import HalRig
from hal.tools import HalControlError, control, inject_input, screenshot, set_faults
from kernel.abi import Proto
from kernel.user.errors import Timeout
from kernel.user.testing import wait_for

DEVICES = ["timer:timer0", "disk:disk0:size=1M", "fb:fb0:width=64,height=48", "input:input0",
           "nic:nic0:backend=loopback"]
RAM = 16 << 20


@pytest.fixture(scope="module")
def rig() -> Iterator[HalRig]:
    r = HalRig({"hal": DEVICES}, ram_size=RAM)
    try:
        r.devs = r.open("hal")  # type: ignore[attr-defined]
        for i, name in enumerate(("timer0", "disk0", "input0", "nic0")):
            r.devs[name].attach_irq(label=100 + i)  # type: ignore[attr-defined]
        yield r
    finally:
        procs = list(r.procs.values())
        r.close()
        assert all(p.proc.poll() is not None for p in procs)


def irq(rig: HalRig, label: int) -> None:
    """Wait for the interrupt with `label` on root's main thread (a hang fails the test)."""
    m = rig.root.wait(timeout=20_000)
    assert m.proto == Proto.IRQ and m.label == label, m


def no_irq(rig: HalRig) -> None:
    with pytest.raises(Timeout):
        rig.root.wait(timeout=0)


def test_disk_dma_write_then_read_lands_on_image(rig) -> None:
    d, mem = rig.devs["disk0"], rig.ram_map()
    data = os.urandom(8 * SECTOR)
    mem[0x4000:0x4000 + len(data)] = data
    st = d.writes(LBA=10, COUNT=8, DMA_ADDR=0x4000, CMD=2)
    irq(rig, 101)
    assert d.read("STATUS") & Status.DONE and not d.read("STATUS") & Status.ERROR
    d.eoi()
    with open(os.path.join(rig.run_dir, "disk0.img"), "rb") as f:
        f.seek(10 * SECTOR)
        assert f.read(len(data)) == data
    d.writes(LBA=10, COUNT=8, DMA_ADDR=0x8000, CMD=1)
    irq(rig, 101)
    d.eoi()
    assert bytes(mem[0x8000:0x8000 + len(data)]) == data
    d.writes(CMD=3)                                     # flush = fsync
    irq(rig, 101)
    d.eoi()
    assert d.read("ERROR") == 0
    assert st & Status.READY


def test_disk_request_queue(rig) -> None:
    d, mem = rig.devs["disk0"], rig.ram_map()
    qbase, buf = 0x20000, 0x30000
    assert not d.writes(Q_BASE=qbase, Q_SIZE=8) & Status.ERROR
    blocks = [os.urandom(2 * SECTOR) for _ in range(4)]
    for i, b in enumerate(blocks):
        mem[buf + i * 1024: buf + i * 1024 + 1024] = b
        ENTRY.pack_into(mem, qbase + i * 32, 2, 2, 100 + 2 * i, buf + i * 1024, 0xFF, 0)
    ENTRY.pack_into(mem, qbase + 4 * 32, 2, 2, 4096, buf, 0xFF, 0)       # past the end
    d.write("Q_TAIL", 5)
    irq(rig, 101)
    d.eoi()
    assert d.read("Q_HEAD") == 5
    statuses = [ENTRY.unpack_from(mem, qbase + i * 32)[4] for i in range(5)]
    assert statuses == [0, 0, 0, 0, ErrCode.LBA_RANGE]
    with open(os.path.join(rig.run_dir, "disk0.img"), "rb") as f:
        f.seek(100 * SECTOR)
        assert f.read(4096) == b"".join(blocks)


def test_disk_bad_requests_give_error_status_and_hal_keeps_running(rig) -> None:
    d = rig.devs["disk0"]
    cases = [({"LBA": 2047, "COUNT": 2, "DMA_ADDR": 0, "CMD": 1}, ErrCode.LBA_RANGE),
             ({"LBA": 0, "COUNT": 1, "DMA_ADDR": RAM - 100, "CMD": 2}, ErrCode.DMA_RANGE),
             ({"LBA": 0, "COUNT": 0, "DMA_ADDR": 0, "CMD": 1}, ErrCode.BAD_VALUE),
             ({"LBA": 0, "COUNT": 1, "DMA_ADDR": 0, "CMD": 9}, ErrCode.BAD_COMMAND)]
    for regs, err in cases:
        d.writes(**regs)
        irq(rig, 101)
        d.eoi()
        assert d.read("STATUS") & Status.ERROR and d.read("ERROR") == err, regs
    d.write("ERROR", 0)
    assert d.read("ERROR") == 0
    assert d.dev.write(999, 1) & Status.ERROR and d.read("ERROR") == ErrCode.BAD_REGISTER
    assert d.write("SECTORS", 5) & Status.ERROR                     # read-only
    assert d.write("Q_SIZE", 3) & Status.ERROR and d.read("ERROR") == ErrCode.BAD_VALUE
    assert d.write("IRQ_CTRL", 7) & Status.ERROR
    d.write("ERROR", 0)
    assert d.read("SECTORS") == 2048                                 # still serving


def test_disk_fault_knobs(rig) -> None:
    d = rig.devs["disk0"]
    assert set_faults(rig.run_dir, "disk0", error_rate=1.0)["error_rate"] == 1.0
    d.writes(LBA=0, COUNT=1, DMA_ADDR=0, CMD=1)
    irq(rig, 101)
    d.eoi()
    assert d.read("ERROR") == ErrCode.IO_ERROR
    set_faults(rig.run_dir, "disk0", error_rate=0.0, latency_ms=1.0)
    d.writes(ERROR=0, LBA=0, COUNT=1, DMA_ADDR=0, CMD=1)
    irq(rig, 101)
    d.eoi()
    assert d.read("ERROR") == 0
    with pytest.raises(HalControlError, match="no fault knob"):
        set_faults(rig.run_dir, "disk0", nonsense=1)
    with pytest.raises(HalControlError, match=">= 0"):
        set_faults(rig.run_dir, "disk0", error_rate="lots")


def test_masked_interrupt_is_held_pending_and_delivered_on_unmask(rig) -> None:
    t, pic = rig.devs["timer0"], rig.devs["pic"]
    line = t.info["line"]
    t.mask()
    t.writes(PERIOD_US=1000, CTRL=1)                                 # one shot, 1 ms
    wait_for(lambda: pic.read("PENDING") >> line & 1, 20, "the timer's line to be pending")
    assert t.read("TICKS") >= 1
    no_irq(rig)                                                       # held, not delivered
    assert t.read("IRQ_CTRL") & 0b011 == 0b011                       # masked + pending
    t.unmask()
    irq(rig, 100)
    assert pic.read("INSERVICE") >> line & 1
    t.eoi()
    assert not (pic.read("INSERVICE") | pic.read("PENDING")) >> line & 1


def test_raise_during_service_is_held_until_eoi(rig) -> None:
    t = rig.devs["timer0"]
    line = t.info["line"]
    control(rig.run_dir, {"op": "irq", "line": line})                # a spurious interrupt
    irq(rig, 100)
    control(rig.run_dir, {"op": "irq", "line": line})
    wait_for(lambda: t.read("IRQ_CTRL") & 0b110 == 0b110, 20, "pending while in service")
    no_irq(rig)
    t.eoi()
    irq(rig, 100)
    t.eoi()


def test_periodic_timer_and_bad_values(rig) -> None:
    t = rig.devs["timer0"]
    assert t.write("PERIOD_US", 0) & Status.ERROR and t.read("ERROR") == ErrCode.BAD_VALUE
    assert t.write("CTRL", 0x80) & Status.ERROR
    t.write("ERROR", 0)
    before = t.read("TICKS")
    t.writes(PERIOD_US=2000, CTRL=3)
    for _ in range(3):
        irq(rig, 100)
        t.eoi()
    t.write("CTRL", 0)
    assert t.read("TICKS") >= before + 3
    # Drain every tick raised before the stop: one may be held until the EOI of another, so
    # keep acknowledging until the line stays quiet (a stray tick would reach the next test).
    while True:
        try:
            m = rig.root.wait(timeout=300)
        except Timeout:
            break
        assert m.proto == Proto.IRQ and m.label == 100, m
        t.eoi()


def test_framebuffer_pixels_come_out_in_png(rig, tmp_path) -> None:
    fb, mem = rig.devs["fb0"], rig.ram_map()
    base = 0x100000
    assert not fb.writes(WIDTH=64, HEIGHT=48, BASE=base, CTRL=1) & Status.ERROR
    assert fb.read("STRIDE") == 256 and fb.read("BPP") == 32
    mem[base:base + 64 * 48 * 4] = bytes(64 * 48 * 4)
    px = {(0, 0): (255, 0, 0), (5, 7): (0, 255, 0), (63, 47): (1, 2, 3)}
    for (x, y), (r, g, b) in px.items():
        off = base + y * 256 + x * 4
        mem[off:off + 4] = bytes([b, g, r, 0])
    out = screenshot(rig.run_dir, str(tmp_path / "s.png"))
    im = Image.open(out).convert("RGB")
    assert im.size == (64, 48)
    for xy, rgb in px.items():
        assert im.getpixel(xy) == rgb
    assert im.getpixel((1, 1)) == (0, 0, 0)


def test_framebuffer_bad_mode_is_refused(rig) -> None:
    fb = rig.devs["fb0"]
    fb.write("CTRL", 0)
    assert fb.writes(BASE=RAM - 1024, CTRL=1) & Status.ERROR
    assert fb.read("ERROR") == ErrCode.DMA_RANGE and fb.read("CTRL") == 0
    assert fb.write("WIDTH", 65) & Status.ERROR and fb.read("WIDTH") == 64
    assert fb.write("BASE", 3) & Status.ERROR
    fb.write("ERROR", 0)


def test_input_events_and_interrupt(rig) -> None:
    dev = rig.devs["input0"]
    assert inject_input(rig.run_dir, "key", "a") == 2
    irq(rig, 102)
    assert inject_input(rig.run_dir, "click", 30, 40, "right") == 3
    n = dev.read("COUNT")
    words = dev.reads(*["EVENT"] * n)
    dev.eoi()
    events = [unpack_event(w) for w in words]
    assert events == [(KEY, 30, 1), (KEY, 30, 0), (MOVE, 0, 30 << 16 | 40), (BUTTON, 2, 1), (BUTTON, 2, 0)]
    assert dev.reads("COUNT", "EVENT", "POINTER_X", "POINTER_Y") == [0, 0, 30, 40]
    try:
        rig.root.wait(timeout=50)                                     # the held second raise
        dev.eoi()
    except Timeout:
        pass
    with pytest.raises(ValueError, match="unknown key"):
        inject_input(rig.run_dir, "key", "no-such-key")
    with pytest.raises(HalControlError, match="bad input event"):
        control(rig.run_dir, {"op": "input", "events": [[9, 0, 0]]})


def test_nic_loopback_rings_and_faults(rig) -> None:
    nic = rig.devs["nic0"]
    drv = NicRings(nic, rig.ram_map(), 0x200000, ring=16)
    assert not drv.status & Status.ERROR and nic.read("LINK") == 1
    frames = [bytes([i]) * (60 + i) for i in range(5)]
    assert drv.send(frames) == 5
    wait_for(lambda: nic.read("RX_FRAMES") >= 5, 20, "frames looped back")
    assert drv.recv() == frames
    set_faults(rig.run_dir, "nic0", duplicate=1.0)
    drv.send(frames[:2])
    wait_for(lambda: nic.read("RX_FRAMES") >= 9, 20, "duplicated frames")
    assert drv.recv() == [frames[0], frames[0], frames[1], frames[1]]
    set_faults(rig.run_dir, "nic0", duplicate=0.0, loss=1.0)
    drv.send(frames)
    wait_for(lambda: nic.read("TX_FRAMES") >= 12, 20, "lost frames sent")
    assert nic.read("RX_FRAMES") == 9
    set_faults(rig.run_dir, "nic0", loss=0.0)
    drv.send([b"tiny"])                                               # below the minimum frame
    wait_for(lambda: nic.read("TX_ERRORS") == 1, 20, "the TX error")
    assert nic.write("RX_SIZE", 32) & Status.ERROR and nic.read("ERROR") == ErrCode.BUSY
    assert nic.write("TX_TAIL", 99) & Status.ERROR
    nic.write("ERROR", 0)
    nic.write("ISR", 3)
    try:
        while True:                                                   # drain NIC interrupts
            rig.root.wait(timeout=50)
            nic.eoi()
    except Timeout:
        pass


def test_control_socket_refuses_bad_requests(rig) -> None:
    for req, why in [({"op": "nope"}, "unknown control op"), ({"op": "faults", "device": "zz", "knobs": {}}, "no device"),
                     ({"op": "irq", "line": 99}, "line"), ({"op": "screenshot", "device": "disk0"}, "not a fb")]:
        with pytest.raises(HalControlError, match=why):
            control(rig.run_dir, req)
    st = control(rig.run_dir, {"op": "status"})
    assert set(st["devices"]) == {"pic", "timer0", "disk0", "fb0", "input0", "nic0"}


def test_two_hals_cabled_by_udp_exchange_frames() -> None:
    with HalRig({"a": ["nic:nic0:backend=udp"], "b": ["nic:nic0:backend=udp"]}, ram_size=4 << 20) as r:
        ports = {n: control(r.run_dir, {"op": "status"}, n)["devices"]["nic0"]["port"] for n in "ab"}
        control(r.run_dir, {"op": "cable", "device": "nic0", "peer": f"127.0.0.1:{ports['b']}"}, "a")
        control(r.run_dir, {"op": "cable", "device": "nic0", "peer": f"127.0.0.1:{ports['a']}"}, "b")
        da, db = r.open("a")["nic0"], r.open("b")["nic0"]
        ra = NicRings(da, r.ram_map("a"), 0x10000, ring=64)
        rb = NicRings(db, r.ram_map("b"), 0x10000, ring=64)
        db.attach_irq(label=7)
        ab = [os.urandom(1500) for _ in range(40)]
        assert ra.send(ab) == 40
        got: list[bytes] = []
        while len(got) < 40:
            m = r.root.wait(timeout=20_000)
            assert m.label == 7
            got += rb.recv()
            db.eoi()
        assert got == ab
        ba = [b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + bytes([i]) * 50 for i in range(3)]
        rb.send(ba)
        wait_for(lambda: da.read("RX_FRAMES") == 3, 20, "frames from b at a")
        assert ra.recv() == ba


def test_hal_refuses_bad_arguments() -> None:
    with HalRig({}) as r:
        p = r.sys.spawn("hal.main:task", "bad", args=("--ram", os.path.join(r.run_dir, "x.ram"),
                                                      "--ram-size", "1M", "--device", "disk:d0:size=1M"))
        assert p.wait(30) == 2                                        # disk without image
        p = r.sys.spawn("hal.main:task", "bad2", args=("--ram", os.path.join(r.run_dir, "y.ram"),
                                                       "--ram-size", "1M", "--device", "toaster:t0"))
        assert p.wait(30) == 2
        assert not os.path.exists(os.path.join(r.run_dir, "x.ram"))
