"""`l4run view` in a real browser: Debian's chromium, headless, driven by Selenium.

The image is tests/nitpicker/image.toml (Nitpicker and its painters alpha, beta, gamma).
`l4run view --port 0` serves the screen; chromium (/usr/bin/chromium, through
/usr/bin/chromedriver given explicitly: nothing is downloaded) opens its URL. The test reads
the page's canvas (getImageData), so what it checks is what reached the browser over the
WebSocket: the windows' pixels and Nitpicker's labels; then clicks a window (the page's
mouse events become HAL input events), types (only the focused client gets the keys), and
presses F12 in the page (Nitpicker's X-ray key: the screen dims but the focused window).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from kernel.user.testing import PROJECT_ROOT
from servers.nitpicker.compose import BAR_FOCUS, LABEL_H
from servers.nitpicker.protocol import KEY
from tests.launcher.helpers import assert_clean, l4run, system_pids, wait_for
from tests.launcher.helpers import task_log as log_of
from tests.nitpicker.test_nitpicker import GREEN, IMAGE, RED, events, np_line

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER))
                                or shutil.which("chromium") is None,
                                reason="Debian chromium and chromium-driver are not installed")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("browser")
    rd = str(tmp / "run")
    os.makedirs(rd)
    shm_before = set(os.listdir("/dev/shm"))
    # a loaded host boots slowly: up to 120 s
    l4run("boot", IMAGE, "--detach", "--timeout", "120", "--run-dir", rd, timeout=180)
    pids = system_pids(rd)
    view = None
    try:
        for t in ("alpha", "beta", "gamma"):
            np_line(rd, t, "drawn")
        view = subprocess.Popen([sys.executable, "-m", "launcher", "view", "--port", "0",
                                 "--run-dir", rd], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert view.stdout is not None
        line = view.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
        assert m, f"l4run view printed {line!r}"
        yield {"rd": rd, "tmp": tmp, "base": m.group(1), "token": m.group(2)}
        pids |= system_pids(rd)
    finally:
        if view is not None:
            view.terminate()
            view.wait(10)
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)


@pytest.fixture
def driver(browser: dict[str, Any]) -> Iterator[Any]:
    """Headless chromium, quit (with every process of it) when the test ends."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=900,700", f"--user-data-dir={browser['tmp'] / 'chromium'}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_script_timeout(10)
    try:
        yield d
    finally:
        d.quit()


def pixel(driver: Any, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = driver.execute_script(
        "const d = document.getElementById('screen').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data; return [d[0], d[1], d[2]];", x, y)
    return int(r), int(g), int(b)


def colours(driver: Any, x: int, y: int, w: int, h: int) -> int:
    return int(driver.execute_script(
        "const d = document.getElementById('screen').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], arguments[2], arguments[3]).data;"
        "const s = new Set(); for (let i = 0; i < d.length; i += 4)"
        " s.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]); return s.size;", x, y, w, h))


def wait_pixel(driver: Any, xy: tuple[int, int], want: tuple[int, int, int], what: str) -> None:
    deadline = time.monotonic() + 15
    while (got := pixel(driver, *xy)) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the canvas shows {got} at {xy}, not {want}")
        time.sleep(0.05)


def click(driver: Any, x: int, y: int) -> None:
    """A real mouse click at canvas pixel (x, y) (Selenium's offsets are from the centre)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    cv = driver.find_element(By.ID, "screen")
    w, h = driver.execute_script("return [arguments[0].width, arguments[0].height]", cv)
    ActionChains(driver).move_to_element_with_offset(cv, x - w // 2, y - h // 2).click().perform()


def test_the_viewer_refuses_requests_without_its_token(browser: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request
    for url in (browser["base"], browser["base"] + "?token=wrong", browser["base"] + "ws"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=5)
        assert e.value.code == 403, url


def test_browser_shows_windows_focus_keys_and_xray(browser: dict[str, Any], driver: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    d, rd = driver, browser["rd"]
    d.get(f"{browser['base']}?token={browser['token']}")
    wait_for(lambda: d.execute_script("return window.l4frames") > 0, 15, "the first frame")
    assert d.execute_script("return [document.getElementById('screen').width, "
                            "document.getElementById('screen').height]") == [640, 480]
    # two clients' windows, each under its label bar drawn by Nitpicker
    wait_pixel(d, (100, 100), RED, "alpha's window")
    assert pixel(d, 400, 250) == GREEN
    assert colours(d, 40, 40, 100, LABEL_H) >= 2 and colours(d, 400, 300, 100, LABEL_H) >= 2
    # a click in the page focuses beta: its label bar turns the focus colour
    a0, b0 = len(events(rd, "alpha")), len(events(rd, "beta"))
    click(d, 400, 250)
    wait_pixel(d, (420, 122), BAR_FOCUS, "beta's focused label bar")
    ActionChains(d).send_keys("zx").perform()
    wait_for(lambda: (KEY, 1, 45, 0, 0, 0) in events(rd, "beta")[b0:], 15, "beta's keys z x")
    assert (KEY, 1, 44, 1, 0, 0) in events(rd, "beta")[b0:]
    assert not [e for e in events(rd, "alpha")[a0:] if e[0] == KEY]
    # F12 in the page: X-ray mode, everything but beta dimmed; no client saw the key
    ActionChains(d).send_keys(Keys.F12).perform()
    wait_pixel(d, (100, 100), (RED[0] >> 2, 0, 0), "alpha dimmed in X-ray mode")
    assert pixel(d, 400, 250) == GREEN
    assert "X-ray mode on" in log_of(rd, "nitpicker")
    assert not [e for t in ("alpha", "beta") for e in events(rd, t) if e[:1] == (KEY,)
                and e[2] == 88]
