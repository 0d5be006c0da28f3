"""The control socket: how `l4run` talks to a running launcher.

One ZeroMQ REP socket at RUN_DIR/control.sock, served by the launcher's main loop.
Requests and answers are JSON objects: {"cmd": NAME, ...args} -> {"ok": true, ...} or
{"ok": false, "error": "one line"}. Commands: status, ps, stop, start, restart, kill,
attach, down (see `launcher.system.Launcher.cmd_*`).

Contract: a command answers at once (it never waits for a process to start or die); the
CLI polls `status`/`ps` when it must wait. A run directory without a live launcher answers
`NotRunning`, never a hang.
"""
from __future__ import annotations

import json
import os
from typing import Any

import zmq

from kernel.osutil import request_once

CONTROL_SOCK = "control.sock"
STATE_FILE = "launcher.json"


class NotRunning(Exception):
    """No launcher answers in this run directory."""


def sock_path(run_dir: str) -> str:
    return os.path.join(run_dir, CONTROL_SOCK)


def bind(ctx: zmq.Context, run_dir: str) -> zmq.Socket:
    s = ctx.socket(zmq.REP)
    s.linger = 0
    s.bind("ipc://" + sock_path(run_dir))
    os.chmod(sock_path(run_dir), 0o600)
    return s


def recv_request(s: zmq.Socket) -> dict[str, Any] | None:
    try:
        raw = s.recv(zmq.NOBLOCK)
    except zmq.Again:
        return None
    try:
        req = json.loads(raw)
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError("a request is a JSON object with a 'cmd' string")
        return req
    except ValueError as e:
        s.send(json.dumps({"ok": False, "error": f"bad request: {e}"}).encode())
        return None


def send_answer(s: zmq.Socket, answer: dict[str, Any]) -> None:
    s.send(json.dumps(answer, default=str).encode())


def request(run_dir: str, cmd: str, timeout_ms: int = 5000, **args: Any) -> dict[str, Any]:
    """Send one command to the launcher of `run_dir`; raises NotRunning if nobody answers."""
    path = sock_path(run_dir)
    if not os.path.exists(path):
        raise NotRunning(f"no system is running in {run_dir} (no {CONTROL_SOCK})")
    raw = request_once(path, json.dumps({"cmd": cmd, **args}).encode(), timeout_ms)
    if raw is None:
        raise NotRunning(f"the launcher in {run_dir} does not answer (stale {CONTROL_SOCK}?)")
    answer: dict[str, Any] = json.loads(raw)
    return answer


def read_state(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(run_dir, STATE_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None
