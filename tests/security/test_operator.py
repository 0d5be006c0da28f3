"""The operator's sockets are the operator's (issue 11, item 5), attacked from another uid.

control.sock (the launcher's) and the HAL's control socket (RUN_DIR/hal.ctl) are mode 0600,
owned by the operator; and every request is checked against the sender's credentials, so
even a socket opened to everyone (the first protection switched off by hand here) serves
no one else: the refusal is answered, logged and never acted on. `l4run` keeps working
for the operator. `attach` refuses to hand out a server's admin gate (label 0) or a label
another task already uses for that service.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Iterator

import msgpack
import pytest

from kernel.osutil import request_once
from kernel.user.testing import PROJECT_ROOT
from launcher import control

from tests.launcher.helpers import l4run, ps, wait_for, write

from .hostile import as_uid, need_root, open_dir  # noqa: F401 (a fixture)

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
INPUT_ONLY = '[system]\nname = "sec-hal"\n\n[[device]]\nkind = "input"\nname = "kbd0"\n'


@pytest.fixture
def system(open_dir: str) -> Iterator[str]:
    """minimal.toml, booted by the operator (root), in a directory every uid can reach (so
    the attacker meets the sockets' own protections)."""
    need_root()
    rd = os.path.join(open_dir, "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        yield rd
    finally:
        l4run("down", "--run-dir", rd, check=False)


def connect(path: str) -> str:
    """What a plain connect() to the socket at `path` gives."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
        return "connected"
    except OSError as e:
        return os.strerror(e.errno or 0)


def ask_json(path: str, request: dict[str, Any]) -> Any:
    import json
    raw = request_once(path, json.dumps(request).encode(), 5000)
    return None if raw is None else json.loads(raw)


def ask_msgpack(path: str, request: dict[str, Any]) -> Any:
    raw = request_once(path, msgpack.packb(request, use_bin_type=True), 5000)
    return None if raw is None else msgpack.unpackb(raw, raw=False)


def events(rd: str) -> str:
    return "\n".join(control.request(rd, "status").get("events", []))


def test_another_uid_cannot_reach_control_sock(system: str) -> None:
    path = control.sock_path(system)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert as_uid(lambda: connect(path)) == os.strerror(13)           # EACCES
    err = as_uid(lambda: _refused_by_cli(system))
    assert "permission denied" in err and "operator" in err, err
    assert ps(system)["hello"]["state"] == "running"                   # the operator's l4run


def _refused_by_cli(rd: str) -> str:
    try:
        control.request(rd, "down")
        return "obeyed"
    except control.NotRunning as e:
        return str(e)


def test_control_sock_checks_every_sender_even_when_open_to_all(system: str) -> None:
    """With the file permission switched off (mode 0666), a request from another uid is
    still refused (its SO_PEERCRED uid is not the operator's), logged, not acted on."""
    path = control.sock_path(system)
    os.chmod(path, 0o666)
    for cmd in ({"cmd": "down"}, {"cmd": "kill", "task": "hello"}, {"cmd": "remote", "task": "x"}):
        got = as_uid(lambda: ask_json(path, cmd))
        assert got is not None and got["ok"] is False, got
        assert got["error"].startswith("refused: uid 65534") and "not the operator" in got["error"]
    rows = ps(system)                                                   # nothing was done
    assert rows["hello"]["state"] == "running" and rows["hello"]["restarts"] == 0
    assert "control.sock: refused: uid 65534" in events(system)


@pytest.fixture
def hal_system(open_dir: str) -> Iterator[str]:
    need_root()
    rd = os.path.join(open_dir, "run")
    l4run("boot", write(os.path.join(open_dir, "hal.toml"), INPUT_ONLY), "--detach",
          "--run-dir", rd)
    try:
        yield rd
    finally:
        l4run("down", "--run-dir", rd, check=False)


def test_the_hal_control_socket_is_the_operators(hal_system: str) -> None:
    rd = hal_system
    path = os.path.join(rd, "hal.ctl")
    wait_for(lambda: os.path.exists(path), 20, "the HAL's control socket")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert as_uid(lambda: connect(path)) == os.strerror(13)
    os.chmod(path, 0o666)               # the permission switched off: the peer check holds
    for req in ({"op": "stop"}, {"op": "input", "events": [[1, 30, 1]]}, {"op": "status"}):
        got = as_uid(lambda: ask_msgpack(path, req))
        assert got is not None and got.get("error", "").startswith("refused: uid 65534"), got
    assert "queued" in l4run("input", "key", "a", "--run-dir", rd).stdout   # the operator
    assert ps(rd)["hal"]["state"] == "running" and ps(rd)["hal"]["restarts"] == 0
    with open(os.path.join(rd, "logs", "hal.log")) as f:
        assert "control: refused: uid 65534" in f.read()


def test_attach_refuses_reserved_and_used_labels(system: str, tmp_path: Any) -> None:
    rd = system
    admin = write(str(tmp_path / "admin.toml"),
                  '[[route]]\ntask = "client"\nservice = "hello"\nlabel = 0\n')
    p = l4run("attach", admin, "--run-dir", rd, check=False)
    assert p.returncode == 1
    assert f"{admin}: route[0].label: label 0 is the admin gate of 'hello'" in p.stderr
    steal = write(str(tmp_path / "steal.toml"),
                  '[[task]]\nname = "thief"\nrun = "servers.hello.client:run"\n'
                  'args = ["thief", "1"]\n[task.caps]\nhello = { service = "hello", label = 1 }\n')
    p = l4run("attach", steal, "--run-dir", rd, check=False)
    assert p.returncode == 1
    assert (f"{steal}: task[0] (thief).caps.hello.label: label 1 of service 'hello' is "
            f"already task 'client''s") in p.stderr
    assert "thief" not in ps(rd)
    # without a label, an attached client gets one of its own (not 0, not the client's 1)
    fresh = write(str(tmp_path / "fresh.toml"),
                  '[[task]]\nname = "newcomer"\nrun = "servers.hello.client:run"\n'
                  'args = ["newcomer", "1"]\nrestart = "never"\n[task.caps]\nhello = "hello"\n')
    l4run("attach", fresh, "--run-dir", rd)
    wait_for(lambda: "label 2" in l4run("logs", "newcomer", "--run-dir", rd).stdout, 20,
             "the newcomer's greeting")
