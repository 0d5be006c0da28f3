"""The framebuffer's planes (hal/fb.py "Planes"): registers in a page of RAM, read at scan-out.

A real HAL process on its own RAM (hal.testing.HalRig: no kernel RAM, so the IOMMU checks
only the bounds of RAM); the test process is the driver and writes the plane page through
its RAM mapping, as the fb server's direct client does through its address space.
"""
from __future__ import annotations

import struct
from typing import Iterator

import pytest

from hal.device import ErrCode, Status
from hal.fb import (ENABLE, EXTENT, EXTENTS0, EXTENTS_N, LIST, PLANE, PLANE0, PLANE_SIZE, SEQ,
                    STATUS)
from hal.testing import HalRig
from hal.tools import control

W, H = 64, 48
RAM = 4 << 20
BASE, PAGE, BUF = 0x10000, 0x20000, 0x40000      # base frame, plane page, a client buffer
STRIDE = W * 4
_Q = struct.Struct("<Q")


@pytest.fixture(scope="module")
def rig() -> Iterator[HalRig]:
    r = HalRig({"hal": [f"fb:fb0:width={W},height={H}"]}, ram_size=RAM)
    try:
        r.devs = r.open("hal")  # type: ignore[attr-defined]
        yield r
    finally:
        r.close()


def px(r: int, g: int, b: int) -> bytes:
    return bytes((b, g, r, 0))


def screen(rig: HalRig) -> bytes:
    got = control(rig.run_dir, {"op": "pixels"})
    assert (got["width"], got["height"]) == (W, H)
    return bytes(got["data"])


def at(frame: bytes, x: int, y: int) -> bytes:
    return frame[y * STRIDE + x * 4:y * STRIDE + x * 4 + 4]


def set_planes(mem, planes: list[tuple[int, ...]], extents: list[tuple[int, int]] = ()) -> None:
    """Write the plane set as a driver must: SEQ odd, the planes, SEQ even."""
    seq = _Q.unpack_from(mem, PAGE + SEQ)[0]
    _Q.pack_into(mem, PAGE + SEQ, seq + 1)
    for i, p in enumerate(planes):
        PLANE.pack_into(mem, PAGE + PLANE0 + i * PLANE_SIZE, *p, 0)
    for k, e in enumerate([*extents, (0, 0)][:EXTENTS_N]):
        EXTENT.pack_into(mem, PAGE + EXTENTS0 + k * EXTENT.size, *e)
    _Q.pack_into(mem, PAGE + SEQ, seq + 2)


@pytest.fixture()
def fb(rig):
    """A 64x48 mode on a red base frame, a blue client buffer, the plane page zeroed."""
    dev, mem = rig.devs["fb0"], rig.ram_map()
    dev.write("CTRL", 0)
    dev.write("PLANES", 0)
    dev.write("ERROR", 0)
    mem[BASE:BASE + H * STRIDE] = px(200, 0, 0) * (W * H)
    mem[BUF:BUF + H * STRIDE] = px(0, 0, 200) * (W * H)
    mem[PAGE:PAGE + 4096] = bytes(4096)
    assert not dev.writes(WIDTH=W, HEIGHT=H, BASE=BASE, CTRL=1) & Status.ERROR
    yield dev, mem
    dev.write("PLANES", 0)
    dev.write("ERROR", 0)


def test_no_planes_is_the_old_scan_out(rig, fb) -> None:
    dev, mem = fb
    assert dev.read("PLANES") == 0 and screen(rig) == bytes(mem[BASE:BASE + H * STRIDE])


def test_plane0_shows_the_buffer_and_plane1_the_bar_over_it(rig, fb) -> None:
    dev, mem = fb
    assert not dev.write("PLANES", PAGE) & Status.ERROR
    assert screen(rig) == bytes(mem[BASE:BASE + H * STRIDE])      # all planes off: the base
    bar = 6                                                        # rows 0..5 of the base frame
    mem[BASE:BASE + bar * STRIDE] = px(9, 9, 9) * (W * bar)
    set_planes(mem, [(ENABLE, BUF, STRIDE, 0, 0, W, H), (ENABLE, BASE, STRIDE, 0, 0, W, bar)])
    got = screen(rig)
    assert got[:bar * STRIDE] == px(9, 9, 9) * (W * bar)           # the bar on top
    assert got[bar * STRIDE:] == px(0, 0, 200) * (W * (H - bar))   # the buffer under it
    mem[BUF + 10 * STRIDE:BUF + 11 * STRIDE] = px(1, 2, 3) * W     # seen at the next scan-out
    assert at(screen(rig), 5, 10) == px(1, 2, 3)
    mem[BUF:BUF + STRIDE] = px(7, 7, 7) * W                        # under the bar: hidden
    assert at(screen(rig), 0, 0) == px(9, 9, 9)
    assert dev.read("PLANE_STATUS") == 0 and _Q.unpack_from(mem, PAGE + STATUS)[0] == 0


def test_a_partial_plane_and_a_wider_stride(rig, fb) -> None:
    dev, mem = fb
    dev.write("PLANES", PAGE)
    wide = 2 * STRIDE                                              # a buffer twice as wide
    for y in range(H):
        mem[BUF + y * wide:BUF + y * wide + wide] = px(0, y, 0) * (2 * W)
    set_planes(mem, [(ENABLE, BUF + 8 * 4, wide, 10, 20, 16, 8), (0,) * 7])
    got = screen(rig)
    assert at(got, 10, 20) == px(0, 0, 0) and at(got, 25, 27) == px(0, 7, 0)
    assert at(got, 9, 20) == px(200, 0, 0) and at(got, 26, 20) == px(200, 0, 0)


def test_an_extent_list_gathers_a_buffer_from_scattered_runs(rig, fb) -> None:
    dev, mem = fb
    dev.write("PLANES", PAGE)
    half = H // 2 * STRIDE + 12                                    # a run boundary inside a row
    runs = [(0x80000, half), (0x90000, H * STRIDE - half)]
    picture = b"".join(px(y, 0, x) for y in range(H) for x in range(W))
    mem[0x80000:0x80000 + half] = picture[:half]
    mem[0x90000:0x90000 + H * STRIDE - half] = picture[half:]
    set_planes(mem, [(ENABLE | LIST, 0, STRIDE, 0, 0, W, H), (0,) * 7], runs)
    assert screen(rig) == picture
    set_planes(mem, [(ENABLE | LIST, 0, STRIDE, 0, 0, W, H), (0,) * 7], runs[:1])
    assert screen(rig) == bytes(W * H * 4)                         # the list is too short
    assert dev.read("PLANE_STATUS") == ErrCode.BAD_VALUE


@pytest.mark.parametrize("plane, code", [
    ((ENABLE, RAM - 100, STRIDE, 0, 0, W, H), ErrCode.DMA_RANGE),  # memory past RAM
    ((ENABLE, BUF, STRIDE, 0, 0, W + 1, H), ErrCode.BAD_VALUE),    # wider than the mode
    ((ENABLE, BUF, STRIDE, 1, 0, W, H), ErrCode.BAD_VALUE),        # leaves the screen
    ((ENABLE, BUF + 2, STRIDE, 0, 0, W, H), ErrCode.BAD_VALUE),    # misaligned
    ((ENABLE, BUF, 4, 0, 0, W, H), ErrCode.BAD_VALUE),             # stride < W*4
    ((0x80, BUF, STRIDE, 0, 0, W, H), ErrCode.BAD_VALUE),          # unknown CTRL bits
    ((ENABLE, BUF, STRIDE, 0, 0, 0, H), ErrCode.BAD_VALUE),        # empty
    ((ENABLE, BUF, 1 << 62, 0, 0, W, H), ErrCode.DMA_RANGE),       # huge stride
])
def test_an_invalid_plane_shows_black_and_reports_never_crashes(rig, fb, plane, code) -> None:
    dev, mem = fb
    dev.write("PLANES", PAGE)
    set_planes(mem, [(0,) * 7, plane])
    assert screen(rig) == bytes(W * H * 4)
    assert dev.read("PLANE_STATUS") == int(code) | 1 << 8          # plane 1's
    assert dev.read("STATUS") & Status.ERROR and dev.read("ERROR") == code
    assert _Q.unpack_from(mem, PAGE + STATUS)[0] == int(code) | 1 << 8
    dev.write("ERROR", 0)
    set_planes(mem, [(0,) * 7, (0,) * 7])                          # valid again: the base
    assert screen(rig) == bytes(mem[BASE:BASE + H * STRIDE])
    assert dev.read("PLANE_STATUS") == 0
    st = control(rig.run_dir, {"op": "status"})["devices"]["fb0"]
    assert st["plane_errors"] >= 1


def test_a_set_being_written_is_not_latched(rig, fb) -> None:
    dev, mem = fb
    dev.write("PLANES", PAGE)
    set_planes(mem, [(ENABLE, BUF, STRIDE, 0, 0, W, H), (0,) * 7])
    assert screen(rig) == px(0, 0, 200) * (W * H)
    seq = _Q.unpack_from(mem, PAGE + SEQ)[0]
    _Q.pack_into(mem, PAGE + SEQ, seq + 1)                         # a writer in the middle
    PLANE.pack_into(mem, PAGE + PLANE0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert screen(rig) == px(0, 0, 200) * (W * H)                  # the last latched set
    _Q.pack_into(mem, PAGE + SEQ, seq + 2)
    assert screen(rig) == bytes(mem[BASE:BASE + H * STRIDE])


def test_the_plane_page_register_is_checked(rig, fb) -> None:
    dev, _ = fb
    assert dev.write("PLANES", PAGE + 8) & Status.ERROR and dev.read("ERROR") == ErrCode.BAD_VALUE
    dev.write("ERROR", 0)
    assert dev.write("PLANES", RAM) & Status.ERROR and dev.read("ERROR") == ErrCode.DMA_RANGE
    assert dev.read("PLANES") == 0
    dev.write("ERROR", 0)
    assert dev.write("PLANE_STATUS", 1) & Status.ERROR                # read-only
    assert dev.read("ERROR") == ErrCode.BAD_REGISTER
