"""Direct scan-out (servers/nitpicker/planes.py) in a real booted image, judged by the HAL's screen.

One client (tests/nitpicker/tasks.py `scanner`) has a full-screen view and a second view in
front of part of it; key presses step it. While the second view is there the screen is
composed; without it the display scans the client's buffer out directly, Nitpicker's label
bar composed over it by the framebuffer's plane 1. The screen must be the same either way,
the bar must stay Nitpicker's whatever the client writes, X-ray mode must compose again
(with the frames a client submitted while scanned out, which needed no copy then), and an
fb client the policy does not name gets neither the screen nor the plane page.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from PIL import Image as PILImage

from servers.nitpicker.compose import BAR_FOCUS, BAR_XRAY, LABEL_H
from tests.launcher.helpers import booted, l4run, wait_for, write
from tests.nitpicker.tasks import OVER, picture
from tests.nitpicker.test_nitpicker import np_line, screen, wait_pixel

W, H = 320, 240
IMAGE = f"""
[system]
name = "scanout-test"
ram = "64M"

[memory]
moe = true

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "fb"
name = "fb0"
width = {W}
height = {H}

[[device]]
kind = "input"
name = "input0"

[[task]]
name = "fb"
run = "servers.fb.server:main"
args = ["fb0", "1", "2", "direct=1"]
devices = ["fb0"]
provides = ["fb"]
caps = {{ sigma0 = {{ service = "sigma0", label = 2 }} }}

[[task]]
name = "input"
run = "servers.input.server:main"
args = ["1"]
devices = ["input0"]
provides = ["input"]
caps = {{ sigma0 = {{ service = "sigma0", label = 3 }} }}

[[task]]
name = "nitpicker"
run = "servers.nitpicker.server:main"
args = ["1=scanner:2M"]
provides = ["nitpicker"]
memory = "8M"
[task.caps]
fb = {{ service = "fb", label = 1 }}
input = {{ service = "input", label = 1 }}

[[task]]
name = "scanner"
run = "tests.nitpicker.tasks:scanner"
memory = "4M"
restart = "never"
caps = {{ gui = {{ service = "nitpicker", label = 1 }} }}

[[task]]
name = "fbprobe"
run = "tests.nitpicker.tasks:fbprobe"
memory = "1M"
restart = "never"
caps = {{ fb = {{ service = "fb", label = 2 }} }}
"""


def rgb(data: bytes) -> bytes:
    """XRGB8888 (B, G, R, X) as PIL's RGB bytes."""
    return bytes(PILImage.frombuffer("RGB", (W, H), data, "raw", "BGRX", W * 4, 1).tobytes())


ASKED = [100]


def scanout(rd: str) -> bool:
    """Whether the display scans the scanner's view out directly now (its info, asked
    with the key "i")."""
    ASKED[0] += 1
    n = ASKED[0]
    l4run("input", "key", "i", "--run-dir", rd)
    wait_for(lambda: np_line(rd, "scanner", "state")["n"] == n, 30, f"the scanner's state {n}")
    return bool(np_line(rd, "scanner", "state")["scanout"])


def step(rd: str, n: int) -> bool:
    """Step the scanner to step n; whether it is scanned out directly then."""
    l4run("input", "key", "n", "--run-dir", rd)
    wait_for(lambda: np_line(rd, "scanner", "state")["n"] == n, 30, f"the scanner's step {n}")
    return bool(np_line(rd, "scanner", "state")["scanout"])


def rows(img: Any, y0: int, y1: int) -> bytes:
    return bytes(img.crop((0, y0, W, y1)).tobytes())


def outside(img: Any, r: tuple[int, int, int, int]) -> Any:
    """The image with rectangle r blacked out."""
    out = img.copy()
    out.paste((0, 0, 0), (r[0], r[1], r[0] + r[2], r[1] + r[3]))
    return out


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("scanout")
    image = write(str(tmp / "scanout.toml"), IMAGE)
    with booted(image, str(tmp / "run")) as rd:
        wait_for(lambda: np_line(rd, "scanner", "step") == 0, 60, "the scanner's views")
        yield {"rd": rd, "tmp": str(tmp)}


def test_direct_scan_out_shows_what_composition_shows(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    pic0, pic1 = rgb(picture(W, H, 0)), rgb(picture(W, H, 1))
    l4run("input", "click", "200", "200", "--run-dir", rd)          # focus: a blue bar
    composed = wait_pixel(rd, tmp, (W - 2, 1), BAR_FOCUS, "the scanner focused")
    assert not np_line(rd, "scanner", "state")["scanout"]           # a second view: composed
    assert rows(composed, LABEL_H, H) != pic0[LABEL_H * W * 3:]     # ... shows in the middle

    assert step(rd, 1)                                               # the second view gone
    direct = screen(rd, tmp)
    assert rows(direct, 0, LABEL_H) == rows(composed, 0, LABEL_H)    # the same bar, on top
    assert rows(direct, LABEL_H, H) == pic0[LABEL_H * W * 3:]        # the buffer itself
    assert outside(direct, OVER).tobytes() == outside(composed, OVER).tobytes()

    assert not step(rd, 2)                                           # back: composed again
    assert screen(rd, tmp).tobytes() == composed.tobytes()

    assert step(rd, 3)                                               # a flip, scanned out
    flipped = screen(rd, tmp)
    assert np_line(rd, "scanner", "state")["scanned"] > 0
    assert rows(flipped, 0, LABEL_H) == rows(composed, 0, LABEL_H)
    assert rows(flipped, LABEL_H, H) == pic1[LABEL_H * W * 3:]


def test_xray_mode_composes_and_the_bar_stays_nitpickers(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    before = screen(rd, tmp)
    assert scanout(rd)
    l4run("input", "key", "f12", "--run-dir", rd)                   # X-ray on: composed
    wait_pixel(rd, tmp, (W - 2, 1), BAR_XRAY, "X-ray mode's bar")
    assert not scanout(rd)
    l4run("input", "key", "f12", "--run-dir", rd)                   # off: direct again
    wait_pixel(rd, tmp, (W - 2, 1), BAR_FOCUS, "X-ray mode off")
    assert scanout(rd)
    assert screen(rd, tmp).tobytes() == before.tobytes()

    assert step(rd, 4)                      # the client paints all it shows, under the bar too
    after = screen(rd, tmp)
    assert rows(after, 0, LABEL_H) == rows(before, 0, LABEL_H)      # the bar untouched
    assert rows(after, LABEL_H, H) == b"\xff" * ((H - LABEL_H) * W * 3)


def test_a_submit_scanned_out_needs_no_copy_and_is_composed_after(
        system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    pic0 = rgb(picture(W, H, 0))
    assert step(rd, 5)                      # picture 0 drawn and submitted: no ring entry
    assert np_line(rd, "scanner", "state")["unposted"] >= 1
    direct = screen(rd, tmp)
    assert rows(direct, LABEL_H, H) == pic0[LABEL_H * W * 3:]
    l4run("input", "key", "f12", "--run-dir", rd)                   # composed: from the buffer
    xray = wait_pixel(rd, tmp, (W - 2, 1), BAR_XRAY, "X-ray mode's bar")
    assert rows(xray, LABEL_H, H) == pic0[LABEL_H * W * 3:]         # the frame is not lost
    l4run("input", "key", "f12", "--run-dir", rd)
    wait_pixel(rd, tmp, (W - 2, 1), BAR_FOCUS, "X-ray mode off")
    assert scanout(rd) and screen(rd, tmp).tobytes() == direct.tobytes()


def test_only_the_direct_client_gets_the_screen_and_the_planes(system: dict[str, Any]) -> None:
    rd = system["rd"]
    assert np_line(rd, "fbprobe", "fbprobe") == {"screen": "DENIED", "planes": "DENIED"}
