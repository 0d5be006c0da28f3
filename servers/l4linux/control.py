"""The personality's host-side door: `l4run linux run` reaches the running personality here.

Mechanism. A Unix socket, SCRATCH/linux.sock (the task's scratch directory: mode 0700,
its own uid, so only it and root — the operator's `l4run` — can reach it; Linux processes
hold no host file access at all). One JSON request per connection:
    {"op": "run", "argv": [...], "env": [...], "cwd": "/"}  ->  {"status", "output", "pid"}
    {"op": "ps"}                                              ->  {"procs": [...]}
    {"op": "console", "argv": [...], "rows": R, "cols": C}    ->  {"id", "pid"}, then a
        stream both ways, one JSON object a line: the client sends {"in": text} (typed
        bytes) and {"size": [R, C]}, the door sends {"out": text, "status": S} (S -1 while
        the program runs, else its exit status, the last line); the client closing its end
        detaches (the program goes on; `console` with an empty argv re-attaches).
    (an error: {"error": "..."})
The output travels as latin-1 text (bytes preserved). A peer whose uid is neither root nor
ours is refused (SO_PEERCRED).

A thread of its own accepts; each connection is served by a thread with an L4 thread of
its own (`L4.spawn_thread`, kept in a pool of at most `MAX_DOORS` for the next ones): it
*calls* the personality's protocol gate like any client (`protocol.LINUX`), so the request
is served by the one serving thread in order with every Linux system call, and a long
`run` blocks only its own connection (`linux ps` answers meanwhile).

Ownership: the accepting thread owns the socket; `_Pool` is shared (a lock); each L4
thread is used by one Python thread at a time.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
from typing import Any

from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import RemoteError

from .protocol import LINUX

SOCK_NAME = "linux.sock"
MAX_REQUEST = 1 << 20
MAX_DOORS = 8                     # connections served at once (each an L4 thread)


class _Pool:
    """L4 threads for the connections. `maker` (an L4 thread of its own, used only by the
    accepting thread) creates new ones: the task's main thread is the serving loop's."""

    def __init__(self, maker: L4) -> None:
        self.l4 = maker
        self.free: list[L4] = []
        self.made = 0
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(MAX_DOORS)

    def take(self) -> L4:
        self.slots.acquire()
        with self.lock:
            if self.free:
                return self.free.pop()
            self.made += 1
            return self.l4.spawn_thread()

    def give(self, t: L4) -> None:
        with self.lock:
            self.free.append(t)
        self.slots.release()


def serve_door(l4: L4, gate: int, path: str) -> threading.Thread:
    """Start the door's thread on `path`; `gate` reaches the personality's serving thread."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(8)
    pool = _Pool(l4.spawn_thread())     # made now, by the main thread, before it serves
    t = threading.Thread(target=_loop, args=(pool, gate, sock), name="linux-door", daemon=True)
    t.start()
    return t


def _loop(pool: _Pool, gate: int, sock: socket.socket) -> None:
    me = os.getuid()
    while True:
        conn, _ = sock.accept()
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", cred)
        if uid not in (0, me):
            with conn:
                _send(conn, {"error": f"uid {uid} may not use this personality"})
            continue
        l4 = pool.take()
        threading.Thread(target=_serve_one, args=(pool, l4, gate, conn), daemon=True).start()


def _serve_one(pool: _Pool, l4: L4, gate: int, conn: socket.socket) -> None:
    try:
        with conn:
            try:
                stream = conn.makefile("rb")
                req = json.loads(stream.readline())
                if req.get("op") == "console":
                    _console(pool, LINUX.client(l4, gate), gate, conn, stream, req)
                    return
                _send(conn, _answer(LINUX.client(l4, gate), req))
            except (ValueError, OSError, KeyError, TypeError) as e:
                try:
                    _send(conn, {"error": f"{type(e).__name__}: {e}"})
                except OSError:
                    pass
    finally:
        pool.give(l4)


def _console(pool: _Pool, client: Any, gate: int, conn: socket.socket, stream: Any,
             req: dict[str, Any]) -> None:
    """A console connection: this thread forwards what the client sends; a second one (an
    L4 thread of its own: its console_read waits in the personality) what the screen gets."""
    try:
        r = client.console_open([str(a) for a in req.get("argv", [])],
                                [str(e) for e in req.get("env", [])],
                                int(req.get("rows", 24)), int(req.get("cols", 80)))
    except (RemoteError, L4Error) as e:
        _send(conn, {"error": str(e)})
        return
    cid = r.id
    _send(conn, {"id": cid, "pid": r.pid})
    reader_l4 = pool.take()

    def screen() -> None:
        try:
            reader: Any = LINUX.client(reader_l4, gate)   # a stub's ops are run-time attributes
            while True:
                got = reader.console_read(cid)
                if got.status == -2:
                    return                          # detached (or another reader)
                _send(conn, {"out": bytes(got.data).decode("latin-1"), "status": got.status})
                if got.status != -1:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
        except (RemoteError, L4Error, OSError):
            return
        finally:
            pool.give(reader_l4)

    t = threading.Thread(target=screen, daemon=True)
    t.start()
    try:
        for line in stream:
            msg = json.loads(line)
            if "in" in msg:
                client.console_write(cid, str(msg["in"]).encode("latin-1"))
            if "size" in msg:
                client.console_size(cid, int(msg["size"][0]), int(msg["size"][1]))
    except (RemoteError, L4Error, OSError, ValueError):
        pass
    try:
        client.console_detach(cid)
    except (RemoteError, L4Error):
        pass                                        # it ended meanwhile
    t.join(10)


def _answer(client: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        if req.get("op") == "ps":
            return {"procs": client.ps()}
        if req.get("op") == "run":
            r = client.run([str(a) for a in req["argv"]], [str(e) for e in req.get("env", [])],
                           str(req.get("cwd", "/")))
            return {"status": r.status, "output": bytes(r.output).decode("latin-1"),
                    "pid": r.pid}
    except (RemoteError, L4Error) as e:
        return {"error": str(e)}
    return {"error": f"unknown op {req.get('op')!r}"}


def _recv(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
        part = conn.recv(65536)
        if not part:
            break
        data += part
    return data


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def request(path: str, obj: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """The client side (`l4run linux run`, the tests): one request, its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        _send(s, obj)
        data = _recv(s)
    finally:
        s.close()
    if not data:
        print("linux door: no answer", file=sys.stderr)
        return {"error": "the personality closed the connection without an answer"}
    return dict(json.loads(data))
