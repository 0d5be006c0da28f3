"""The L⁴Linux console in a terminal window: configs/gui.toml with a personality that
provides its gate as a service and a second terminal routed to it.

Typed at the HAL's keyboard (`l4run input type`), through Nitpicker (the window focused by
a click), the terminal's key events become bytes for `console_write`; busybox sh runs the
line inside the personality (the file it writes is read back with `l4run linux run`) and its
output comes back through `console_read` onto the window (the screenshot changes there).
Killing the personality: the window says so and a new shell comes once it is back.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest
from PIL import Image as PILImage

from kernel.user.testing import PROJECT_ROOT
from tests.launcher.helpers import assert_clean, l4run, system_pids, wait_for, write
from tests.launcher.helpers import task_log as log_of

AT = (40, 420)                                   # the Linux terminal's window
EXTRA = f"""
[[task]]
name = "linux-term"
run = "servers.nitpicker.terminal:run"
args = ["60", "8", "{AT[0]}", "{AT[1]}", "L4Linux console"]
memory = "4M"
restart = "on-failure"
caps = {{ gui = {{ service = "nitpicker", label = 6 }}, linux = {{ service = "linux", label = 9 }} }}

[linux]
provides = ["linux"]
init = "echo up"
"""


@pytest.fixture(scope="module")
def gui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gui-linux")
    with open(os.path.join(PROJECT_ROOT, "configs", "gui.toml")) as f:
        text = f.read().replace('"5=pin:1M", ', '"5=pin:1M", "6=linux-console", ')
    assert '"6=linux-console"' in text
    image = write(str(tmp / "gui-linux.toml"), text + EXTRA)
    rd = str(tmp / "run")
    os.makedirs(rd)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--timeout", "120", "--run-dir", rd, timeout=180)
    pids = system_pids(rd)
    try:
        wait_for(lambda: "L4Linux console 1" in log_of(rd, "linux-term"), 60,
                 "the terminal's console session")
        yield {"rd": rd, "tmp": str(tmp)}
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)


def window(g: dict[str, Any]) -> bytes:
    shot = os.path.join(g["tmp"], f"shot{time.monotonic_ns()}.png")
    l4run("screenshot", "-o", shot, "--run-dir", g["rd"])
    img = PILImage.open(shot).convert("RGB")
    return img.crop((AT[0], AT[1] + 20, AT[0] + 60 * 8, AT[1] + 20 + 8 * 12)).tobytes()


def linux_cat(rd: str, path: str) -> str:
    r = l4run("linux", "run", "--run-dir", rd, "--", "cat", path, check=False)
    return r.stdout


def test_a_line_typed_into_the_window_runs_in_linux_and_its_output_shows(gui: Any) -> None:
    rd = gui["rd"]
    before = window(gui)
    l4run("input", "click", str(AT[0] + 100), str(AT[1] + 50), "--run-dir", rd)
    l4run("input", "type", "echo $((6*7)) > /tmp/typed; cat /tmp/typed\\n", "--run-dir", rd)
    wait_for(lambda: linux_cat(rd, "/tmp/typed").strip() == "42", 30,
             "the typed line to run in L4Linux")
    wait_for(lambda: window(gui) != before, 20, "the shell's output on the window")


def test_the_console_comes_back_after_the_personality_restarts(gui: Any) -> None:
    rd = gui["rd"]
    l4run("kill", "linux", "--run-dir", rd)
    wait_for(lambda: "L4Linux console" in log_of(rd, "linux-term")
             and log_of(rd, "linux-term").count("L4Linux console ") >= 2, 60,
             "a new console session after the restart")
    l4run("input", "click", str(AT[0] + 100), str(AT[1] + 50), "--run-dir", rd)
    l4run("input", "type", "echo again > /tmp/again\\n", "--run-dir", rd)
    wait_for(lambda: linux_cat(rd, "/tmp/again").strip() == "again", 30,
             "a line typed after the restart")
