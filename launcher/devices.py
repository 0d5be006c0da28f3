"""Devices in a system image: the `[[device]]` tables, the io policy, the HAL and io tasks.

An image that lists devices gets two tasks of its own, added by the launcher before every
task of the image:

    hal   `launcher.devices:hal_task` - the HAL (`hal.main`), on the kernel's physical RAM;
          provides the service "hal" (its bus gate, label `hal.protocol.BUS_LABEL`: the
          HAL's admin gate, label ADMIN_LABEL = 0)
    io    `servers.io.server:serve` - the device manager; holds a capability "hal" to the
          bus gate, provides the service "io"; its policy (argument, JSON) maps each
          driver's gate label to the devices the driver's `devices = [...]` names

Each task with `devices = ["disk0", ...]` gets a capability "io" whose label
(`DRIVER_LABEL_BASE` + its index in the image) selects its policy entry; the kernel vouches
for the label, so a driver can open only what its own entry lists. A task without
`devices` gets no "io" capability at all. Label 0 (`kernel.user.rpc.ADMIN_LABEL`) is io's
admin gate (set_policy), the launcher's alone: an image may not route "io" with it.

Format (one table per device; `kind` and `name` required, the rest are the device's
parameters, checked here as `python -m hal --device KIND:NAME:k=v,...` would check them):

    [[device]]
    kind = "disk"                # pic timer disk fb input nic
    name = "disk0"
    image = "disk0.img"          # disk: relative to the image file; default RUN_DIR/NAME.img
    size = "16M"                 # disk: created/extended to this size (multiple of 512)
    # fb: width, height (1..8192) - must fit in RAM; nic: backend = loopback|udp|tap,
    # port, peer = "HOST:PORT", tap = IFNAME, mac = "02:..."; any but fb/pic: line = 0..31

The controller `pic` (32 lines) is always there; a `kind = "pic"` table may name it (its
name must be "pic") so that it reads well in a policy.

RAM: the HAL joins the kernel's physical RAM (the launcher makes it the DMA task, MEM_DMA;
its memory channel carries every frame's memfd, docs/MEMORY.md), so DMA addresses are the kernel's physical addresses and there is
no RAM file to clean up: Linux frees the memfd with its last holder, however the system
stops. The HAL's control socket (RUN_DIR/hal.ctl) is on the zygote's cleanup list.

Contract: `check_devices()` adds every mistake to the image checker as "FILE: KEY: REASON"
(unknown kind or key, duplicate or reserved name, unknown device in a task's `devices`, bad
size, line or address) and, for a clean table, appends the hal and io tasks to the image.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel.abi import Rights
from kernel.user.rpc import ADMIN_LABEL

if TYPE_CHECKING:
    from kernel.user.client import L4

    from .image import TaskSpec, _Checker

HAL_TASK = "hal"               # the HAL's task and service name (control socket hal.ctl)
IO_TASK = "io"
IO_CAP = "io"                  # the drivers' local name of their io capability
HAL_CAP = "hal"                # io's local name of the bus gate
DRIVER_LABEL_BASE = 100        # io labels: 0 is io's admin label (ADMIN_LABEL); drivers from here
KINDS = ("pic", "timer", "disk", "fb", "input", "nic")
PARAMS: dict[str, set[str]] = {
    "pic": set(), "timer": {"line"}, "input": {"line"}, "fb": {"width", "height"},
    "disk": {"image", "size", "line"},
    "nic": {"backend", "port", "peer", "tap", "mac", "line"},
}
BACKENDS = ("loopback", "udp", "tap")
PIC_LINES = 32
SECTOR = 512
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
PEER_RE = re.compile(r"^[A-Za-z0-9_.-]+:\d{1,5}$")
DEFAULT_RAM = 64 << 20         # the kernel's default (kernel.core.memory.DEFAULT_RAM)


@dataclass
class DeviceSpec:
    kind: str
    name: str
    params: dict[str, str] = field(default_factory=dict)   # as `--device` options

    def hal_arg(self) -> str:
        """KIND:NAME[:k=v,...] for `python -m hal --device`."""
        opts = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}:{self.name}" + (f":{opts}" if opts else "")


def hal_ctl(run_dir: str) -> str:
    return os.path.join(run_dir, f"{HAL_TASK}.ctl")


def parse_disk_size(v: Any) -> int:
    """16M, 64K, 1G, 8192 (bytes): a positive multiple of the 512-byte sector."""
    from hal.main import parse_size
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected a size like \"16M\", got {v!r}")
    n = v if isinstance(v, int) else parse_size(v)
    if n <= 0 or n % SECTOR:
        raise ValueError(f"disk size {v!r} must be a positive multiple of {SECTOR} bytes")
    return n


# -- checking ------------------------------------------------------------------------------

def _int(c: "_Checker", key: str, v: Any, lo: int, hi: int) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        c.bad(key, f"expected an integer {lo}..{hi}, got {v!r}")
        return None
    return v


def _params(c: "_Checker", where: str, kind: str, name: str, d: dict, base_dir: str,
            ram: int) -> dict[str, str]:
    """The device's `--device` options, every value checked first."""
    out: dict[str, str] = {}
    for k in sorted(set(d) - {"kind", "name"} - PARAMS[kind]):
        known = ", ".join(sorted(PARAMS[kind])) or "none"
        c.bad(f"{where}.{k}", f"unknown parameter for a {kind} (known: {known})")
    if "line" in d and (line := _int(c, f"{where}.line", d["line"], 0, PIC_LINES - 1)) is not None:
        out["line"] = str(line)
    if kind == "disk":
        _disk(c, where, name, d, base_dir, out)
    elif kind == "fb":
        w = _int(c, f"{where}.width", d.get("width", 1024), 1, 8192)
        h = _int(c, f"{where}.height", d.get("height", 768), 1, 8192)
        if w and h:
            if w * h * 4 > ram:
                c.bad(f"{where}", f"a {w}x{h} frame ({w * h * 4} bytes) does not fit in RAM "
                                  f"({ram} bytes; see system.ram)")
            out.update(width=str(w), height=str(h))
    elif kind == "nic":
        _nic(c, where, d, out)
    return out


def _disk(c: "_Checker", where: str, name: str, d: dict, base_dir: str,
          out: dict[str, str]) -> None:
    size = None
    if "size" in d:
        try:
            size = parse_disk_size(d["size"])
            out["size"] = str(size)
        except ValueError as e:
            c.bad(f"{where}.size", f"bad size: {e}")
    if "image" in d:
        img = d["image"]
        if not isinstance(img, str) or not img or "," in img or ":" in img:
            c.bad(f"{where}.image", f"expected a file path (no ',' or ':'), got {img!r}")
            return
        path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(img)))
        if os.path.isdir(path):
            c.bad(f"{where}.image", f"{path} is a directory")
        elif not os.path.exists(path) and "size" not in d:
            c.bad(f"{where}.image", f"{path} does not exist; give size = \"16M\" to create it")
        elif not os.path.isdir(os.path.dirname(path)):
            c.bad(f"{where}.image", f"directory {os.path.dirname(path)} does not exist")
        else:
            out["image"] = path
    elif "size" not in d:
        c.bad(f"{where}.size", f"disk {name} needs a size (its image RUN_DIR/{name}.img is "
                               f"created with it) or an existing image")


def _nic(c: "_Checker", where: str, d: dict, out: dict[str, str]) -> None:
    backend = d.get("backend", "loopback")
    if backend not in BACKENDS:
        c.bad(f"{where}.backend", f"unknown NIC back end {backend!r} (known: {', '.join(BACKENDS)})")
    else:
        out["backend"] = backend
    if "port" in d and (p := _int(c, f"{where}.port", d["port"], 0, 65535)) is not None:
        out["port"] = str(p)
    if "peer" in d:
        peer = d["peer"]
        if not isinstance(peer, str) or not PEER_RE.match(peer) or not 0 < int(peer.rsplit(":", 1)[1]) < 65536:
            c.bad(f"{where}.peer", f"expected \"HOST:PORT\", got {peer!r}")
        else:
            out["peer"] = peer
    if "tap" in d:
        tap = d["tap"]
        if not isinstance(tap, str) or not re.match(r"^[A-Za-z0-9_.-]{1,15}$", tap):
            c.bad(f"{where}.tap", f"expected an interface name (1..15 characters), got {tap!r}")
        else:
            out["tap"] = tap
    if "mac" in d:
        mac = d["mac"]
        if not isinstance(mac, str) or not MAC_RE.match(mac):
            c.bad(f"{where}.mac", f"expected a MAC like \"02:00:00:00:00:01\", got {mac!r}")
        else:
            out["mac"] = mac


def _device_table(c: "_Checker", data: dict, base_dir: str, ram: int) -> list[DeviceSpec]:
    from .image import NAME_RE
    raw = data.get("device", [])
    if not isinstance(raw, list):
        c.bad("device", "devices must be given as [[device]] tables")
        return []
    out: list[DeviceSpec] = []
    names: dict[str, int] = {}
    lines: dict[int, str] = {}
    for i, d in enumerate(raw):
        where = f"device[{i}]"
        if not isinstance(d, dict):
            c.bad(where, "each [[device]] must be a table")
            continue
        kind, name = d.get("kind"), d.get("name")
        if kind not in KINDS:
            c.bad(f"{where}.kind", f"unknown device kind {kind!r} (known: {', '.join(KINDS)})")
            continue
        if not isinstance(name, str) or not NAME_RE.match(name) or ":" in name or "," in name:
            c.bad(f"{where}.name", f"missing or invalid device name {name!r}")
            continue
        where = f"device[{i}] ({name})"
        if (kind == "pic") != (name == "pic"):
            c.bad(f"{where}.name", "the interrupt controller is always named 'pic', "
                                   "and no other device may take that name")
            continue
        if name in names:
            c.bad(f"{where}.name", f"duplicate device name {name!r} (first in device[{names[name]}])")
            continue
        names[name] = i
        params = _params(c, where, kind, name, d, base_dir, ram)
        if "line" in params:
            line = int(params["line"])
            if line in lines:
                c.bad(f"{where}.line", f"interrupt line {line} is already taken by {lines[line]!r}")
            lines[line] = name
        if kind != "pic":
            out.append(DeviceSpec(kind, name, params))
    wired = sum(1 for d in out if d.kind != "fb")
    if wired > PIC_LINES:
        c.bad("device", f"{wired} devices need an interrupt line; the controller has {PIC_LINES}")
    return out


def check_devices(c: "_Checker", data: dict, tasks: list["TaskSpec"], path: str,
                  ram: int | None) -> list[DeviceSpec]:
    """Check `[[device]]` and every task's `devices`; add the hal and io tasks to `tasks`."""
    devices = _device_table(c, data, os.path.dirname(os.path.abspath(path)), ram or DEFAULT_RAM)
    known = {d.name for d in devices} | ({"pic"} if "device" in data else set())
    users = [t for t in tasks if t.devices]
    for i, t in enumerate(tasks):
        where = f"task[{i}] ({t.name})"
        for dev in t.devices:
            if dev not in known:
                c.bad(f"{where}.devices", f"unknown device {dev!r} (devices: "
                                          f"{', '.join(sorted(known)) or 'none: the image has no [[device]]'})")
        if not devices and "device" not in data:
            continue
        if t.name in (HAL_TASK, IO_TASK):
            c.bad(f"{where}.name", f"task name {t.name!r} is reserved for the launcher's "
                                   f"{'HAL' if t.name == HAL_TASK else 'io server'} in an image with devices")
        for svc in t.provides:
            if svc in (HAL_TASK, IO_TASK):
                c.bad(f"{where}.provides", f"service {svc!r} is reserved in an image with devices")
        if t.devices and any(cap.local == IO_CAP for cap in t.caps):
            c.bad(f"{where}.caps.{IO_CAP}", f"the local name {IO_CAP!r} is taken by the io "
                                            f"capability of a task with devices")
        for cap in t.caps:
            if cap.service == IO_TASK and cap.label == ADMIN_LABEL:
                c.bad(f"{where}.caps.{cap.local}.label",
                      f"io label {ADMIN_LABEL} is io's admin gate, the launcher's alone; "
                      f"a driver gets its io capability from devices = [...]")
    if not devices and "device" not in data:
        return []
    if c.problems:
        return devices
    _add_tasks(tasks, devices, users)
    return devices


def _add_tasks(tasks: list["TaskSpec"], devices: list[DeviceSpec], users: list["TaskSpec"]) -> None:
    from hal.protocol import BUS_LABEL

    from .image import CapSpec, TaskSpec
    policy: dict[str, list[str]] = {}
    for t in users:
        label = DRIVER_LABEL_BASE + tasks.index(t)
        policy[str(label)] = list(t.devices)
        t.caps.append(CapSpec(IO_CAP, IO_TASK, int(Rights.INVOKE), label))
    from .sandbox import switched_off
    hal = TaskSpec(name=HAL_TASK, run="launcher.devices:hal_task",
                   args=[d.hal_arg() for d in devices] + (["--no-iommu"] if switched_off("iommu")
                                                          else []), provides=[HAL_TASK],
                   restart="on-failure", restart_dependents=True, quota=1024)
    io = TaskSpec(name=IO_TASK, run="servers.io.server:serve", args=[json.dumps(policy)],
                  provides=[IO_TASK], restart="on-failure", restart_dependents=True,
                  caps=[CapSpec(HAL_CAP, HAL_TASK, int(Rights.INVOKE), BUS_LABEL)])
    tasks[:0] = [hal, io]


# -- the HAL task ------------------------------------------------------------------------

def hal_task(l4: "L4", *specs: str) -> int:
    """The HAL on the kernel's RAM: `hal.main.task` with --ram, --run-dir and --name filled in.

    Each SPEC is a `--device` argument; a disk without `image=` gets RUN_DIR/NAME.img.
    """
    from hal.main import task
    run_dir = os.environ.get("L4_RUN_DIR") or os.path.dirname(l4.kernel_sock)
    # The launcher made this task the DMA engine (MEM_DMA, launcher/memory.py): `--ram
    # kernel` joins the RAM through our memory channel, every frame (hal/ram.py).
    argv = ["--ram", "kernel", "--run-dir", run_dir, "--name", HAL_TASK]
    for s in specs:
        if s == "--no-iommu":             # the attack suite's control (L4PY_SANDBOX_OFF=iommu)
            argv.append(s)
            continue
        kind, _, rest = s.partition(":")
        name, _, opts = rest.partition(":")
        if kind == "disk" and "image=" not in opts:
            img = f"image={os.path.join(run_dir, name + '.img')}"
            s = f"{kind}:{name}:" + (f"{opts},{img}" if opts else img)
        argv += ["--device", s]
    return task(l4, *argv)
