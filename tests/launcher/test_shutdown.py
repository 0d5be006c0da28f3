"""Every way of stopping a system leaves nothing behind: no process, no socket, no /dev/shm.

Also the CLI surface: boot --detach, ps --json fields, logs, one-line errors.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kernel.user.testing import PROJECT_ROOT
from launcher import control

from .helpers import assert_clean, l4run, ps, shm, system_pids, wait_for

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def ready(rd: str) -> bool:
    try:
        return bool(control.request(rd, "status", timeout_ms=500).get("ready"))
    except control.NotRunning:
        return False


def test_detach_ps_logs_down(tmp_path):
    rd, before = str(tmp_path / "run"), shm()
    out = l4run("boot", MINIMAL, "--detach", "--run-dir", rd).stdout
    assert "2/2 tasks running" in out
    rows = ps(rd)
    assert set(rows) == {"hello", "client"}
    for r in rows.values():
        assert {"name", "pid", "state", "restart", "restarts"} <= set(r)
        assert r["state"] == "running" and r["pid"] > 0 and r["restarts"] == 0
    assert rows["hello"]["restart"] == "on-failure"
    wait_for(lambda: "hello, world" in l4run("logs", "client", "--run-dir", rd).stdout)
    snippet = tmp_path / "snip.toml"
    snippet.write_text('[[task]]\nname = "echo"\nrun = "servers.hello.server:serve"\n'
                       'args = ["echo"]\nprovides = ["echo"]\n'
                       '[[route]]\ntask = "client"\nservice = "echo"\n')
    assert "attached: echo; routes: client.echo" in l4run("attach", str(snippet), "--run-dir", rd).stdout
    assert ps(rd)["echo"]["state"] == "running"
    bad = l4run("attach", str(snippet), "--run-dir", rd, check=False)
    assert bad.returncode == 1 and "duplicate task name 'echo'" in bad.stderr
    pids = system_pids(rd)
    err = l4run("stop", "nosuch", "--run-dir", rd, check=False)
    assert err.returncode == 1 and err.stderr.count("\n") == 1 and "no task named 'nosuch'" in err.stderr
    l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, before)
    err = l4run("ps", "--run-dir", rd, check=False)
    assert err.returncode == 1 and "no system is running" in err.stderr and "Traceback" not in err.stderr


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_signals_to_the_launcher_leave_nothing(tmp_path, how):
    rd, before = str(tmp_path / "run"), shm()
    launcher = subprocess.Popen([sys.executable, "-m", "launcher", "boot", MINIMAL, "--plain",
                                 "--run-dir", rd], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ready(rd) or launcher.poll() is not None, 30, "the system to boot")
        assert launcher.poll() is None
        pids = system_pids(rd)
        assert len(pids) == 5
        launcher.send_signal(getattr(signal, how))
        launcher.wait(20)
        if how != "SIGKILL":
            assert launcher.returncode == 0
        assert_clean(rd, pids, before)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_two_systems_side_by_side_and_busy_run_dir(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    l4run("boot", MINIMAL, "--detach", "--run-dir", a)
    try:
        l4run("boot", MINIMAL, "--detach", "--run-dir", b)
        again = l4run("boot", MINIMAL, "--detach", "--run-dir", a, check=False)
        assert again.returncode == 1 and "already running" in again.stderr
        assert ps(a)["hello"]["pid"] != ps(b)["hello"]["pid"]
    finally:
        l4run("down", "--run-dir", b, check=False)
        l4run("down", "--run-dir", a, check=False)


def test_bench_commands_report_json():
    import json
    out = json.loads(l4run("bench", "boot", "--runs", "1", "--json").stdout)
    assert out["bench"] == "boot" and out["boot_ms"] > 0
    out = json.loads(l4run("bench", "restart", "--runs", "2", "--json").stdout)
    assert out["bench"] == "restart" and out["restart_ms"] > 0


def test_attach_finds_task_modules_beside_the_snippet(tmp_path):
    """A user attaches a server whose module lives next to the snippet, from another
    directory: the launcher validates and the spawner imports it from there."""
    before = shm()
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        mod = f"attached_mod_{os.getpid()}"
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / f"{mod}.py").write_text(
            "import time\n\ndef serve(l4):\n    print('attached module alive', flush=True)\n"
            "    while True:\n        time.sleep(1)\n")
        snippet = mine / "snip.toml"
        snippet.write_text(f'[[task]]\nname = "mine"\nrun = "{mod}:serve"\n')
        out = l4run("attach", os.path.relpath(snippet, tmp_path), "--run-dir", rd, "--wait",
                    cwd=str(tmp_path))
        assert "attached: mine" in out.stdout
        assert ps(rd)["mine"]["state"] == "running"
        wait_for(lambda: "attached module alive" in l4run("logs", "mine", "--run-dir", rd).stdout)
        pids = system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, before)
