"""The HAL's control socket: fault knobs, screenshots, input injection, status, stop.

A ZeroMQ REP socket at `ipc://RUN_DIR/NAME.ctl`, the operator's alone: mode 0600 (made
under umask 077), and every request checked against its sender's credentials (SO_PEERCRED
of its connection): only root or the HAL's own uid (the operator's, who started it) is
served; anyone else gets `{"error": "refused: ..."}`, logged on stderr, never acted on.
Requests and replies are msgpack maps:

    {"op": "status"}                                   -> {"ok": {...machine status...}}
    {"op": "faults", "device": D, "knobs": {k: v}}     -> {"ok": {all knobs of D}}
    {"op": "irq", "line": N}                           -> {"ok": None}   (a spurious interrupt)
    {"op": "screenshot", "device": D?}                 -> {"ok": {"png", "width", "height"}}
    {"op": "pixels", "device": D?}                     -> {"ok": {"data", "width", "height"}}
                                                          (raw XRGB8888 lines: `l4run view`)
    {"op": "input", "device": D?, "events": [[type, code, value], ...]} -> {"ok": queued}
    {"op": "cable", "device": D, "peer": "HOST:PORT"}  -> {"ok": None}
    {"op": "stop"}                                     -> {"ok": None}, then the HAL exits
    anything wrong                                     -> {"error": "reason"}

The socket is served by one thread of its own (with an L4 thread of its own, since an
injected input event or a spurious interrupt raises a line). It never crashes on a bad
request. `hal/tools.py` has the client side.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from kernel.osutil import frame_peer

if TYPE_CHECKING:
    from .machine import Machine


def control_path(run_dir: str, name: str = "hal") -> str:
    return os.path.join(run_dir, f"{name}.ctl")


class Control:
    def __init__(self, machine: "Machine", run_dir: str) -> None:
        self.m = machine
        self.path = control_path(run_dir, machine.name)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.linger = 0
        old = os.umask(0o077)
        try:
            self.sock.bind("ipc://" + self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.thread = threading.Thread(target=self._run, name="hal-control", daemon=True)
        self.running = True

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)
        self.sock.close(0)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _run(self) -> None:
        self.m.bind_thread()
        while self.running:
            if not self.sock.poll(200):
                continue
            frame = self.sock.recv(copy=False)
            raw = frame.bytes
            why = self.refusal(frame)
            if why is not None:
                print(f"[hal] control: {why}", file=sys.stderr, flush=True)
                self.sock.send(msgpack.packb({"error": why}, use_bin_type=True))
                continue
            try:
                req = msgpack.unpackb(raw, raw=False)
                if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                    raise ValueError("a request is a map with a string 'op'")
                out: dict[str, Any] = {"ok": self.handle(req)}
            except (ValueError, KeyError, TypeError) as e:
                out = {"error": str(e)}
            except Exception as e:
                traceback.print_exc()
                out = {"error": f"{type(e).__name__}: {e}"}
            self.sock.send(msgpack.packb(out, use_bin_type=True))
            if req_is_stop(raw):
                self.m.stopping.set()

    def refusal(self, frame: Any) -> str | None:
        """Why the sender of `frame` may not use this socket (None: it is the operator)."""
        peer = frame_peer(frame)
        if peer is None:
            return "refused: the sender's credentials cannot be read"
        if peer.uid not in (0, os.getuid()):
            return (f"refused: uid {peer.uid} (pid {peer.pid}) is not this machine's operator "
                    f"(uid {os.getuid()})")
        return None

    def _device(self, req: dict, kind: str | None = None) -> Any:
        name = req.get("device")
        if name is None and kind is not None:
            found = [d for d in self.m.devices.values() if d.kind == kind]
            if not found:
                raise ValueError(f"this HAL has no {kind} device")
            return found[0]
        d = self.m.devices.get(name) if name is not None else None
        if d is None:
            raise ValueError(f"no device {name!r} (devices: {', '.join(self.m.devices)})")
        if kind is not None and d.kind != kind:
            raise ValueError(f"device {name} is a {d.kind}, not a {kind}")
        return d

    def handle(self, req: dict) -> Any:
        op = req["op"]
        if op == "status":
            return self.m.status()
        if op == "faults":
            knobs = req.get("knobs")
            if not isinstance(knobs, dict):
                raise ValueError("faults needs 'knobs': {name: value}")
            return self._device(req).set_knobs(knobs)
        if op == "irq":
            line = req.get("line")
            if type(line) is not int or not 0 <= line < self.m.pic.lines:
                raise ValueError(f"irq needs a line 0..{self.m.pic.lines - 1}, got {line!r}")
            self.m.pic.raise_line(line)
            return None
        if op == "screenshot":
            return self._device(req, "fb").screenshot()
        if op == "pixels":
            return self._device(req, "fb").pixels()
        if op == "input":
            events = req.get("events")
            if not isinstance(events, list):
                raise ValueError("input needs 'events': [[type, code, value], ...]")
            return self._device(req, "input").inject(events)
        if op == "cable":
            peer = req.get("peer")
            if not isinstance(peer, str):
                raise ValueError("cable needs 'peer': 'HOST:PORT'")
            self._device(req, "nic").set_peer(peer)
            return None
        if op == "stop":
            return None
        raise ValueError(f"unknown control op {op!r}")


def req_is_stop(raw: bytes) -> bool:
    try:
        req = msgpack.unpackb(raw, raw=False)
        return isinstance(req, dict) and req.get("op") == "stop"
    except Exception:
        return False
