"""Images with devices: the launcher starts the HAL and io, drivers get exactly their devices.

Real processes throughout: `l4run boot configs/devices.toml` in a temporary run directory —
the DDE device servers (block, fb, input, nic: Linux-style drivers on the DDE/Linux glue and
DDEKit) with their demo clients doing DMA, drawing and taking interrupts, and a probe that
io refuses a device; `l4run screenshot`, `input`, `faults` against the live HAL; the HAL
killed and everything on it back; every way of stopping leaves nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal

import psutil
import pytest
from PIL import Image as PILImage

from kernel.user.testing import PROJECT_ROOT
from launcher.image import ImageError, parse_image
from servers.fb import demo

from .helpers import assert_clean, l4run, ps, ram_holders, shm, system_pids, wait_for, write
from .helpers import task_log as log_of

DEVICES = os.path.join(PROJECT_ROOT, "configs", "devices.toml")
ACK = re.compile(r"^block-demo: ACK (\d+) (\d+) ([0-9a-f]{64})$", re.M)
SERVERS = ["block", "fb", "input", "nic", "probe"]       # the tasks io's policy names


def wait_log(rd: str, task: str, text: str, count: int = 1) -> None:
    wait_for(lambda: log_of(rd, task).count(text) >= count, 30,
             f"{text!r} {count}x in the log of {task}")


def assert_clean_devices(rd: str, pids: set[int], before: set[str]) -> None:
    try:
        wait_for(lambda: not [f for f in os.listdir(rd) if f.endswith((".sock", ".ctl"))], 10,
                 "socket files to go")
    except AssertionError:
        raise AssertionError(f"left in {rd}: {os.listdir(rd)}; alive: "
                             f"{[p for p in pids if psutil.pid_exists(p)]}") from None
    assert_clean(rd, pids, before)
    assert not os.path.exists(os.path.join(rd, "hal.ctl"))
    assert not ram_holders() & pids
    left = set(os.listdir(rd)) - {"disk0.img", "logs", "launcher.log"}
    assert not left, f"left in the run directory: {left}"


def assert_disk_has_last_ack(rd: str, acks_before: int = 0) -> None:
    """The writer's last acknowledged round is on the disk image, byte for byte: the test
    reads the file itself. (The writer's next rounds go to other sectors: 7 regions of
    1 MiB on the 8 MiB disk, one round every 2 s.)"""
    wait_for(lambda: len(ACK.findall(log_of(rd, "writer"))) > acks_before, 30,
             "an acknowledged round of the writer")
    first, count, digest = ACK.findall(log_of(rd, "writer"))[-1]
    with open(os.path.join(rd, "disk0.img"), "rb") as f:
        f.seek(int(first) * 512)
        data = f.read(int(count) * 512)
    assert hashlib.sha256(data).hexdigest() == digest, f"sectors {first}+{count} differ"


def picture_ok(rd: str, shot: str) -> bool:
    """The GUI demo's test picture (servers/fb/demo.py) is what `l4run screenshot` shows."""
    assert l4run("screenshot", "-o", shot, "--run-dir", rd).stdout.strip() == f"screenshot: {shot}"
    img = PILImage.open(shot).convert("RGB")
    assert img.size == (640, 480)
    want = [((x + size // 2, y + size // 2), rgb) for x, y, size, rgb in demo.squares(640, 480)]
    want += [((x + 1, y + 1), rgb) for x, y, size, rgb in demo.squares(640, 480)]
    bw = 640 // len(demo.BARS)
    want += [((i * bw + bw // 2, demo.BAR_HEIGHT // 2), rgb) for i, rgb in enumerate(demo.BARS)]
    want += [((320, 478), demo.WHITE), ((1, 240), demo.WHITE), ((320, 460), demo.BACKGROUND)]
    return all(img.getpixel(xy) == rgb for xy, rgb in want)


def draws(rd: str) -> int:
    """How often the GUI demo drew its picture (at its start, or after an fb restart)."""
    text = log_of(rd, "gui")
    return text.count("demo: drew the test picture") + text.count("picture redrawn")


def test_devices_image(tmp_path):
    rd, before = str(tmp_path / "run"), shm()
    out = l4run("boot", DEVICES, "--detach", "--run-dir", rd).stdout
    assert re.search(r": 1[12]/12 tasks running", out), out   # netdemo may be done already
    rows = ps(rd)
    assert list(rows)[:4] == ["sigma0", "moe", "hal", "io"] and rows["io"]["uses"] == ["hal"]
    for name in SERVERS:
        assert "io" in rows[name]["uses"], rows[name]                   # its devices
    assert rows["block"]["uses"] == ["io", "sigma0"]                    # and its DMA memory
    assert rows["writer"]["uses"] == ["block"] and rows["gui"]["uses"] == ["fb", "input"]
    pids = system_pids(rd)
    try:
        # the block server's DMA writes are on the disk image, verified by the writer too
        assert_disk_has_last_ack(rd)
        wait_log(rd, "writer", "round 0 at sector 0: verified")
        assert "MISMATCH" not in log_of(rd, "writer")

        # the GUI demo's picture, drawn through the fb server, comes out in the screenshot
        wait_log(rd, "gui", "demo: drew the test picture (640x480 at 0,0)")
        shot = str(tmp_path / "shot.png")
        assert picture_ok(rd, shot)

        # injected input reaches the input server through its interrupt, then the demo
        wait_log(rd, "gui", "demo: reading input")
        assert "2 event(s) queued" in l4run("input", "key", "a", "--run-dir", rd).stdout
        wait_log(rd, "gui", "demo: key 30 release")
        assert "demo: key 30 press" in log_of(rd, "gui")
        l4run("input", "click", "12", "34", "right", "--run-dir", rd)
        wait_log(rd, "gui", "demo: key 273 release")                 # BTN_RIGHT
        assert "demo: abs x 12" in log_of(rd, "gui") and "demo: abs y 34" in log_of(rd, "gui")
        l4run("input", "move", "100", "200", "--run-dir", rd)
        wait_log(rd, "gui", "demo: abs y 200")
        assert "demo: abs x 100" in log_of(rd, "gui")

        # frames out through the nic server and back through the loopback NIC
        wait_log(rd, "netdemo", "nic-demo: sent 1000 received 1000 intact 1000")

        # io gives each task exactly its policy: the probe gets timer0, not disk0
        wait_log(rd, "probe", "probe: done")
        probe = log_of(rd, "probe")
        assert "probe: the bus lists ['timer0'] for this task" in probe
        assert "probe: timer0: granted (timer" in probe
        assert "probe: disk0: refused: DeviceDenied" in probe and "DENIED" in probe

        # fault knobs through l4run faults; errors are one line
        out = l4run("faults", "disk0", "error_rate=0.25", "latency_ms=2", "--run-dir", rd).stdout
        assert "error_rate=0.25" in out and "latency_ms=2.0" in out
        l4run("faults", "disk0", "error_rate=0", "latency_ms=0", "--run-dir", rd)
        for args, why in ((("faults", "disk0", "bogus=1"), "no fault knob 'bogus'"),
                          (("faults", "nic9", "loss=1"), "no device 'nic9'"),
                          (("faults", "disk0", "loss"), "expected KNOB=VALUE"),
                          (("input", "key", "nosuchkey"), "unknown key 'nosuchkey'"),
                          (("input", "click", "5"), "click X Y"),
                          (("screenshot", "--device", "nic0", "-o", shot), "not a fb")):
            r = l4run(*args, "--run-dir", rd, check=False)
            assert r.returncode == 1 and why in r.stderr, r.stderr
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean_devices(rd, pids, before)


def test_hal_restart_rewires_io_and_drivers(tmp_path):
    """kill -9 of the HAL: io and the device servers restart with it; their clients reopen
    their sessions and work again."""
    rd, before = str(tmp_path / "run"), shm()
    l4run("boot", DEVICES, "--detach", "--run-dir", rd)
    try:
        wait_log(rd, "gui", "demo: reading input")
        wait_log(rd, "probe", "probe: done")
        wait_log(rd, "netdemo", "intact 1000")
        assert_disk_has_last_ack(rd)
        drawn = draws(rd)
        l4run("kill", "hal", "--run-dir", rd)
        # the HAL, io and every task io's policy names restart; the rest keep running
        wait_for(lambda: all(r["state"] == "running" and r["restarts"] >= 1
                             for n, r in ps(rd).items() if n in ["hal", "io", *SERVERS]),
                 30, "hal, io and the device servers restarted")
        assert all(ps(rd)[n]["state"] == "running" for n in ("sigma0", "moe", "writer"))
        wait_log(rd, "probe", "probe: done", 2)
        assert log_of(rd, "probe").count("disk0: refused: DeviceDenied") == 2
        # the writer's rounds go on against the new block server, and reach the disk
        assert_disk_has_last_ack(rd, len(ACK.findall(log_of(rd, "writer"))))
        # the GUI demo redraws on the new fb server (it reopens its session, or it is
        # restarted: servers/input/client.py faults on the ring the dead server unmapped)
        # and reads the new input server
        wait_for(lambda: draws(rd) > drawn, 30, "the GUI demo's picture drawn again")
        wait_for(lambda: picture_ok(rd, str(tmp_path / "again.png")), 30, "the picture again")
        key_reaches_gui(rd, "z", 44)          # once its input session is reopened
        # the NIC demo, run again, gets its 1,000 frames back through the new nic server
        l4run("start", "netdemo", "--run-dir", rd)
        wait_log(rd, "netdemo", "nic-demo: sent 1000 received 1000 intact 1000", 2)
        pids = system_pids(rd)
    except BaseException:
        l4run("down", "--run-dir", rd, check=False)
        raise
    os.kill(ps_pid(rd), signal.SIGKILL)          # kill -9 of the launcher: the zygote cleans up
    assert_clean_devices(rd, pids, before)


def key_reaches_gui(rd: str, key: str, code: int) -> None:
    """Press `key` until the GUI demo logs it: a client reopens its input session only at
    its next poll after the input server restarted, and input before that is nobody's."""
    for _ in range(15):
        l4run("input", "key", key, "--run-dir", rd)
        try:
            return wait_for(lambda: f"demo: key {code} press" in log_of(rd, "gui"), 2)
        except AssertionError:
            continue
    raise AssertionError(f"key {key} never reached the GUI demo")


def ps_pid(rd: str) -> int:
    with open(os.path.join(rd, "launcher.json")) as f:
        return int(json.load(f)["pid"])


def test_no_hal_is_one_line(tmp_path):
    r = l4run("screenshot", "--run-dir", str(tmp_path), check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "no HAL control socket" in r.stderr and "lists no [[device]]" in r.stderr


GOOD_TASK = '[[task]]\nname = "d"\nrun = "servers.ddekit.probe:run"\ndevices = ["disk0"]\n'


def problems(text: str, path: str = "img.toml") -> list[str]:
    import tomllib
    with pytest.raises(ImageError) as e:
        parse_image(tomllib.loads(text), path)
    return e.value.problems


@pytest.mark.parametrize("devices, key, reason", [
    ('kind = "gpu"\nname = "g0"', "device[0].kind", "unknown device kind 'gpu'"),
    ('kind = "disk"\nname = "disk0"\nsize = 1000', "device[0] (disk0).size", "multiple of 512"),
    ('kind = "disk"\nname = "disk0"\nsize = "lots"', "device[0] (disk0).size", "bad size"),
    ('kind = "disk"\nname = "disk0"', "device[0] (disk0).size", "needs a size"),
    ('kind = "disk"\nname = "disk0"\nimage = "/nonexistent/x.img"', "device[0] (disk0).image",
     "does not exist"),
    ('kind = "disk"\nname = "disk0"\nsize = "1M"\nspeed = 3', "device[0] (disk0).speed",
     "unknown parameter for a disk"),
    ('kind = "fb"\nname = "disk0"\nwidth = 8192\nheight = 8192', "device[0] (disk0)",
     "does not fit in RAM"),
    ('kind = "fb"\nname = "disk0"\nwidth = 0', "device[0] (disk0).width", "expected an integer 1..8192"),
    ('kind = "nic"\nname = "disk0"\nbackend = "wifi"', "device[0] (disk0).backend",
     "unknown NIC back end 'wifi'"),
    ('kind = "nic"\nname = "disk0"\nbackend = "udp"\npeer = "nowhere"', "device[0] (disk0).peer",
     "expected \"HOST:PORT\""),
    ('kind = "timer"\nname = "disk0"\nline = 40', "device[0] (disk0).line", "0..31"),
    ('kind = "timer"\nname = "pic"', "device[0] (pic).name", "always named 'pic'"),
])
def test_bad_device_tables(devices, key, reason):
    found = problems(f'[system]\nname = "x"\n[[device]]\n{devices}\n' + GOOD_TASK)
    assert any(p.startswith(f"img.toml: {key}: ") and reason in p for p in found), found


def test_bad_device_wiring():
    base = ('[system]\nname = "x"\n[[device]]\nkind = "timer"\nname = "t0"\nline = 3\n'
            '[[device]]\nkind = "input"\nname = "t0"\n[[device]]\nkind = "input"\nname = "i1"\nline = 3\n')
    found = problems(base + '[[task]]\nname = "hal"\nrun = "servers.ddekit.probe:run"\n'
                            'devices = ["t9"]\n[task.caps]\nio = "hal"\n')
    want = [("device[1] (t0).name", "duplicate device name 't0'"),
            ("device[2] (i1).line", "line 3 is already taken by 't0'"),
            ("task[0] (hal).devices", "unknown device 't9'"),
            ("task[0] (hal).name", "reserved"),
            ("task[0] (hal).caps.io", "taken by the io capability")]
    for key, reason in want:
        assert any(p.startswith(f"img.toml: {key}: ") and reason in p for p in found), (key, found)
    # devices without any [[device]]
    found = problems('[system]\nname = "x"\n' + GOOD_TASK)
    assert any("task[0] (d).devices: unknown device 'disk0'" in p and "no [[device]]" in p
               for p in found), found


def test_device_image_wiring():
    """The policy: one io label per driver, naming exactly its devices; hal and io first."""
    import json
    import tomllib
    text = ('[system]\nname = "x"\n[[device]]\nkind = "disk"\nname = "disk0"\nsize = "64K"\n'
            '[[device]]\nkind = "pic"\nname = "pic"\n' + GOOD_TASK +
            '[[task]]\nname = "e"\nrun = "servers.ddekit.probe:run"\ndevices = ["pic", "disk0"]\n'
            '[[task]]\nname = "f"\nrun = "servers.ddekit.probe:run"\n')
    img = parse_image(tomllib.loads(text), "img.toml")
    assert [t.name for t in img.tasks] == ["hal", "io", "d", "e", "f"]
    assert img.tasks[0].args == ["disk:disk0:size=65536"]
    labels = {t.name: [c.label for c in t.caps if c.local == "io"] for t in img.tasks}
    assert labels["f"] == [] and len(labels["d"]) == len(labels["e"]) == 1
    policy = json.loads(img.tasks[1].args[0])
    assert policy == {str(labels["d"][0]): ["disk0"], str(labels["e"][0]): ["pic", "disk0"]}


def test_cli_rejects_bad_device_image(tmp_path):
    img = write(str(tmp_path / "bad.toml"), '[system]\nname = "x"\n[[device]]\nkind = "gpu"\n'
                                            'name = "g"\n' + GOOD_TASK)
    r = l4run("boot", img, "--run-dir", str(tmp_path / "run"), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{img}: device[0].kind: unknown device kind 'gpu'" in r.stderr
    assert "nothing was started" in r.stderr


def test_snippet_cannot_take_devices():
    from launcher.image import check_snippet
    with pytest.raises(ImageError) as e:
        check_snippet({"task": [{"name": "late", "run": "servers.ddekit.probe:run",
                                 "devices": ["disk0"]}]}, "snip.toml", {"io": "io"}, {"io"})
    assert any("task[0] (late).devices: an attached task cannot be given devices" in p
               for p in e.value.problems), e.value.problems


def test_sigterm_of_foreground_launcher_leaves_nothing(tmp_path):
    """The foreground launcher (as under Ctrl-C or systemd) stopped by SIGTERM: HAL and all."""
    import subprocess
    import sys
    rd, before = str(tmp_path / "run"), shm()
    p = subprocess.Popen([sys.executable, "-m", "launcher", "boot", DEVICES, "--plain",
                          "--run-dir", rd], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(os.path.join(rd, "hal.ctl")), 30, "the HAL")
        wait_log(rd, "gui", "demo: drew the test picture")
        pids = system_pids(rd)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_clean_devices(rd, pids, before)


def test_io_admin_label_is_the_launchers():
    """Label 0 is io's admin gate (set_policy): an image may not route "io" with it."""
    found = problems('[system]\nname = "x"\n[[device]]\nkind = "timer"\nname = "t0"\n'
                     '[[task]]\nname = "sneak"\nrun = "servers.ddekit.probe:run"\n'
                     '[task.caps]\nctl = { service = "io" }\n')
    assert any(p.startswith("img.toml: task[0] (sneak).caps.ctl.label: ") and "admin gate" in p
               for p in found), found
