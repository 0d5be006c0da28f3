"""The fb and input device servers in a real booted image, judged by the HAL's screen and queue.

One image (written here): the HAL with fb0 (640x480) and input0, the fb server (policy:
label 1 the left top quarter, label 2 the right bottom quarter), the input server (labels
1 and 4), and the clients of tests/dde_linux/gui_tasks.py: `painter` (fb 1, input 1),
`other` (fb 2), `intruder` (labels without policy), `listener` (input 4). What the clients
drew is read back with `l4run screenshot`; input is injected with `l4run input`; clients
and the fb server are killed. `l4run down` must leave nothing behind.

The glue (servers/dde_linux/fb.py, input.py) and the input server's ring writer are also
checked in this process, without a machine: they are plain data structures and calls.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import pytest
from PIL import Image as PILImage

from kernel.user.testing import PROJECT_ROOT
from servers.fb import demo
from tests.dde_linux import gui_tasks as gt
from tests.launcher.helpers import (assert_clean, l4run, ps, ram_holders, system_pids, wait_for,
                                    write)
from tests.launcher.helpers import task_log as log_of

IMAGE = """
[system]
name = "gui-test"
ram = "48M"

[memory]
moe = false

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "fb"
name = "fb0"
width = 640
height = 480

[[device]]
kind = "input"
name = "input0"

[[task]]
name = "fb"
run = "servers.fb.server:main"
args = ["fb0", "1=0,0,320,240", "2=320,240,320,240"]
devices = ["fb0"]
provides = ["fb"]
caps = { sigma0 = { service = "sigma0", label = 2 } }

[[task]]
name = "input"
run = "servers.input.server:main"
args = ["1", "4"]
devices = ["input0"]
provides = ["input"]
caps = { sigma0 = { service = "sigma0", label = 3 } }

[[task]]
name = "painter"
run = "tests.dde_linux.gui_tasks:painter"
[task.caps]
fb = { service = "fb", label = 1 }
input = { service = "input", label = 1 }

[[task]]
name = "other"
run = "tests.dde_linux.gui_tasks:other"
restart = "never"
caps = { fb = { service = "fb", label = 2 } }

[[task]]
name = "intruder"
run = "tests.dde_linux.gui_tasks:intruder"
restart = "never"
[task.caps]
fb = { service = "fb", label = 3 }
input = { service = "input", label = 2 }

[[task]]
name = "listener"
run = "tests.dde_linux.gui_tasks:listener"
restart = "never"
caps = { input = { service = "input", label = 4 } }
"""
OTHER_AT = (320, 240)


def gui(rd: str, task: str, what: str) -> Any:
    """The value of the last "GUI <what> ..." line of the task, waited for."""
    wait_for(lambda: f"GUI {what} " in log_of(rd, task), 30, f"'GUI {what}' from {task}")
    line = [ln for ln in log_of(rd, task).splitlines() if ln.startswith(f"GUI {what} ")][-1]
    return json.loads(line.split(" ", 2)[2])


def events(rd: str) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in ln.split()[1:4])  # type: ignore[misc]
            for ln in log_of(rd, "painter").splitlines() if ln.startswith("GUI-EVENT ")]


def screen(rd: str, tmp: str) -> PILImage.Image:
    shot = os.path.join(tmp, f"shot{time.monotonic_ns()}.png")
    l4run("screenshot", "-o", shot, "--run-dir", rd)
    return PILImage.open(shot).convert("RGB")


def assert_rects(img: PILImage.Image, rects: list[gt.Rect], at: tuple[int, int] = (0, 0)) -> None:
    """Each rectangle's corners and centre show its colour (later rectangles lie on top)."""
    for i, (x, y, w, h, colour) in enumerate(rects):
        for px, py in ((x, y), (x + w - 1, y), (x, y + h - 1), (x + w - 1, y + h - 1),
                       (x + w // 2, y + h // 2)):
            if any(ox <= px < ox + ow and oy <= py < oy + oh
                   for ox, oy, ow, oh, _ in rects[i + 1:]):
                continue
            got = img.getpixel((at[0] + px, at[1] + py))
            assert got == colour, f"pixel {px},{py} of rectangle {i}: {got} != {colour}"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui")
    rd = str(tmp / "run")
    os.makedirs(rd)
    image = write(str(tmp / "gui.toml"), IMAGE)
    shm_before = set(os.listdir("/dev/shm"))
    t0 = time.monotonic()
    l4run("boot", image, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        yield {"rd": rd, "tmp": str(tmp), "t0": t0}
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)
    assert not ram_holders() & pids


def test_clients_draw_through_fb(system: dict[str, Any]) -> None:
    rd = system["rd"]
    p, o = gui(rd, "painter", "drawn"), gui(rd, "other", "drawn")
    assert (p["width"], p["height"], p["x"], p["y"], p["format"]) == (320, 240, 0, 0, "XRGB8888")
    assert (o["width"], o["height"], o["x"], o["y"]) == (320, 240, *OTHER_AT)
    img = screen(rd, system["tmp"])
    assert img.size == (640, 480)
    assert_rects(img, gt.PAINTER)
    assert_rects(img, gt.OTHER, OTHER_AT)
    assert img.getpixel((500, 100)) == (0, 0, 0) and img.getpixel((100, 400)) == (0, 0, 0)


def test_bad_rectangles_refused_and_counted(system: dict[str, Any]) -> None:
    rd = system["rd"]
    r = gui(rd, "painter", "refused")
    assert r["answers"] == ["INVALID"] * len(gt.BAD_RECTS)
    assert r["stats"]["refused"] == len(gt.BAD_RECTS) and r["stats"]["refreshes"] == 1
    img = screen(rd, system["tmp"])
    assert_rects(img, gt.PAINTER)              # the yellow buffer never reached the screen
    assert_rects(img, gt.OTHER, OTHER_AT)      # the other client is unaffected


def test_client_without_policy_refused(system: dict[str, Any]) -> None:
    a = gui(system["rd"], "intruder", "intruder")
    assert a == {"fb.mode": "DENIED", "fb.open": "DENIED", "fb.refresh": "NO_SESSION",
                 "input.open": "DENIED"}


def test_input_events_arrive_in_order(system: dict[str, Any]) -> None:
    rd = system["rd"]
    gui(rd, "painter", "input")
    before = len(events(rd))
    for args in (("key", "a"), ("click", "10", "20", "right"), ("move", "100", "200"),
                 ("key", "b")):
        l4run("input", *args, "--run-dir", rd)
    want = [(1, 30, 1), (0, 0, 0), (1, 30, 0), (0, 0, 0),                    # key a
            (3, 0, 10), (3, 1, 20), (0, 0, 0), (1, 0x111, 1), (0, 0, 0), (1, 0x111, 0), (0, 0, 0),
            (3, 0, 100), (3, 1, 200), (0, 0, 0),                              # move
            (1, 48, 1), (0, 0, 0), (1, 48, 0), (0, 0, 0)]                     # key b
    wait_for(lambda: len(events(rd)) >= before + len(want), 20, "the injected events")
    assert events(rd)[before:] == want


def test_dead_clients_sessions_dropped(system: dict[str, Any]) -> None:
    rd = system["rd"]
    gui(rd, "listener", "listening")
    l4run("kill", "other", "--run-dir", rd)
    l4run("kill", "listener", "--run-dir", rd)
    wait_for(lambda: "label 2 is gone: its session is dropped" in log_of(rd, "fb"), 20,
             "fb to drop the dead client's session")
    wait_for(lambda: "label 4 is gone: its session is dropped" in log_of(rd, "input"), 20,
             "input to drop the dead client's session")
    l4run("input", "key", "x", "--run-dir", rd)                # the live reader still reads
    wait_for(lambda: (1, 45, 0) in events(rd), 20, "key x after the drops")


def test_fb_restart_client_reconnects(system: dict[str, Any]) -> None:
    rd = system["rd"]
    l4run("kill", "fb", "--run-dir", rd)
    wait_for(lambda: "GUI reopened " in log_of(rd, "painter"), 30, "painter to reopen")
    assert ps(rd)["fb"]["restarts"] >= 1
    img = screen(rd, system["tmp"])
    assert_rects(img, gt.PAINTER)
    assert img.getpixel((OTHER_AT[0] + 5, OTHER_AT[1] + 5)) == (0, 0, 0)   # other is dead
    l4run("input", "key", "z", "--run-dir", rd)                # input still reaches painter
    wait_for(lambda: (1, 44, 0) in events(rd), 20, "key z after the restart")


def test_shipped_image_shows_the_demo(tmp_path: Any) -> None:
    """configs/dde-gui.toml as documented: the demo's picture on screen, keys in its log."""
    rd, shm_before = str(tmp_path / "run"), set(os.listdir("/dev/shm"))
    l4run("boot", os.path.join(PROJECT_ROOT, "configs", "dde-gui.toml"), "--detach",
          "--run-dir", rd)
    pids = system_pids(rd)
    try:
        wait_for(lambda: "demo: reading input" in log_of(rd, "demo"), 30, "the demo to draw")
        img = screen(rd, str(tmp_path))
        w, h = img.size
        bw = w // len(demo.BARS)
        for i, colour in enumerate(demo.BARS):
            assert img.getpixel((i * bw + bw // 2, demo.BAR_HEIGHT // 2)) == colour
        for x, y, size, colour in demo.squares(w, h):
            assert img.getpixel((x + size // 2, y + size // 2)) == colour
        assert img.getpixel((w // 2, h - 1)) == demo.WHITE
        assert img.getpixel((w // 2, h - 20)) == demo.BACKGROUND
        l4run("input", "key", "a", "--run-dir", rd)
        wait_for(lambda: "demo: key 30 release" in log_of(rd, "demo"), 20, "key a in the log")
        assert "demo: key 30 press" in log_of(rd, "demo")
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)


# ---------------------------------------------------------------------------
# The glue and the ring, in this process (no machine needed)

def _keyboard() -> Any:
    from servers.dde_linux import input as li
    dev = li.input_allocate_device()
    dev.name = "test keyboard"
    li.set_bit(li.EV_KEY, dev.evbit)
    li.set_bit(li.KEY_A, dev.keybit)
    li.input_set_abs_params(dev, li.ABS_X, 0, 100, 0, 0)
    return dev


def test_input_glue_filters_and_frames() -> None:
    from servers.dde_linux import input as li
    frames: list[list[tuple[int, int, int]]] = []
    handles: list[Any] = []

    def connect(h: Any, dev: Any) -> Any:
        handle = li.input_handle(dev, h)
        li.input_open_device(handle)
        handles.append(handle)
        return handle
    handler = li.input_handler("test", connect, lambda h: handles.remove(h),
                               events=lambda h, f: frames.append(f))
    early = _keyboard()
    assert li.input_register_device(early) == 0
    assert li.input_register_handler(handler) == 0          # connects to devices already there
    late = _keyboard()
    assert li.input_register_device(late) == 0 and len(handles) == 2
    try:
        li.input_report_key(early, li.KEY_A, 1)
        assert frames == []                                   # nothing before the SYN_REPORT
        li.input_report_key(early, li.KEY_A, 1)               # already down: dropped
        li.input_report_key(early, li.KEY_Z, 1)               # not declared: dropped
        li.input_event(early, li.EV_REL, li.REL_X, 3)         # type not declared: dropped
        li.input_report_abs(early, li.ABS_X, 500)             # clamped to 100
        li.input_sync(early)
        li.input_report_abs(early, li.ABS_X, 100)             # no change: dropped
        li.input_sync(early)                                  # an empty frame: not passed
        li.input_report_key(early, li.KEY_A, 0)
        li.input_sync(early)
        assert frames == [[(1, 30, 1), (3, 0, 100), (0, 0, 0)], [(1, 30, 0), (0, 0, 0)]]
        assert early.ignored == 4
    finally:
        li.input_unregister_device(early)
        li.input_unregister_handler(handler)
        li.input_unregister_device(late)
    assert handles == [] and li.input_devices() == []
    li.input_report_key(early, li.KEY_A, 1)                   # unregistered: nobody hears it
    li.input_sync(early)
    assert len(frames) == 2


def test_fb_glue_register_and_set_var() -> None:
    from servers.dde_linux import fb
    seen: list[tuple[int, int]] = []

    def client(event: int, info: Any) -> None:
        seen.append((event, info.node))
    checked: list[int] = []

    def check_var(var: Any, info: Any) -> int:
        checked.append(var.xres)
        return -22 if var.xres > 800 else 0
    info = fb.framebuffer_alloc(0)
    assert info is not None
    info.var.xres, info.var.yres = 640, 480
    info.fix.line_length, info.fix.smem_len = 640 * 4, 640 * 480 * 4
    info.fbops = fb.fb_ops(fb_check_var=check_var)
    assert fb.register_framebuffer(info) == -22               # no screen_base: refused
    info.screen_base = 0x4000_0000
    fb.fb_register_client(client)
    try:
        assert fb.register_framebuffer(info) == 0
        assert fb.registered_fb(info.node) is info and fb.num_registered_fb() == 1
        assert fb.register_framebuffer(info) == -16           # twice: EBUSY
        big = fb.fb_var_screeninfo(xres=1024, yres=768)
        assert fb.fb_set_var(info, big) == -22 and info.var.xres == 640
        small = fb.fb_var_screeninfo(xres=320, yres=200)
        assert fb.fb_set_var(info, small) == 0 and info.var.xres == 320
        assert fb.fb_blank(info, 9) == -22 and fb.fb_blank(info, fb.FB_BLANK_POWERDOWN) == 0
        node = info.node
    finally:
        fb.unregister_framebuffer(info)
        fb.fb_unregister_client(client)
    assert checked == [1024, 320] and fb.num_registered_fb() == 0
    assert [e for e, _ in seen] == [fb.FB_EVENT_FB_REGISTERED, fb.FB_EVENT_MODE_CHANGE,
                                    fb.FB_EVENT_BLANK, fb.FB_EVENT_FB_UNREGISTERED]
    assert {n for _, n in seen} == {node}


def test_input_ring_never_overwrites_unread_events() -> None:
    from servers.input import protocol as p
    from servers.input.server import InputServer, Session
    ring = memoryview(bytearray(1 << p.RING_ORDER))
    s = Session(1, 0, ring, 0)
    frame = [(1, 30, 1), (0, 0, 0)]
    written = 0
    while InputServer._write(s, frame, 7) and s.dropped == 0:
        written += len(frame)
    assert written == p.ENTRIES - p.ENTRIES % 2 and s.head == written
    assert s.dropped == 2 and p.U64.unpack_from(ring, p.DROPPED_AT)[0] == 2
    assert p.U64.unpack_from(ring, p.HEAD_AT)[0] == written
    assert p.EVENT.unpack_from(ring, p.EVENTS) == (1, 30, 1, 7)
    p.U64.pack_into(ring, p.TAIL_AT, 2)                       # the reader took one frame
    assert InputServer._write(s, frame, 8) and s.head == written + 2
    at = p.EVENTS + (written % p.ENTRIES) * p.EVENT.size
    assert p.EVENT.unpack_from(ring, at) == (1, 30, 1, 8)
    p.U64.pack_into(ring, p.TAIL_AT, s.head + 5)              # a tail past the head: refused
    assert not InputServer._write(s, frame, 9) and s.dropped == 4
