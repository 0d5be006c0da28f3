"""Chaos on Linux system calls: kernel fault rules armed for the LINUX calls the kernel
forwards to a personality (kernel/core/faults.py `intercept_linux`, docs/CHAOS.md "Linux
system calls"). A fraction of a busybox shell loop's calls reach the personality late, a
fraction are answered -EINTR by the kernel itself; the loop ends (some commands may fail),
the personality serves on, and the injections are counted, logged and traced.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.user.errors import InvalidArgument
from kernel.user.testing import System
from servers.l4linux.protocol import LINUX
from tests.l4linux.rootfs import write

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or sys.platform != "linux",
                                reason="needs /bin/busybox (busybox-static) on x86-64 Linux")

# Ten rounds, ≈ 600 Linux calls (25 rounds were 1,520 calls and 11.5 s on a loaded host before
# any injection: too near the run's 60-s bound when the host steals CPU).
LOOP = ("i=0; while [ $i -lt 10 ]; do echo $i > /tmp/f; cat /tmp/f | wc -c > /dev/null; "
        "i=$((i+1)); done; echo looped $i")


class Linux:
    def __init__(self, system: System, rootfs: str, name: str = "l4linux") -> None:
        self.system = system
        self.task = system.spawn("servers.l4linux.server:main", name,
                                 args=("--rootfs", rootfs), quota=4096)
        gate = system.root.create_gate(1, thread=self.task.thread)
        self.client = LINUX.client(system.root, gate, timeout=60_000)

    def sh(self, script: str) -> tuple[int, bytes]:
        r = self.client.run(["sh", "-c", script], [], "/")
        return r.status, bytes(r.output)


@pytest.fixture
def linux(tmp_path: Any) -> Iterator[Linux]:
    rootfs = write(str(tmp_path / "rootfs.cpio"))
    with System() as s:
        yield Linux(s, rootfs)
        s.root.fault("remove", {})


def _drain(l4: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while got := l4.trace("drain")["events"]:
        events += got
    return events


def test_delayed_and_failed_linux_calls_leave_the_shell_and_personality_going(
        linux: Linux) -> None:
    root = linux.system.root
    assert linux.sh("echo warm") == (0, b"warm\n")
    before = root.kernel_info()["faults"]["injected"]
    # Short delays (1-5 ms): a fifth of the loop's calls are held.
    delay = root.fault("add", {"kind": "delay", "linux": True, "probability": 0.2,
                               "count": 0, "seed": 1, "delay_ms": 1, "jitter_ms": 4})
    error = root.fault("add", {"kind": "error", "linux": True, "probability": 0.05,
                               "count": 0, "seed": 2})
    assert delay["linux"] and error["errno"] == 4            # EINTR unless the plan says
    root.trace("on", 200_000)
    status, out = linux.sh(LOOP)
    events = _drain(root)
    root.trace("off")
    assert root.fault("remove", {}) == 2
    after = root.kernel_info()["faults"]["injected"]
    # The loop ran to its end, or the shell itself got an error it could not go on after:
    # either way it ended, with a Linux status.
    assert 0 <= status <= 255
    assert after["delay"] - before["delay"] > 0 and after["error"] - before["error"] > 0
    log = root.fault("log", {"max": 10_000})
    mine = [e for e in log if e.get("linux")]
    assert {e["kind"] for e in mine} == {"delay", "error"}
    assert all(e["sender"].startswith("linux:") and isinstance(e["nr"], int) for e in mine)
    assert all(e["nr"] not in (60, 231, 39, 110) for e in mine if e["kind"] == "error")
    chaos = [e for e in events if e["ev"] == "chaos" and e.get("linux")]
    assert {e["kind"] for e in chaos} == {"delay", "error"}
    # Unharmed afterwards: the same loop, nothing injected, as it should be.
    assert linux.sh(LOOP) == (0, b"looped 10\n")
    assert root.kernel_info()["faults"]["injected"] == after


def test_a_linux_rule_restricted_to_some_calls_fails_only_those(linux: Linux) -> None:
    """`nr` limits a rule: every write (1) answered -EIO, so echo says nothing and fails,
    while the shell, whose other calls go through, exits with that failure."""
    root = linux.system.root
    rule = root.fault("add", {"kind": "error", "linux": True, "nr": [1], "errno": 5,
                              "count": 0})
    assert rule["nr"] == [1] and rule["errno"] == 5
    before = root.kernel_info()["faults"]["injected"]["error"]
    assert linux.sh("echo x; exit $?") == (1, b"")
    assert root.kernel_info()["faults"]["injected"]["error"] > before
    root.fault("remove", {"rule": rule["rule"]})
    assert linux.sh("echo x; exit $?") == (0, b"x\n")


def test_linux_rule_specs_are_checked(linux: Linux) -> None:
    root = linux.system.root
    for bad in ({"kind": "drop", "linux": True}, {"kind": "error"},
                {"kind": "delay", "nr": [1]}, {"kind": "error", "linux": True, "errno": 0},
                {"kind": "error", "linux": True, "nr": []},
                {"kind": "delay", "linux": 1}):
        with pytest.raises(InvalidArgument):
            root.fault("add", bad)
    assert root.fault("list")["armed"] == 0


class _Kernel:
    """The chaos injector's subject for a system booted here: its FAULT calls go to the
    kernel through the root task, as `Booted` sends them through the launcher's."""

    def __init__(self, system: System) -> None:
        self.root = system.root

    def fault(self, op: str, spec: dict[str, Any] | None = None) -> Any:
        return self.root.fault(op, spec)

    def kernel_info(self) -> dict[str, Any]:
        return dict(self.root.kernel_info())


def test_a_chaos_plan_arms_linux_rules(linux: Linux, tmp_path: Any) -> None:
    """`linux_delay` / `linux_error` in a plan: parsed, scheduled and armed as kernel Linux
    rules, then disarmed by the injector's undo."""
    from launcher.chaos.inject import Injector
    from launcher.chaos.plan import PlanError, parse_plan
    from launcher.chaos.record import Record
    from launcher.chaos.sequence import schedule

    plan = parse_plan({"chaos": {"duration": "1s"}, "schedule": [
        {"at": 0.0, "kind": "linux_delay", "delay": "5ms", "probability": 0.5, "count": 0,
         "nr": [0], "for": "30s"},
        {"at": 0.0, "kind": "linux_error", "errno": 5, "nr": [1], "count": 0, "for": "30s"}]})
    with pytest.raises(PlanError):
        parse_plan({"schedule": [{"at": 0.0, "kind": "linux_error", "errno": 0},
                                 {"at": 0.0, "kind": "linux_delay", "service": "x"}]})
    root = linux.system.root
    record = Record(str(tmp_path), plan.invariants)
    injector = Injector(plan, _Kernel(linux.system), {}, record)
    for inj in schedule(plan, [], []):
        injector.inject(inj)
    rules = {r["kind"]: r for r in root.fault("list")["rules"]}
    assert rules["delay"]["linux"] and rules["delay"]["delay_ms"] == 5
    assert rules["delay"]["nr"] == [0]
    assert rules["error"]["errno"] == 5 and rules["error"]["nr"] == [1]
    # reads late (the rule that fires first takes a call), writes failing with EIO
    assert linux.sh("read v < /etc/passwd; echo x; exit $?") == (1, b"")
    injector.undo()
    assert root.fault("list")["armed"] == 0
    assert linux.sh("echo x; exit $?") == (0, b"x\n")


def test_a_plan_can_fault_one_personality_only(linux: Linux, tmp_path: Any) -> None:
    """`tasks = [...]` on a Linux fault: the rules go on the gates that personality serves,
    so a second personality beside it is not touched."""
    from launcher.chaos.inject import Injector
    from launcher.chaos.plan import parse_plan
    from launcher.chaos.record import Record
    from launcher.chaos.sequence import schedule

    other = Linux(linux.system, str(tmp_path / "rootfs.cpio"), "l4linux2")
    assert other.sh("echo up") == (0, b"up\n")                 # its exception gate exists
    plan = parse_plan({"chaos": {"duration": "1s"}, "schedule": [
        {"at": 0.0, "kind": "linux_error", "errno": 5, "nr": [1], "count": 0, "for": "30s",
         "tasks": ["l4linux2"]}]}, image_names=({"l4linux", "l4linux2"}, set()))
    injector = Injector(plan, _Kernel(linux.system), {}, Record(str(tmp_path), plan.invariants))
    for inj in schedule(plan, [], []):
        assert inj.target == "linux:l4linux2"
        injector.inject(inj)
    try:
        assert other.sh("echo x; exit $?") == (1, b"")          # its writes fail with EIO
        assert linux.sh("echo x; exit $?") == (0, b"x\n")      # the first one's do not
    finally:
        injector.undo()
    assert other.sh("echo x; exit $?") == (0, b"x\n")
