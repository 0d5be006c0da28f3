"""Client side of the HAL control socket, for `l4run screenshot`, `l4run input` and chaos.

    control(run_dir, request, name="hal") -> reply value      (raises HalControlError)
    screenshot(run_dir, out="screenshot.png", device=None, name="hal") -> out path
    inject_input(run_dir, kind, *args, device=None, name="hal") -> events queued
        kind "key"   args (key_name_or_code,)         a press and a release
        kind "click" args (x, y[, button])            move, press, release (button left|right|middle)
        kind "move"  args (x, y)                      absolute pointer position
    set_faults(run_dir, device, name="hal", **knobs) -> all knobs of the device
"""
from __future__ import annotations

import os
from typing import Any

import msgpack

from kernel.osutil import BUSY_MS, listening, request_once

from .control import control_path
from .input import events_for


class HalControlError(Exception):
    """The HAL refused a control request (the reason says why) or is not there."""


def control(run_dir: str, request: dict[str, Any], name: str = "hal",
            timeout_ms: int | None = None) -> Any:
    """One request to the HAL's control socket. Without `timeout_ms` a HAL that listens is
    waited for up to BUSY_MS (an ordinary-class HAL under the DROPS hogs took over 10 s),
    and one that does not is said at once."""
    path = control_path(run_dir, name)
    if not os.path.exists(path):
        raise HalControlError(f"no HAL control socket at {path} (is the HAL {name!r} running?)")
    if not os.access(path, os.W_OK):       # connecting to a Unix socket needs write permission
        raise HalControlError(f"{path}: permission denied (only the operator may use the HAL's "
                              f"control socket)")
    raw = request_once(path, msgpack.packb(request, use_bin_type=True), timeout_ms)
    if raw is None:
        if not listening(path):
            raise HalControlError(f"nobody listens on {path} (is the HAL {name!r} running?)")
        raise HalControlError(f"HAL {name!r} did not answer within {timeout_ms or BUSY_MS} ms")
    rep = msgpack.unpackb(raw, raw=False)
    if "error" in rep:
        raise HalControlError(rep["error"])
    return rep["ok"]


def screenshot(run_dir: str, out: str = "screenshot.png", device: str | None = None,
               name: str = "hal") -> str:
    req: dict[str, Any] = {"op": "screenshot"}
    if device:
        req["device"] = device
    rep = control(run_dir, req, name)
    with open(out, "wb") as f:
        f.write(rep["png"])
    return out


def inject_input(run_dir: str, kind: str, *args: Any, device: str | None = None,
                 name: str = "hal") -> int:
    req: dict[str, Any] = {"op": "input", "events": events_for(kind, *args)}
    if device:
        req["device"] = device
    return int(control(run_dir, req, name))


def set_faults(run_dir: str, device: str, name: str = "hal", **knobs: Any) -> dict[str, Any]:
    return control(run_dir, {"op": "faults", "device": device, "knobs": knobs}, name)
