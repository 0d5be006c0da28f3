"""`l4run bench boot` and `l4run bench restart`: how fast the launcher boots and recovers.

boot:    configs/minimal.toml from nothing (kernel + spawner started) to every task connected
         to the kernel ("running"), measured inside the launcher process; median of N boots.
restart: `kill -9` of the hello server -> the first successful answer to a caller holding a
         capability to the hello service (a probe thread of the root task, calling the same
         gate clients use); `restart_ms`, median of N kills. Each boot/kill is a real process
         and a real kernel; nothing is mocked.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import threading
import time
from typing import Any

import click

from kernel.user import errors
from kernel.user.client import L4

from .image import Image, load_image
from .system import Launcher
from .zygote import PROJECT_ROOT

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def _quiet(_: str) -> None:
    pass


def _image(exec_mode: bool) -> Image:
    img = load_image(MINIMAL)
    for t in img.tasks:
        t.budget = (10_000, 1.0)       # the bench kills on purpose; never run out of budget
    return img


def bench_boot(runs: int = 5, exec_mode: bool = False) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="l4bench-") as rd:
            t0 = time.perf_counter()
            la = Launcher(_image(exec_mode), rd, exec_mode=exec_mode, on_event=_quiet)
            try:
                la.boot(timeout=30)
                times.append((time.perf_counter() - t0) * 1000)
            finally:
                la.shutdown()
    return {"bench": "boot", "image": "configs/minimal.toml", "runs": runs,
            "spawn": "exec" if exec_mode else "zygote",
            "boot_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1), "target_ms": 1000}


def _probe(la: Launcher) -> tuple[L4, int]:
    """A second L4 thread of the root task, and the hello gate clients use (label 1)."""
    assert la.root is not None
    new = la.root.create_thread()
    return L4(la.kernel_sock, new.secret, ctx=la.root.ctx), la.services["hello"].gates[1]


def _answer(probe: L4, gate: int, deadline: float) -> None:
    while True:
        try:
            probe.call(gate, b"bench", rcv_timeout=2000)
            return
        except errors.PartnerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def bench_restart(runs: int = 9, exec_mode: bool = False) -> dict[str, Any]:
    times = []
    with tempfile.TemporaryDirectory(prefix="l4bench-") as rd:
        la = Launcher(_image(exec_mode), rd, exec_mode=exec_mode, on_event=_quiet)
        la.boot(timeout=30)
        probe, gate = _probe(la)
        loop = threading.Thread(target=la.serve, kwargs={"signals": False}, daemon=True)
        loop.start()
        try:
            _answer(probe, gate, time.monotonic() + 10)
            for _ in range(runs):
                pid = la.tasks["hello"].pid
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                _answer(probe, gate, time.monotonic() + 10)
                times.append((time.perf_counter() - t0) * 1000)
                while la.tasks["hello"].pid == pid:      # the answer came from the new one
                    time.sleep(0.001)
        finally:
            probe.close()
            la.stopping = True
            loop.join(15)
    return {"bench": "restart", "image": "configs/minimal.toml", "runs": runs,
            "spawn": "exec" if exec_mode else "zygote",
            "restart_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1), "target_ms": 250}


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
        return
    key = "boot_ms" if result["bench"] == "boot" else "restart_ms"
    ok = "within" if result[key] <= result["target_ms"] else "OVER"
    click.echo(f"{result['bench']}: median {result[key]} ms over {result['runs']} runs "
               f"(min {result['min_ms']}, max {result['max_ms']}; spawn={result['spawn']}); "
               f"{ok} the {result['target_ms']} ms target")


def register(group: click.Group) -> None:
    @group.command("boot")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--runs", default=5, show_default=True)
    @click.option("--exec-spawn", is_flag=True, help="fork+exec tasks instead of the zygote")
    def boot_cmd(as_json: bool, runs: int, exec_spawn: bool) -> None:
        """Boot configs/minimal.toml to all-running (median of several boots)."""
        _show(bench_boot(runs, exec_spawn), as_json)

    @group.command("restart")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--runs", default=9, show_default=True)
    @click.option("--exec-spawn", is_flag=True, help="fork+exec tasks instead of the zygote")
    def restart_cmd(as_json: bool, runs: int, exec_spawn: bool) -> None:
        """kill -9 the hello server; time to its first answer to a client (median)."""
        _show(bench_restart(runs, exec_spawn), as_json)
