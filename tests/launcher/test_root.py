"""The root task is a lean process of its own (launcher/root.py), not the `l4run` CLI.

The root task is in every task's trusted computing base (launcher/tcb.py counts it), so
what it loads is checked on the running process itself — its `sys.modules`, answered by
the control command `modules` — and not on a wish: no click, no rich, no psutil, no
Pillow, none of the CLI's command modules. Also: the three ways to boot all run that
entry (--detach in the background; --plain execs it, same pid; the live table runs it as
a child and Ctrl-C stops both), its errors are one line, and `l4run tcb` measures root
from the live process.
"""
from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys

from kernel.user.testing import PROJECT_ROOT
from launcher import control, tcb

from .helpers import assert_clean, l4run, shm, system_pids, wait_for, write

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
NOT_IN_ROOT = ("click", "rich", "psutil", "PIL", "launcher.cli", "launcher.tcb",
               "launcher.view", "launcher.trace", "launcher.selftest", "launcher.chaos")


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def ready(rd: str) -> bool:
    try:
        return bool(control.request(rd, "status", timeout_ms=500).get("ready"))
    except control.NotRunning:
        return False


def test_the_detached_root_loads_no_cli_code(tmp_path):
    rd, before = str(tmp_path / "run"), shm()
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        pid = control.request(rd, "status")["pid"]
        assert cmdline(pid)[1:3] == ["-m", "launcher.root"]
        live = control.request(rd, "modules")
        bad = [m for m in live["modules"] if m.startswith(NOT_IN_ROOT)]
        assert not bad, f"the root task loaded {bad}"
        # what a fresh import of its entry loads, the live process holds too (the entry
        # tcb.py falls back to is not smaller than the truth)
        fresh = {tcb._source(f) for f in tcb.loaded_files(tcb.ENTRIES[tcb.ROOT])}
        held = {tcb._source(f) for f in live["files"]}
        assert {f for f in fresh if tcb._kind(f)} <= held | {os.path.join(
            PROJECT_ROOT, "launcher", "root.py")}
        r = tcb.report(*_graph_and_rows(rd), "client", None, live["files"])
        root = next(c for c in r["components"] if c["name"] == "root")
        assert root["measured"] == "live process"
        assert not [f for f in tcb.size_of(live["files"], {}).files
                    if "/site-packages/" in f and f.split("/site-packages/")[1].split("/")[0]
                    in ("click", "rich", "psutil", "PIL")]
        pids = system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, before)


def _graph_and_rows(rd: str) -> tuple[dict, list]:
    from launcher import caps
    return (caps.graph(control.request(rd, "caps")["tasks"]),
            control.request(rd, "ps")["tasks"])


def test_plain_boot_becomes_the_root_task(tmp_path):
    """--plain execs the lean entry: the pid we started is the root task; SIGINT ends it."""
    rd, before = str(tmp_path / "run"), shm()
    p = subprocess.Popen([sys.executable, "-m", "launcher", "boot", MINIMAL, "--plain",
                          "--run-dir", rd], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready(rd) or p.poll() is not None, 30, "the system to boot")
        assert control.request(rd, "status")["pid"] == p.pid
        assert cmdline(p.pid)[1:3] == ["-m", "launcher.root"]
        pids = system_pids(rd)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0
        assert "[l4run] booting 'minimal'" in err and "protections:" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_clean(rd, pids, before)


def test_live_table_runs_beside_the_root_and_ctrl_c_stops_both(tmp_path):
    rd, before = str(tmp_path / "run"), shm()
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "launcher", "boot", MINIMAL, "--run-dir", rd],
                         cwd=PROJECT_ROOT, stdin=follower, stdout=follower, stderr=follower,
                         start_new_session=True)
    os.close(follower)
    seen = bytearray()

    def drain() -> None:
        import select
        while select.select([leader], [], [], 0)[0]:
            try:
                seen.extend(os.read(leader, 65536))
            except OSError:
                return
    try:
        wait_for(lambda: (drain(), ready(rd) or p.poll() is not None)[1], 60, "the boot")
        root = control.request(rd, "status")["pid"]
        assert root != p.pid and cmdline(root)[1:3] == ["-m", "launcher.root"]
        wait_for(lambda: (drain(), b"hello" in seen)[1], 10, "the table to show the tasks")
        pids = system_pids(rd) | {root}
        os.killpg(p.pid, signal.SIGINT)              # what Ctrl-C on the terminal does
        wait_for(lambda: (drain(), p.poll() is not None)[1], 20, "the CLI to exit")
        drain()
        assert p.returncode == 0, seen.decode(errors="replace")[-500:]
        assert b"is down." in seen
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        os.close(leader)
    assert_clean(rd, pids, before)
    with open(os.path.join(rd, "launcher.log")) as f:
        assert "[l4run] booting 'minimal'" in f.read()


def test_root_errors_are_one_line(tmp_path):
    bad = write(str(tmp_path / "bad.toml"), '[[task]]\nname = "x"\n')
    r = subprocess.run([sys.executable, "-m", "launcher.root", bad, "--run-dir",
                        str(tmp_path / "run")], cwd=PROJECT_ROOT, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "nothing was started" in r.stderr.splitlines()[-1]
    assert r.stderr.splitlines()[-1].startswith("l4run: ") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "launcher.root"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no IMAGE given" in r.stderr and "usage:" in r.stderr
