"""A network namespace of its own for the tests that put an L4Py machine on a TAP device.

    SKIP = netns_skip("ip", "ping", "curl")           # None, or why the tests cannot run here
    with netns("l4ns") as ns:
        host = ns.start(sys.executable, "-c", SERVERS)  # a host-side process, in the namespace
        ns.boot(image, rd)                              # l4run boot, inside the namespace
        ns.tap_up("l4tap0", "10.0.2.2/24")              # the HAL's TAP, addressed and up
        ns.run("ping", "-c", "3", "10.0.2.15")

Contract: whatever happens inside the `with` (a failed assertion, a boot that fails), on the
way out every process started with `start` is killed, the booted system is taken down, the
namespace is deleted (with it the TAP device and every address) and checked gone, and, if the
system booted, `assert_clean` checks that it left nothing behind.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from hal.cable import tap_available
from tests.launcher.helpers import assert_clean, l4run, system_pids, until


def netns_skip(*tools: str) -> str | None:
    """Why a namespace with a TAP device cannot be had here (None: it can)."""
    if not tap_available():
        return "needs root and /dev/net/tun"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs the host tool {tool!r}"
    name = f"l4probe{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def in_ns(ns: str, *cmd: str, timeout: float = 60,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside namespace `ns`; with `check`, a failure names the command and its output."""
    p = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Netns:
    """One namespace and what the test started in it (owned by the `netns` context)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []
        self.rd: str | None = None                  # set once the system has booted
        self.pids: set[int] = set()
        self.shm_before = set(os.listdir("/dev/shm"))

    def run(self, *cmd: str, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_ns(self.name, *cmd, timeout=timeout, check=check)

    def start(self, *cmd: str, **popen: Any) -> subprocess.Popen[str]:
        """A process inside the namespace (stdout piped, text), killed on the way out."""
        popen.setdefault("stdout", subprocess.PIPE)
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], text=True, **popen)
        self.procs.append(p)
        return p

    def boot(self, image: str, rd: str, timeout: float = 120) -> None:
        self.run(sys.executable, "-m", "launcher", "boot", image, "--detach", "--run-dir", rd,
                 timeout=timeout)
        self.rd = rd
        self.pids = system_pids(rd)

    def tap_up(self, tap: str, addr: str, timeout: float = 30) -> None:
        """Wait for the HAL to make `tap` (it does as it starts), give it `addr`, bring it up."""
        until(f"the HAL's {tap}", lambda: self.run("ip", "link", "show", tap,
                                                   check=False).returncode == 0, timeout)
        self.run("ip", "addr", "add", addr, "dev", tap)
        self.run("ip", "link", "set", tap, "up")

    def close(self) -> None:
        """Kill, take down, delete; each step runs even if one before it failed."""
        try:
            for p in self.procs:
                p.kill()
                p.wait(10)
                if p.stdout is not None:
                    p.stdout.close()
        finally:
            try:
                if self.rd is not None:
                    l4run("down", "--run-dir", self.rd, check=False)
            finally:
                subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
                assert self.name not in subprocess.run(["ip", "netns", "list"],
                                                       capture_output=True, text=True).stdout
                if self.rd is not None:
                    assert_clean(self.rd, self.pids, self.shm_before)


@contextmanager
def netns(prefix: str) -> Iterator[Netns]:
    """A fresh namespace named `prefix` + our pid, its loopback up; torn down on the way out."""
    ns = Netns(f"{prefix}{os.getpid()}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        ns.close()
