"""`l4run trace` on a booted minimal image, ended three ways: `--until-key` with a pipe on
stdin ends at Enter, `--until-key` on a terminal ends at one key press (no Enter), and ^C
(SIGINT) ends a long `--duration` early; each time the trace is turned off, drained and
written as a valid file. A small `--capacity` overflows: the output line and the file's
otherData report how many events were dropped."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from typing import Any

from kernel.user.testing import PROJECT_ROOT
from launcher import control

from tests.launcher.helpers import l4run, wait_for

from .chrome import validate

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def start(rd: str, out: str, *more: str, stdin: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "launcher", "trace", "-o", out, *more,
                             "--run-dir", rd], cwd=PROJECT_ROOT, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recording(rd: str) -> bool:
    return bool(control.request(rd, "trace", action="status")["on"])


def written(p: subprocess.Popen[str], out: str) -> tuple[str, dict[str, Any]]:
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    with open(out) as f:
        trace = json.load(f)
    validate(trace)
    return stdout, trace


def test_until_key_sigint_and_dropped(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        wait_for(lambda: "hello, world" in l4run("logs", "client", "--run-dir", rd).stdout,
                 timeout=30, what="the client's first answer")
        # --until-key, stdin a pipe: Enter ends it
        out = str(tmp_path / "key.json")
        p = start(rd, out, "--until-key")
        wait_for(lambda: recording(rd), 30, "the trace to be on")
        time.sleep(1.2)                               # the client calls every 0.5 s
        assert p.poll() is None, "still recording until Enter"
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        stdout, trace = written(p, out)
        assert any(e["ph"] == "X" and e["name"].startswith("call hello")
                   for e in trace["traceEvents"]), trace
        assert not recording(rd) and trace["otherData"]["dropped"] == 0
        assert "dropped" not in stdout

        # --until-key on a terminal: one key, no Enter
        out = str(tmp_path / "tty.json")
        master, slave = pty.openpty()
        try:
            p = start(rd, out, "--until-key", stdin=slave)
            assert p.stderr is not None
            ready, _, _ = select.select([p.stderr], [], [], 30)
            assert ready and "press a key" in p.stderr.readline()
            assert recording(rd)
            os.write(master, b"q")
            written(p, out)
        finally:
            os.close(master)
            os.close(slave)
        assert not recording(rd)

        # ^C ends a long recording early; the file is still written. A ring of 8 overflows.
        out = str(tmp_path / "int.json")
        p = start(rd, out, "--duration", "120", "--capacity", "8")
        wait_for(lambda: recording(rd), 30, "the trace to be on")
        wait_for(lambda: control.request(rd, "trace", action="status")["dropped"] > 0, 30,
                 "the small ring to overflow")
        p.send_signal(signal.SIGINT)
        stdout, trace = written(p, out)
        other = trace["otherData"]
        assert other["capacity"] == 8 and other["dropped"] > 0, other
        assert other["recorded"] == other["dropped"] + other["kernel_events"], other
        assert f"{other['dropped']} dropped (the ring holds 8)" in stdout, stdout
        assert not recording(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)
