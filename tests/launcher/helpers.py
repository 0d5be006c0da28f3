"""Shared helpers: write images, run l4run, check that a system left nothing behind."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil

from kernel.user.testing import PROJECT_ROOT

HELLO = "servers.hello.server:serve"
CLIENT = "servers.hello.client:run"


def l4run(*args: str, check: bool = True, timeout: float = 60,
          cwd: str = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"l4run {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def ps(run_dir: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(l4run("ps", "--json", "--run-dir", run_dir).stdout)}


def wait_for(pred: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def system_pids(run_dir: str) -> set[int]:
    """Launcher, kernel, zygote and every task pid of the system in `run_dir`."""
    with open(os.path.join(run_dir, "launcher.json")) as f:
        st = json.load(f)
    pids = {st["pid"], st["kernel_pid"], st["zygote_pid"]}
    pids |= {r["pid"] for r in ps(run_dir).values() if r["pid"]}
    return pids


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def shm() -> set[str]:
    """What /dev/shm holds now (to compare with after the system is down)."""
    return set(os.listdir("/dev/shm"))


def assert_clean(run_dir: str, pids: set[int], shm_before: set[str]) -> None:
    """No process of the system, no socket file, nothing new in /dev/shm."""
    wait_for(lambda: all(gone(p) for p in pids), 15, f"processes {sorted(pids)} to end")
    strays = [p.pid for p in psutil.process_iter(["cmdline"])
              if run_dir in " ".join(p.info["cmdline"] or []) and not gone(p.pid)]
    assert not strays, f"processes still running for {run_dir}: {strays}"
    wait_for(lambda: not [f for f in os.listdir(run_dir) if f.endswith(".sock")], 5,
             "socket files to go")
    assert not os.path.exists(os.path.join(run_dir, "launcher.json"))
    new = {f for f in shm() - shm_before
           if any(str(p) in f for p in pids) or "l4" in f.lower()}
    assert not new, f"left in /dev/shm: {new}"


def ram_holders(tag: str = "l4py-ram") -> set[int]:
    """Processes that still map a kernel RAM memfd (`tag`: all of them, or one kernel's)."""
    out = set()
    for p in psutil.process_iter():
        try:
            if any(tag in m.path for m in p.memory_maps(grouped=True)):
                out.add(p.pid)
        except (psutil.Error, OSError):
            pass
    return out


@contextlib.contextmanager
def booted(image: str, rd: str, timeout: float = 120) -> Iterator[str]:
    """`l4run boot IMAGE --detach` into run directory `rd` (made if missing; `timeout`: for
    every task to run, a loaded host boots slowly); yields `rd`. On the way out `l4run
    down`, then nothing of the system may be left: processes, sockets, /dev/shm entries,
    mappings of the kernel's RAM."""
    os.makedirs(rd, exist_ok=True)
    shm_before = shm()
    l4run("boot", image, "--detach", "--timeout", f"{timeout:g}", "--run-dir", rd,
          timeout=timeout + 60)
    pids = system_pids(rd)
    try:
        yield rd
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)
    assert not ram_holders() & pids


# -- what tasks report in their logs ------------------------------------------------------------

def task_log(rd: str, task: str) -> str:
    """RUN_DIR/logs/TASK.log as it is now ("" before the task wrote anything)."""
    try:
        with open(os.path.join(rd, "logs", f"{task}.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def record(rd: str, task: str, prefix: str, first: bool = False) -> dict[str, Any] | None:
    """The last (or `first`) line `PREFIX {json}` of a task's log, decoded; None if none yet.
    Demo and test tasks report their results this way."""
    lines = [ln for ln in task_log(rd, task).splitlines() if ln.startswith(prefix + " ")]
    if not lines:
        return None
    return dict(json.loads((lines[0] if first else lines[-1]).partition(" ")[2]))


def until(what: str, fn: Any, timeout: float = 20.0) -> Any:
    """Poll `fn` until it answers something true, and answer that (a hang fails, naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
