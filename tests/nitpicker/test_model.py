"""Nitpicker's model and painter in this process, without a machine: they are plain code.

The painter reads session buffers through a `read_into` callable; here that is a dict of
bytearrays standing in for Nitpicker's VM, so the tests see exactly which buffer bytes were
read and where they went.
"""
from __future__ import annotations

import pytest

from kernel.user.rpc import RpcError
from servers.nitpicker.compose import BACKGROUND, DIM, LABEL_H, OUTSIDE, Screen
from servers.nitpicker.policy import parse_policy
from servers.nitpicker.views import Buffer, Rect, Session, Stack, View, check_geometry

W, H = 64, 48


class Memory:
    """Buffers at fake addresses: read_into(addr, dst) copies len(dst) bytes from there."""

    def __init__(self) -> None:
        self.bufs: dict[int, bytearray] = {}
        self.reads: list[tuple[int, int]] = []

    def add(self, addr: int, w: int, h: int, colour: tuple[int, int, int]) -> Buffer:
        self.bufs[addr] = bytearray(bytes((colour[2], colour[1], colour[0], 0)) * (w * h))
        return Buffer(0, addr, w, h)

    def read_into(self, addr: int, dst: memoryview) -> None:
        base = max(a for a in self.bufs if a <= addr)
        off = addr - base
        assert off + len(dst) <= len(self.bufs[base]), "read beyond the buffer"
        dst[:] = self.bufs[base][off:off + len(dst)]
        self.reads.append((addr, len(dst)))


def pixel(s: Screen, x: int, y: int) -> tuple[int, int, int]:
    o = (y * s.width + x) * 4
    b, g, r = s.pixels[o:o + 3]
    return r, g, b


def session(label: int, name: str, buf: Buffer | None) -> Session:
    s = Session(label, name, 1 << 20, 0, 0)
    s.buffer = buf
    return s


def setup() -> tuple[Memory, Screen, Stack, Session, Session, View, View]:
    mem = Memory()
    scr = Screen(W, H, mem.read_into)
    a = session(1, "alpha", mem.add(0x10000, 30, 30, (255, 0, 0)))
    b = session(2, "beta", mem.add(0x20000, 30, 30, (0, 255, 0)))
    st = Stack()
    va, vb = View(1, a, "a"), View(1, b, "b")
    va.rect, vb.rect = Rect(0, 0, 30, 30), Rect(20, 10, 30, 30)
    for v in (va, vb):
        v.session.views[v.id] = v
        st.add(v)
    return mem, scr, st, a, b, va, vb


def test_views_paint_their_own_buffers_front_last_labels_on_top() -> None:
    mem, scr, st, a, b, va, vb = setup()
    scr.paint(Rect(0, 0, W, H), st, None, False)
    assert pixel(scr, 5, 25) == (255, 0, 0)          # alpha's only
    assert pixel(scr, 25, 25) == (0, 255, 0)         # beta is in front
    assert pixel(scr, 60, 45) == BACKGROUND
    assert pixel(scr, 10, LABEL_H - 1) not in ((255, 0, 0), (0, 255, 0))   # the label bar
    for addr, n in mem.reads:                        # only inside the two buffers
        assert 0x10000 <= addr and addr + n <= 0x10000 + 30 * 30 * 4 or \
            0x20000 <= addr and addr + n <= 0x20000 + 30 * 30 * 4


def test_stacking_and_xray_dimming() -> None:
    _, scr, st, a, b, va, vb = setup()
    st.place(va, "front", None)
    scr.paint(Rect(0, 0, W, H), st, a, False)
    assert pixel(scr, 25, 25) == (255, 0, 0)
    st.place(va, "below", vb)
    assert st.views == [vb, va]
    scr.paint(Rect(0, 0, W, H), st, a, True)         # X-ray: beta dimmed, alpha not
    assert pixel(scr, 40, 35) == (0, DIM[255], 0)
    assert pixel(scr, 5, 25) == (255, 0, 0)


def test_buffer_offset_and_outside_pixels() -> None:
    mem, scr, st, a, b, va, vb = setup()
    mem.bufs[0x10000][(5 * 30 + 7) * 4:(5 * 30 + 7) * 4 + 4] = bytes((255, 255, 255, 0))
    va.rect, va.buf_x, va.buf_y = Rect(0, 20, 20, 20), 7, 5 - LABEL_H
    st.remove(vb)
    scr.paint(Rect(0, 0, W, H), st, None, False)
    assert pixel(scr, 0, 20 + LABEL_H) == (255, 255, 255)   # buffer pixel (7, 5) at the view's
    va.buf_x = 25                                            # 5 columns of buffer, then grey
    scr.paint(Rect(0, 0, W, H), st, None, False)
    assert pixel(scr, 4, 20 + LABEL_H) == (255, 0, 0) and pixel(scr, 6, 20 + LABEL_H) == OUTSIDE


def test_geometry_checks_name_the_field() -> None:
    with pytest.raises(RpcError) as e:
        check_geometry(0, 0, -1, 5, 0, 0)
    assert e.value.error == "INVALID" and "w=-1" in e.value.reason
    with pytest.raises(RpcError) as e:
        check_geometry(0, 10 ** 6, 1, 5, 0, 0)
    assert "y=1000000" in e.value.reason
    assert check_geometry(-5, -5, 0, 0, 0, 0) == Rect(-5, -5, 0, 0)


def test_policy_parsing() -> None:
    p = parse_policy(["3=terminal", "4=clock:1M", "5=pin:64K", "kill=3,4"])
    assert dict(p) == {3: ("terminal", 4 << 20), 4: ("clock", 1 << 20), 5: ("pin", 64 << 10)}
    assert p.killable == {3, 4}
    for bad in ("x=terminal", "0=zero", "3=", "3=t:lots", "kill=a"):
        with pytest.raises(ValueError):
            parse_policy([bad])
