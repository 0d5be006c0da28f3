"""`python -m kernel --cpu` (kernel/core/transport.py pin_cpu): the kernel's loop and ZeroMQ's
I/O thread kept on one CPU (auto: the last one it may use), or left to the host (none);
a CPU it may not use is refused naming the ones it may."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from kernel.user.testing import PROJECT_ROOT, System

CPUS = sorted(os.sched_getaffinity(0))


def _allowed(pid: int) -> dict[str, set[int]]:
    """Each thread's (by name) CPUs, from the host."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        out[f"{name}/{tid}"] = os.sched_getaffinity(int(tid))
    return out


@pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: auto keeps the kernel where it is")
def test_auto_keeps_every_kernel_thread_on_the_last_cpu() -> None:
    with System() as system:
        got = _allowed(system.kernel.pid)
        assert system.root.kernel_info()["fast_path"] in ("compiled", "python")
    assert any(k.startswith("ZMQbg/IO") for k in got), got       # the I/O thread is there
    assert all(cpus == {CPUS[-1]} for cpus in got.values()), got


def test_none_leaves_the_kernel_to_the_host(monkeypatch: Any) -> None:
    monkeypatch.setenv("L4PY_KERNEL_CPU", "none")
    with System() as system:
        got = _allowed(system.kernel.pid)
    assert all(cpus == set(CPUS) for cpus in got.values()), got


def test_a_cpu_it_may_not_use_is_refused() -> None:
    p = subprocess.run([sys.executable, "-m", "kernel", "--run-dir", "/nonexistent/x",
                        "--cpu", str(max(CPUS) + 1)], cwd=PROJECT_ROOT, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "not auto, none or a CPU this process may use" in p.stderr \
        and str(CPUS) in p.stderr, p.stderr


def test_an_image_says_where_its_kernel_runs(tmp_path: Any, monkeypatch: Any) -> None:
    """`[system] kernel_cpu` (launcher/image.py) becomes the kernel's --cpu, over the
    environment's L4PY_KERNEL_CPU: configs/drops.toml leaves the kernel to the host."""
    from launcher import control
    from tests.launcher.helpers import assert_clean, l4run, shm, system_pids, write

    monkeypatch.setenv("L4PY_KERNEL_CPU", "auto")
    with open(os.path.join(PROJECT_ROOT, "configs", "minimal.toml")) as f:
        text = f.read().replace("[system]\n", '[system]\nkernel_cpu = "none"\n', 1)
    image = write(str(tmp_path / "img.toml"), text)
    rd, before = str(tmp_path / "run"), shm()
    l4run("boot", image, "--detach", "--run-dir", rd)
    try:
        got = _allowed(control.request(rd, "status")["kernel_pid"])
        with open(os.path.join(rd, "logs", "kernel.log")) as f:
            log = f.read()
        pids = system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert "on any CPU" in log, log
    assert all(cpus == set(CPUS) for cpus in got.values()), got
    assert_clean(rd, pids, before)
