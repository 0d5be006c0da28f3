"""Nitpicker in a real booted image, judged by the HAL's screen, the clients' logs and its own.

The image (tests/nitpicker/image.toml): the HAL with fb0 (640x480) and input0, the fb and
input device servers (Nitpicker their only client; the fb server maps it the scan-out
memory, `direct=1`, so Nitpicker composes straight into the screen), Nitpicker (policy: 1 alpha, 2 beta,
3 probe with a 64 KiB quota, 4 gamma; kill mode may end gamma only), and the clients of
tests/nitpicker/tasks.py: painters alpha (red, at 40,40; refresh), beta (green, at 200,120,
behind alpha; submit, refresh and continue), gamma (blue, at 400,300, never restarted;
flip, a double buffer) and the probe of malformed
commands. Input is injected at the HAL with `l4run input`; what is on the screen is read
with `l4run screenshot`. `l4run down` must leave nothing behind.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import pytest
from PIL import Image as PILImage

from servers.nitpicker.compose import BACKGROUND, BAR, LABEL_H
from servers.nitpicker.protocol import BUTTON, FOCUS, KEY, MOTION
from tests.launcher.helpers import booted, l4run, wait_for
from tests.launcher.helpers import task_log as log_of

IMAGE = os.path.join(os.path.dirname(__file__), "image.toml")
RED, GREEN, BLUE = (255, 0, 0), (0, 200, 0), (0, 0, 255)


def np_line(rd: str, task: str, what: str) -> Any:
    """The value of the last "NP <what> ..." line of the task, waited for."""
    wait_for(lambda: f"NP {what} " in log_of(rd, task), 30, f"'NP {what}' from {task}")
    line = [ln for ln in log_of(rd, task).splitlines() if ln.startswith(f"NP {what} ")][-1]
    return json.loads(line.split(" ", 2)[2])


def events(rd: str, task: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in ln.split()[1:]) for ln in log_of(rd, task).splitlines()
            if ln.startswith("NP-EVENT ")]


def screen(rd: str, tmp: str) -> PILImage.Image:
    shot = os.path.join(tmp, f"shot{time.monotonic_ns()}.png")
    l4run("screenshot", "-o", shot, "--run-dir", rd)
    return PILImage.open(shot).convert("RGB")


def wait_pixel(rd: str, tmp: str, xy: tuple[int, int], colour: tuple[int, int, int],
               what: str) -> PILImage.Image:
    got: list[Any] = [None]

    def ok() -> bool:
        got[0] = screen(rd, tmp)
        return bool(got[0].getpixel(xy) == colour)
    try:
        wait_for(ok, 20, what)
    except AssertionError:
        raise AssertionError(f"{what}: pixel {xy} is {got[0].getpixel(xy)}, not {colour}") \
            from None
    return got[0]


def bar_has_text(img: PILImage.Image, x: int, y: int, w: int) -> bool:
    """The label bar at (x, y) carries text: the bar colour and the text colour at least."""
    colours = {img.getpixel((xx, y + yy)) for xx in range(x, x + w) for yy in range(LABEL_H)}
    return len(colours) >= 2


def moe(rd: str) -> dict[str, int]:
    return dict(json.loads(l4run("memory", "--json", "--run-dir", rd).stdout)["moe"])


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("nitpicker")
    with booted(IMAGE, str(tmp / "run")) as rd:
        for t in ("alpha", "beta", "gamma"):
            np_line(rd, t, "drawn")
        yield {"rd": rd, "tmp": str(tmp)}


def test_views_show_their_buffers_under_nitpickers_labels(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    assert np_line(rd, "alpha", "drawn") == {"label": "alpha", "screen": [640, 480]}
    assert "composing straight into the scan-out memory" in log_of(rd, "nitpicker")
    img = wait_pixel(rd, tmp, (500, 400), BLUE, "gamma's view")
    assert img.getpixel((100, 100)) == RED                 # alpha's view
    assert img.getpixel((400, 250)) == GREEN               # beta's, where alpha does not cover
    assert img.getpixel((600, 20)) == BACKGROUND           # no view there
    # the white squares at the buffers' bottom left corners: the buffer is shown unmoved
    assert img.getpixel((45, 40 + 160 - 5)) == (255, 255, 255)
    # every view's top LABEL_H lines are Nitpicker's label bar, with text, not client pixels
    for x, y in ((40, 40), (400, 300)):
        assert img.getpixel((x + 200, y + 2)) not in (RED, BLUE), (x, y)
        assert bar_has_text(img, x, y, 100), f"no label text on the view at {x},{y}"
    assert img.getpixel((40 + 239, 40 + LABEL_H)) == RED   # the first line under the bar
    # beta's submit was posted in its flip ring and shown: `ready` says a frame may be drawn
    assert np_line(rd, "beta", "ready") == {"ready": True, "posted": 1}


def test_malformed_commands_are_refused_and_others_unaffected(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    assert np_line(rd, "probe", "probe") == {
        "negative": "INVALID", "huge": "INVALID", "unknown_view": "NO_VIEW",
        "bad_stack": "INVALID", "stack_self": "INVALID", "long_title": "INVALID",
        "empty_refresh": "INVALID", "empty_submit": "INVALID", "flip_unknown": "NO_VIEW",
        "flip_huge": "INVALID", "huge_buffer": "INVALID", "quota": "QUOTA",
        "destroy_twice": "NO_VIEW", "end_client": "DENIED"}
    img = screen(rd, tmp)
    assert img.getpixel((100, 100)) == RED and img.getpixel((500, 400)) == BLUE
    assert "Traceback" not in log_of(rd, "nitpicker").split("input on")[-1]


def test_flip_ring_claims_are_checked(system: dict[str, Any]) -> None:
    """What the probe wrote into its flip ring: entries naming no view (two) and offsets
    out of range (one) refused, a wild count taken as done (nothing painted), and the
    next real flip painted: one frame shown in all."""
    rd, tmp = system["rd"], system["tmp"]
    assert np_line(rd, "probe", "ring") == {"refused": [2, 3, 3], "shown": [0, 0, 0, 1]}
    assert "Traceback" not in log_of(rd, "nitpicker").split("input on")[-1]
    img = screen(rd, tmp)
    assert img.getpixel((100, 100)) == RED and img.getpixel((500, 400)) == BLUE


def test_click_focuses_keys_go_to_the_focused_session_only(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    a0, b0 = len(events(rd, "alpha")), len(events(rd, "beta"))
    l4run("input", "click", "400", "250", "--run-dir", rd)        # beta's view
    l4run("input", "key", "q", "--run-dir", rd)
    wait_for(lambda: (KEY, 1, 16, 0, 0, 0) in events(rd, "beta")[b0:], 20, "beta's key q")
    got = events(rd, "beta")[b0:]
    assert got[0] == (MOTION, 1, 0, 0, 200, 130)                   # view-relative pointer
    assert got.index((FOCUS, 0, 0, 1, 0, 0)) < got.index((BUTTON, 1, 0x110, 1, 200, 130))
    assert not [e for e in events(rd, "alpha")[a0:] if e[0] == KEY]
    img = screen(rd, tmp)
    from servers.nitpicker.compose import BAR_FOCUS
    assert img.getpixel((420, 122)) == BAR_FOCUS                    # beta's bar: focused
    assert img.getpixel((240, 42)) == BAR                           # alpha's: not
    # focus moves with the next click; keys follow it
    l4run("input", "click", "100", "100", "--run-dir", rd)
    l4run("input", "key", "w", "--run-dir", rd)
    wait_for(lambda: (KEY, 1, 17, 1, 0, 0) in events(rd, "alpha")[a0:], 20, "alpha's key w")
    assert (FOCUS, 0, 0, 0, 0, 0) in events(rd, "beta")[b0:]
    assert not [e for e in events(rd, "beta")[b0:] if e[:3] == (KEY, 1, 17)]


def test_xray_key_dims_all_but_the_focused_view_and_reaches_no_client(
        system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    l4run("input", "click", "500", "400", "--run-dir", rd)        # gamma focused
    l4run("input", "key", "f12", "--run-dir", rd)
    img = wait_pixel(rd, tmp, (100, 100), (RED[0] >> 2, 0, 0), "alpha dimmed in X-ray mode")
    assert img.getpixel((500, 400)) == BLUE                         # the focused view is not
    assert img.getpixel((400, 250)) == (0, GREEN[1] >> 2, 0)
    assert bar_has_text(img, 200, 120, 60)     # beta's label, under alpha, shows in X-ray mode
    l4run("input", "key", "f12", "--run-dir", rd)
    wait_pixel(rd, tmp, (100, 100), RED, "X-ray mode off again")
    for t in ("alpha", "beta", "gamma"):
        assert not [e for e in events(rd, t) if e[0] == KEY and e[2] == 88], t


def test_kill_mode_ends_a_killable_client_whose_views_vanish(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    a0 = len(events(rd, "alpha"))
    l4run("input", "key", "f11", "--run-dir", rd)                 # kill mode, then alpha:
    l4run("input", "click", "100", "100", "--run-dir", rd)        # the policy says no
    wait_for(lambda: "does not let session 'alpha'" in log_of(rd, "nitpicker"), 20,
             "Nitpicker to refuse ending alpha")
    before = moe(rd)
    l4run("input", "key", "f11", "--run-dir", rd)                 # kill mode, then gamma
    l4run("input", "click", "500", "400", "--run-dir", rd)
    wait_for(lambda: "'gamma' (label 4) ended (its client is gone)" in log_of(rd, "nitpicker"),
             20, "Nitpicker to drop gamma's session")
    assert "session 'gamma' (label 4) ended" in log_of(rd, "nitpicker")
    img = wait_pixel(rd, tmp, (500, 400), BACKGROUND, "gamma's view gone")
    assert img.getpixel((100, 100)) == RED
    # its buffer (a dataspace of Nitpicker's moe session, 200x120 pixels) went back to moe
    wait_for(lambda: moe(rd)["dataspaces"] == before["dataspaces"] - 1, 10, "gamma's buffer freed")
    assert before["used"] - moe(rd)["used"] >= 200 * 120 * 4
    # neither kill-mode click reached a client; the F11 presses neither
    assert not [e for e in events(rd, "alpha")[a0:] if e[0] == BUTTON or e[0] == KEY]


def test_fb_and_input_restarted_nitpicker_reopens_and_repaints(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    l4run("kill", "fb", "--run-dir", rd)
    l4run("kill", "input", "--run-dir", rd)
    wait_pixel(rd, tmp, (100, 100), RED, "the screen repainted on the new fb server")
    # the new fb server's scan-out memory was mapped to Nitpicker again
    assert log_of(rd, "nitpicker").count("composing straight into the scan-out memory") >= 2
    b0 = len(events(rd, "beta"))

    def typed() -> bool:                  # until the new input server delivers to Nitpicker
        l4run("input", "click", "400", "250", "--run-dir", rd)
        l4run("input", "key", "e", "--run-dir", rd)
        time.sleep(0.3)
        return (KEY, 1, 18, 0, 0, 0) in events(rd, "beta")[b0:]
    wait_for(typed, 20, "keys through the restarted input server")


def test_nitpicker_restarted_clients_recreate_their_views(system: dict[str, Any]) -> None:
    rd, tmp = system["rd"], system["tmp"]
    l4run("kill", "nitpicker", "--run-dir", rd)
    for t in ("alpha", "beta"):
        wait_for(lambda: "NP reopened" in log_of(rd, t), 30, f"{t} to reopen")
    img = wait_pixel(rd, tmp, (100, 100), RED, "alpha redrawn after the restart")
    wait_pixel(rd, tmp, (400, 250), GREEN, "beta redrawn after the restart")
    assert bar_has_text(img, 40, 40, 100)
