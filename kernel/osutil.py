"""Small Linux helpers shared by the kernel, the task library and the launcher."""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent exits (prctl PDEATHSIG).

    If the parent is already gone (we were re-parented before the call), exit now."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_once(path: str, data: bytes, timeout_ms: int) -> bytes | None:
    """One request/answer over a ZeroMQ REQ socket to `ipc://path` (a control socket).

    Answers None when nobody answers within `timeout_ms`; the socket never lingers."""
    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    try:
        s.connect("ipc://" + path)
        s.send(data)
        if not s.poll(timeout_ms):
            return None
        return s.recv()
    finally:
        s.close(0)
