"""Death of the kernel is clean (issue 11, item 6): whoever kills it, nothing is left.

The launcher watches the kernel through a pidfd and reaps it at once, so a kernel that
was SIGKILLed — even while the launcher waits on it in a call — ends the system: every
task, the zygote, the launcher, and every socket file and state file in the run
directory. `l4run down` exits 0 in every state: kernel dead, launcher dead, both.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from kernel.user.testing import PROJECT_ROOT
from launcher import control

from tests.launcher.helpers import assert_clean, gone, l4run, shm, system_pids, wait_for

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def boot(tmp_path: Any) -> tuple[str, set[int], dict[str, Any]]:
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    st = control.read_state(rd)
    assert st is not None
    return rd, system_pids(rd), st


def down_exits_0(rd: str) -> str:
    p = l4run("down", "--run-dir", rd, check=False)
    assert p.returncode == 0, p.stderr
    assert "is down" in p.stdout
    return p.stdout


def launcher_log(rd: str) -> str:
    with open(os.path.join(rd, "launcher.log"), errors="replace") as f:
        return f.read()


def test_sigkill_of_the_kernel_ends_everything(tmp_path: Any) -> None:
    before = shm()
    rd, pids, st = boot(tmp_path)
    try:
        os.kill(st["kernel_pid"], signal.SIGKILL)
        assert_clean(rd, pids, before)
        assert not [f for f in os.listdir(rd) if f.endswith((".sock", ".ctl"))]
        assert f"the kernel (pid {st['kernel_pid']}) died (killed by SIGKILL)" in launcher_log(rd)
        down_exits_0(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)


def test_a_kernel_killed_while_the_launcher_waits_on_it(tmp_path: Any) -> None:
    """The launcher is inside a kernel call (a `ps` asking KERNEL_INFO of a stopped kernel)
    when the kernel is SIGKILLed: a zombie that kill(pid, 0) calls alive. The pidfd sees
    it dead; the call ends, and so does the system."""
    before = shm()
    rd, pids, st = boot(tmp_path)
    kpid = st["kernel_pid"]
    asking = None
    try:
        os.kill(kpid, signal.SIGSTOP)
        asking = subprocess.Popen([sys.executable, "-m", "launcher", "ps", "--run-dir", rd],
                                  cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)                     # the launcher is now blocked in kernel_info
        os.kill(kpid, signal.SIGKILL)
        asking.wait(20)                     # answered, or told nobody answers: it ends
        assert_clean(rd, pids, before)
        down_exits_0(rd)
    finally:
        if asking is not None and asking.poll() is None:
            asking.kill()
            asking.wait()
        l4run("down", "--run-dir", rd, check=False)


def test_down_after_the_launcher_was_killed(tmp_path: Any) -> None:
    """The launcher SIGKILLed: its kernel and zygote go with it (they die with their
    parent) and `l4run down` still exits 0, nothing left."""
    before = shm()
    rd, pids, st = boot(tmp_path)
    try:
        os.kill(st["pid"], signal.SIGKILL)
        wait_for(lambda: gone(st["pid"]), 10, "the launcher to die")
        down_exits_0(rd)
        assert_clean(rd, pids, before)
    finally:
        l4run("down", "--run-dir", rd, check=False)


def test_down_after_everything_was_killed_at_once(tmp_path: Any) -> None:
    """Launcher, zygote and kernel SIGKILLed together: nobody is left to remove the socket
    files and the state; `l4run down` does, and exits 0."""
    before = shm()
    rd, pids, st = boot(tmp_path)
    try:
        for key in ("pid", "zygote_pid", "kernel_pid"):
            os.kill(st[key], signal.SIGKILL)
        wait_for(lambda: all(gone(st[k]) for k in ("pid", "zygote_pid", "kernel_pid")), 10,
                 "launcher, zygote and kernel to die")
        down_exits_0(rd)
        assert_clean(rd, pids, before)
    finally:
        l4run("down", "--run-dir", rd, check=False)
