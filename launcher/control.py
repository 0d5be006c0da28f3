"""The control socket: how `l4run` talks to a running launcher.

One ZeroMQ REP socket at RUN_DIR/control.sock, served by the launcher's main loop.
Requests and answers are JSON objects: {"cmd": NAME, ...args} -> {"ok": true, ...} or
{"ok": false, "error": "one line"}. Commands: status, ps, stop, start, restart, kill,
attach, down (see `launcher.system.Launcher.cmd_*`).

Contract: a command answers at once (it never waits for a process to start or die); the
CLI polls `status`/`ps` when it must wait. A run directory without a live launcher answers
`NotRunning`, never a hang.

Only the operator: the socket is made mode 0600 (created under umask 077, so never
reachable by others even for a moment), owned by the launcher's uid; and every request is
checked against its sender's credentials (SO_PEERCRED of the connection it came on): a
request from any uid other than the operator's (the uid that booted the system) or root
is answered with a refusal and logged, never acted on. `clean_up` ends what is left of a
system whose launcher no longer answers (`l4run down` in every state).
"""
from __future__ import annotations

import json
import os
import select
import signal
from typing import Any, Callable

import zmq

from kernel.osutil import BUSY_MS, Peer, frame_peer, listening, request_once

CONTROL_SOCK = "control.sock"
STATE_FILE = "launcher.json"
LEFTOVER_FILES = (STATE_FILE, STATE_FILE + ".tmp", "kernel.tcp")   # besides *.sock, *.ctl


class NotRunning(Exception):
    """No launcher answers in this run directory."""


class NotOperator(NotRunning):
    """The launcher does not take commands from us: we are not its operator."""


def sock_path(run_dir: str) -> str:
    return os.path.join(run_dir, CONTROL_SOCK)


def bind(ctx: zmq.Context, run_dir: str) -> zmq.Socket:
    s = ctx.socket(zmq.REP)
    s.linger = 0
    old = os.umask(0o077)
    try:
        s.bind("ipc://" + sock_path(run_dir))
    finally:
        os.umask(old)
    os.chmod(sock_path(run_dir), 0o600)
    return s


def refusal(peer: Peer | None, operator: int) -> str | None:
    """Why `peer` may not control the system of `operator` (None: it may)."""
    if peer is None:
        return "refused: the sender's credentials cannot be read"
    if peer.uid not in (operator, 0):
        return (f"refused: uid {peer.uid} (pid {peer.pid}) is not the operator of this "
                f"system (uid {operator})")
    return None


def recv_request(s: zmq.Socket, operator: int | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The next request, if one is waiting and it is the operator's (`operator`: a uid;
    root is always one). A refused or malformed request is answered here and `log`ged
    (refusals), and None is returned: the caller never sees it."""
    try:
        frame = s.recv(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    why = refusal(frame_peer(frame), os.getuid() if operator is None else operator)
    if why is not None:
        (log or _stderr)(f"control.sock: {why}")
        send_answer(s, {"ok": False, "error": why})
        return None
    try:
        req = json.loads(frame.bytes)
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError("a request is a JSON object with a 'cmd' string")
        return req
    except ValueError as e:
        s.send(json.dumps({"ok": False, "error": f"bad request: {e}"}).encode())
        return None


def _stderr(text: str) -> None:
    import sys
    print(f"[l4run] {text}", file=sys.stderr, flush=True)


def send_answer(s: zmq.Socket, answer: dict[str, Any]) -> None:
    s.send(json.dumps(answer, default=str).encode())


def request(run_dir: str, cmd: str, timeout_ms: int | None = None, **args: Any) -> dict[str, Any]:
    """Send one command to the launcher of `run_dir`; raises NotRunning if nobody answers,
    NotOperator if the socket is not ours to use. Without `timeout_ms`, a launcher whose
    socket accepts is waited for up to BUSY_MS (under load — the DROPS hogs — an
    ordinary-class launcher took more than 5 s to answer), and a stale socket is said at
    once."""
    path = sock_path(run_dir)
    if not os.path.exists(path):
        raise NotRunning(f"no system is running in {run_dir} (no {CONTROL_SOCK})")
    if not os.access(path, os.W_OK):       # connecting to a Unix socket needs write permission
        owner = os.stat(path).st_uid
        raise NotOperator(f"{path}: permission denied (only its operator, uid {owner}, "
                          f"may control this system)")
    raw = request_once(path, json.dumps({"cmd": cmd, **args}).encode(), timeout_ms)
    if raw is None:
        if not listening(path):
            raise NotRunning(f"no launcher listens in {run_dir} (stale {CONTROL_SOCK})")
        raise NotRunning(f"the launcher in {run_dir} does not answer within "
                         f"{timeout_ms or BUSY_MS} ms")
    answer: dict[str, Any] = json.loads(raw)
    if not answer.get("ok") and str(answer.get("error", "")).startswith("refused:"):
        raise NotOperator(str(answer["error"]))
    return answer


def read_state(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(run_dir, STATE_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def clean_up(run_dir: str, timeout: float = 5.0) -> list[str]:
    """End what is left of the system in `run_dir` once its launcher no longer answers:
    the launcher, zygote and kernel that launcher.json names (only if each is still the
    process that was running when the file was written: not a newer one that reuses its
    pid) are killed through pidfds, and the socket files and state it left are removed.
    Tasks die with their zygote. Answers what was done, one phrase per thing."""
    done = []
    state = read_state(run_dir) or {}
    try:
        written = os.stat(os.path.join(run_dir, STATE_FILE)).st_mtime
    except FileNotFoundError:
        written = 0.0
    for key, role in (("pid", "launcher"), ("zygote_pid", "zygote"), ("kernel_pid", "kernel")):
        pid = state.get(key)
        if isinstance(pid, int) and pid > 0 and _kill_if_older(pid, written + 1.0, timeout):
            done.append(f"killed the {role} (pid {pid})")
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name.endswith((".sock", ".ctl")) or name in LEFTOVER_FILES:
            try:
                os.unlink(os.path.join(run_dir, name))
                done.append(f"removed {name}")
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
    return done


def _kill_if_older(pid: int, born_before: float, timeout: float) -> bool:
    """SIGKILL `pid` and wait for it, if it is a live process created before `born_before`
    (a pidfd pins the process we checked: the signal cannot reach a successor)."""
    import psutil
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE or p.create_time() > born_before:
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], timeout)        # readable once it has exited
        return True
    except (psutil.Error, OSError):
        return False
    finally:
        os.close(fd)
