"""The task sandbox holds (issue 11, items 1, 2, 4, 7, 8): a hostile task, attached to a booted
system next to honest ones, tries every host-level attack (tests/security/hostile_sandbox.py).

Each test boots a real image (a hello server and a client calling it) with `l4run boot
--detach`, attaches the hostile task with the victims' pids, reads its `REPORT` line, checks
the honest tasks kept working, and shuts the system down (nothing is left behind). The
negative controls boot the same system with protections switched off (L4PY_SANDBOX_OFF,
launcher/sandbox.py) and assert that the very attacks then succeed: each protection is shown
to be what refuses them. Needs root (a uid switch); skips otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.user.testing import PROJECT_ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="task uids need a root launcher")

MARKER = "L4PY_OPERATOR_SECRET_MARKER"     # an operator variable no task may see
IMAGE = """
[system]
name = "sandboxed"
uids = "62000..62099"

[[task]]
name = "hello"
run = "servers.hello.server:serve"
args = ["hello"]
provides = ["hello"]

[[task]]
name = "client"
run = "servers.hello.client:run"
args = ["world", "20"]
[task.caps]
hello = { service = "hello", rights = "invoke", label = 1 }
"""
HOSTILE = """
[[task]]
name = "hostile"
run = "tests.security.hostile_sandbox:attack"
args = [{plan}]
restart = "never"
network = {network}
"""


def _l4run(rd: str, *args: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "launcher", *args, "--run-dir", rd], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=60, env=env)
    assert not check or p.returncode == 0, p.stdout + p.stderr
    return p


class Booted:
    """A booted system in a fresh, world-searchable run directory (so that what the
    hostile task meets is the sandbox, not a 0700 ancestor), torn down by `down()`."""

    def __init__(self, off: str = "", exec_spawn: bool = False) -> None:
        self.top = tempfile.mkdtemp(prefix="l4sbx-", dir="/tmp")
        os.chmod(self.top, 0o755)
        self.rd = os.path.join(self.top, "run")
        self.image = os.path.join(self.top, "image.toml")
        with open(self.image, "w") as f:
            f.write(IMAGE)
        self.env = {**os.environ, MARKER: "operator-only", "L4PY_SANDBOX_OFF": off}
        _l4run(self.rd, "boot", self.image, "--detach",
               *(["--exec-spawn"] if exec_spawn else []), env=self.env)
        self.victim = os.path.join(self.rd, "victim.txt")
        with open(self.victim, "w") as f:
            f.write("the operator's\n")

    def ps(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in json.loads(_l4run(self.rd, "ps", "--json").stdout)}

    def state(self) -> dict[str, Any]:
        with open(os.path.join(self.rd, "launcher.json")) as f:
            return dict(json.load(f))

    def client_calls(self) -> int:
        with open(os.path.join(self.rd, "logs", "client.log")) as f:
            return sum("hello, world" in line for line in f)

    def attack(self, network: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Attach the hostile task; its report, once it printed one."""
        st, rows = self.state(), self.ps()
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind(("127.0.0.1", 0))
            tcp.listen()
            udp.bind(("127.0.0.1", 0))
            plan = {"victims": {"hello": rows["hello"]["pid"], "kernel": st["kernel_pid"],
                                "launcher": st["pid"], "zygote": st["zygote_pid"]},
                    "tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1],
                    "run_dir": self.rd, "victim_file": self.victim}
            snippet = os.path.join(self.top, "hostile.toml")
            with open(snippet, "w") as f:
                f.write(HOSTILE.format(plan=json.dumps(json.dumps(plan)),
                                       network="true" if network else "false"))
            _l4run(self.rd, "attach", snippet)
            log = os.path.join(self.rd, "logs", "hostile.log")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if os.path.exists(log):
                    with open(log) as f:
                        for line in f:
                            if line.startswith("REPORT "):
                                return dict(json.loads(line[len("REPORT "):]))
                time.sleep(0.05)
            with open(log) as f:
                raise AssertionError(f"no report from the hostile task:\n{f.read()}")
        finally:
            tcp.close()
            udp.close()

    def down(self) -> None:
        try:
            _l4run(self.rd, "down", check=False)
            strays = [f for f in os.listdir("/tmp") if f.startswith("l4py-hostile-")]
            for f in strays:                     # a negative control wrote there: clean up
                os.unlink(os.path.join("/tmp", f))
            assert not os.path.exists(os.path.join(self.rd, "scratch")), "scratch left behind"
            assert not [f for f in os.listdir(self.rd) if f.endswith(".sock")]
        finally:
            shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def booted(request: pytest.FixtureRequest) -> Iterator[Booted]:
    off, exec_spawn = getattr(request, "param", ("", False))
    b = Booted(off, exec_spawn)
    try:
        yield b
    finally:
        b.down()


def _honest_tasks_keep_working(b: Booted, before: int) -> None:
    deadline = time.monotonic() + 10
    while b.client_calls() <= before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.client_calls() > before + 2, "the client stopped getting answers"
    rows = b.ps()
    for name in ("hello", "client"):
        assert rows[name]["state"] == "running" and rows[name]["restarts"] == 0, rows[name]


REFUSED = ["mem", "environ", "fds", "vm_readv", "ptrace", "signal"]


@pytest.mark.parametrize("booted", [("", False), ("", True)], ids=["fork", "exec"],
                         indirect=True)
def test_a_hostile_task_is_refused_everything_and_the_honest_tasks_keep_working(
        booted: Booted) -> None:
    before = booted.client_calls()
    r = booted.attack()
    a = r["attacks"]
    for victim in ("hello", "kernel", "launcher", "zygote"):
        for what in REFUSED:
            assert a[f"{what}:{victim}"].startswith("refused"), (what, victim, a)
    for what in ("write:run_dir", "write:tmp", "write:other_scratch", "read:other_log",
                 "rename:run_dir", "replace:run_dir", "tcp_connect", "tcp_bind", "udp",
                 "netlink"):
        assert a[what].startswith("refused"), (what, a[what])
    assert a["write:own_scratch"] == "ok"
    with open(booted.victim) as f:
        assert f.read() == "the operator's\n"
    # its own uid and gid, no groups, no capabilities, no way to gain any, a filter
    rows = booted.ps()
    assert 62000 <= r["uid"] < 62100 and r["gid"] == r["uid"] and r["groups"] == []
    assert r["uid"] == rows["hostile"]["uid"] and r["uid"] not in (rows["hello"]["uid"],
                                                                    rows["client"]["uid"])
    st = r["status"]
    assert {st[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == \
        {"0000000000000000"}, st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    # the environment: none of the operator's variables, and no secret anywhere in it
    for env in (r["environ"], r["proc_environ"]):
        assert MARKER not in env and "HOME" not in env and "L4_SECRET" not in env, env
        # (LC_CTYPE: Python's own locale coercion, PEP 538, in exec mode)
        assert set(env) <= {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "TMPDIR", "LC_CTYPE"} | \
            {k for k in env if k.startswith("L4_")}, env
    assert "L4_SECRET_FD" not in r["environ"]      # read once at start, then dropped
    assert not any(len(x) >= 32 and all(c in "0123456789abcdef" for c in x) for x in r["argv"])
    assert rows["hostile"]["network"] is False and rows["hostile"]["sandbox"] == "isolated"
    _honest_tasks_keep_working(booted, before)


def test_network_true_grants_tcp_and_udp_and_nothing_else(booted: Booted) -> None:
    r = booted.attack(network=True)
    a = r["attacks"]
    assert a["tcp_connect"] == "ok" and a["tcp_bind"] == "ok" and a["udp"] == "ok", a
    assert a["signal:hello"].startswith("refused") and a["write:run_dir"].startswith("refused")
    assert booted.ps()["hostile"]["network"] is True


def test_the_protections_are_reported_under_stable_keys(booted: Booted) -> None:
    keys = {"uid", "capabilities", "no_new_privs", "landlock_fs", "landlock_net",
            "landlock_scope", "seccomp", "environment", "secret_fd", "ram_tasks", "iommu"}
    from launcher import control
    for report in (booted.state()["protections"],
                   control.request(booted.rd, "status")["protections"]):
        assert set(report) == keys
        assert all(isinstance(v["on"], bool) and v["why"] for v in report.values())
        assert all(report[k]["on"] for k in keys), report
    text = _l4run(booted.rd, "ps").stdout
    assert "protections" in text and "on  ram_tasks" in text and "on  uid" in text


# The negative controls: the protection(s) switched off -> the attack succeeds. Where
# several layers refuse the same attack (a foreign uid and Landlock), all are switched off.
CONTROLS = [
    ("uid,landlock_scope", ["signal:hello", "signal:kernel", "signal:launcher"]),
    ("uid,landlock_fs", ["write:run_dir", "write:tmp", "write:other_scratch",
                         "read:other_log", "rename:run_dir", "replace:run_dir"]),
    # any Landlock domain refuses ptrace-style access to processes outside it
    ("uid,seccomp,landlock_fs,landlock_net,landlock_scope",
     ["mem:hello", "environ:hello", "fds:kernel", "vm_readv:hello", "ptrace:hello"]),
    ("landlock_net", ["tcp_connect", "tcp_bind"]),
    ("seccomp", ["udp", "netlink"]),
]


@pytest.mark.parametrize("booted,succeeds", [((off, False), ok) for off, ok in CONTROLS],
                         ids=[off for off, _ in CONTROLS], indirect=["booted"])
def test_with_the_protection_off_the_attack_succeeds(booted: Booted, succeeds: list[str]) -> None:
    a = booted.attack()["attacks"]
    for what in succeeds:
        assert a[what] == "ok", (what, a[what])


@pytest.mark.parametrize("booted", [("uid,environment,secret_fd", False)], indirect=True)
def test_with_uid_env_and_secret_fd_off_the_task_is_root_and_sees_everything(
        booted: Booted) -> None:
    r = booted.attack()
    assert r["uid"] == 0 and r["status"]["CapEff"] != "0000000000000000"
    assert MARKER in r["environ"] and "L4_SECRET" in r["environ"]


def test_without_root_or_landlock_every_protection_is_reported_off_with_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No root, no Landlock: the report says so, key by key (the system boots all the same:
    the negative controls above boot with protections off)."""
    from launcher import sandbox
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    rep = sandbox.probe((61000, 61999))
    assert set(rep) == set(sandbox.KEYS)
    for key in ("uid", "capabilities", "landlock_fs", "landlock_net", "landlock_scope",
                "ram_tasks"):
        assert rep[key]["on"] is False and rep[key]["why"], (key, rep[key])
    assert "not root" in rep["uid"]["why"] and "Landlock" in rep["landlock_fs"]["why"]
    assert rep["seccomp"]["on"] and rep["secret_fd"]["on"] and rep["environment"]["on"]


def test_the_image_keys_are_validated() -> None:
    from launcher.image import ImageError, parse_image
    good = parse_image({"system": {"name": "s", "uids": "63000..63009"},
                        "task": [{"name": "t", "run": "servers.hello.server:serve",
                                  "network": True}]}, "x.toml")
    assert good.uids == (63000, 63009) and good.tasks[0].network is True
    with pytest.raises(ImageError) as e:
        parse_image({"system": {"name": "s", "uids": "0..10"},
                     "task": [{"name": "t", "run": "servers.hello.server:serve",
                               "network": "yes"}]}, "x.toml")
    assert any(p.startswith("x.toml: system.uids: ") for p in e.value.problems), e.value.problems
    assert any(p.startswith("x.toml: task[0] (t).network: expected bool") for p in e.value.problems)
