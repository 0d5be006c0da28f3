"""`l4run top` on a booted minimal image: `--once --json` answers one row per task with its
rates and counts; the client calls hello all the time, so between two looks its IPC count
grows and its IPC rate is above zero, and hello's count grows with it; the rows are sorted by
the column asked for; the table form names the tasks; the live form refreshes until ^C."""
from __future__ import annotations

import pytest

import json
import os
import signal
import subprocess
import sys
import time

from kernel.user.testing import PROJECT_ROOT

from .helpers import l4run, wait_for

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
KEYS = {"name", "pid", "state", "restarts", "rss_kb", "cpu_pct", "ipc", "calls", "faults",
        "errors", "ipc_per_s", "calls_per_s", "faults_per_s", "errors_per_s"}


def top(rd: str, *more: str) -> dict[str, dict]:
    rows = json.loads(l4run("top", "--once", "--json", "--interval", "1.5", *more,
                            "--run-dir", rd).stdout)
    for r in rows:
        assert set(r) == KEYS, r
    return {r["name"]: r for r in rows}


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_top_once_json_numbers_grow(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        wait_for(lambda: "hello, world" in l4run("logs", "client", "--run-dir", rd).stdout,
                 timeout=30, what="the client's first answer")
        first = top(rd)
        assert {"hello", "client"} <= set(first)
        second = top(rd, "--sort", "ipc")
        for name in ("hello", "client"):
            a, b = first[name], second[name]
            assert b["state"] == "running" and b["pid"] and b["rss_kb"] > 0, b
            assert b["ipc"] > a["ipc"] and b["calls"] > a["calls"], (a, b)
            assert b["ipc_per_s"] > 0 and b["calls_per_s"] > 0, b
            assert b["cpu_pct"] is not None and b["cpu_pct"] >= 0, b
            assert b["faults"] >= a["faults"] >= 0 and b["errors_per_s"] >= 0, b
        ipcs = [r["ipc"] for r in json.loads(l4run(
            "top", "--once", "--json", "--interval", "0.2", "--sort", "ipc",
            "--run-dir", rd).stdout)]
        assert ipcs == sorted(ipcs, reverse=True), ipcs
        text = l4run("top", "--once", "--interval", "0.2", "--run-dir", rd).stdout
        assert "client" in text and "IPC/s" in text
        # live: refreshes until ^C, then ends cleanly
        live = subprocess.Popen([sys.executable, "-m", "launcher", "top", "--interval", "0.3",
                                 "--run-dir", rd], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=30)
        assert live.returncode == 0, err
        assert out.count("^C quits") >= 2 and "client" in out, out
    finally:
        l4run("down", "--run-dir", rd, check=False)
