"""The clients of configs/gui.toml, booted as they ship: the terminal, the clock, the PIN entry.

`l4run input` clicks and types at the HAL; `l4run screenshot` shows the result; a test task
(tests/nitpicker/tasks.py `asker`, attached at run time with a route to the `pin` service)
asks the PIN-entry window for a PIN that the test then enters on its keypad.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest
from PIL import Image as PILImage

from kernel.user.testing import PROJECT_ROOT
from servers.nitpicker.compose import LABEL_H
from servers.nitpicker.pin import KEYS
from tests.launcher.helpers import assert_clean, l4run, system_pids, wait_for, write
from tests.launcher.helpers import task_log as log_of
from tests.nitpicker.test_nitpicker import np_line

IMAGE = os.path.join(PROJECT_ROOT, "configs", "gui.toml")
PIN_AT = (700, 300)                      # configs/gui.toml: the pin task's window
ASKER = """
[[task]]
name = "asker"
run = "tests.nitpicker.tasks:asker"
restart = "never"
caps = { pin = { service = "pin", label = 1 } }
"""


@pytest.fixture(scope="module")
def gui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui")
    rd = str(tmp / "run")
    os.makedirs(rd)
    shm_before = set(os.listdir("/dev/shm"))
    # a loaded host boots slowly: up to 120 s
    l4run("boot", IMAGE, "--detach", "--timeout", "120", "--run-dir", rd, timeout=180)
    pids = system_pids(rd)
    try:
        for task, line in (("terminal", "terminal: 80x30"), ("clock", "clock: at"),
                           ("pin", "pin: ready")):
            wait_for(lambda: line in log_of(rd, task), 30, f"{task} to show its window")
        yield {"rd": rd, "tmp": str(tmp)}
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)


def screen(g: dict[str, Any]) -> PILImage.Image:
    shot = os.path.join(g["tmp"], f"shot{time.monotonic_ns()}.png")
    l4run("screenshot", "-o", shot, "--run-dir", g["rd"])
    return PILImage.open(shot).convert("RGB")


def test_terminal_shows_what_is_typed_and_its_feeder_reads_it(gui: dict[str, Any]) -> None:
    rd = gui["rd"]
    l4run("input", "click", "200", "300", "--run-dir", rd)          # the terminal's window
    for k in ("l", "s", "enter"):
        l4run("input", "key", k, "--run-dir", rd)
    wait_for(lambda: "feeder: line 'ls'" in log_of(rd, "feeder"), 20, "the feeder's line")
    img = screen(gui)
    # the terminal's rows 3..5 (under the banner) now carry text: more than the background
    row = 60 + LABEL_H + 2 + 3 * 12
    assert len({img.getpixel((x, y)) for x in range(42, 300) for y in range(row, row + 36)}) >= 2


def test_clock_window_has_its_label_and_ticks(gui: dict[str, Any]) -> None:
    a = screen(gui).crop((680, 60 + LABEL_H, 680 + 200, 60 + 80))
    time.sleep(1.2)
    b = screen(gui).crop((680, 60 + LABEL_H, 680 + 200, 60 + 80))
    assert a.tobytes() != b.tobytes(), "the clock's digits did not change in 1.2 s"


def test_pin_entry_answers_the_digits_clicked_on_its_keypad(gui: dict[str, Any]) -> None:
    rd = gui["rd"]
    l4run("attach", write(os.path.join(gui["tmp"], "asker.toml"), ASKER), "--run-dir", rd)
    np_line(rd, "asker", "asking")
    time.sleep(0.5)                      # the window shows the request
    x0, y0 = PIN_AT[0] + 8, PIN_AT[1] + LABEL_H + 2 + 50
    for k in ("4", "2", "7", "1", "OK"):
        i = KEYS.index(k)
        l4run("input", "click", str(x0 + (i % 3) * 62 + 29), str(y0 + (i // 3) * 44 + 20),
              "--run-dir", rd)
    assert np_line(rd, "asker", "pin") == {"pin": "4271"}
    assert "4271" not in log_of(rd, "pin")           # the PIN went to the asker only
