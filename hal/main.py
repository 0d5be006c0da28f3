"""Starting the HAL: `python -m hal ...` or, as a task, `kernel.user.task hal.main:task ...`.

    --ram PATH           physical RAM file (created with --ram-size if absent, removed at exit)
    --ram-size SIZE      e.g. 64M (default: the file's size)
    --device SPEC        repeatable: KIND:NAME[:key=value,key=value...]
                           timer:timer0
                           disk:disk0:image=/path/disk.img,size=16M
                           fb:fb0:width=1024,height=768         (the largest mode)
                           input:input0
                           nic:nic0:backend=loopback|udp|tap,port=0,peer=127.0.0.1:5555,
                                    tap=l4tap0,mac=02:00:00:00:00:01
                         every device but fb gets the next free interrupt line unless line=N
    --run-dir DIR        where the control socket goes (default: the kernel socket's directory)
    --name NAME          the HAL's name (control socket NAME.ctl), default "hal"

The devices and their registers: hal/DEVICES.md. Bad arguments end the HAL with status 2
and a message naming the device and key.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from kernel.user.client import L4

from .control import Control
from .device import Device
from .machine import PIC_LINES, Machine
from .pic import Pic
from .ram import Ram

SIZE_RE = re.compile(r"^(\d+)\s*([KMG]?)i?B?$", re.IGNORECASE)
KINDS = ("timer", "disk", "fb", "input", "nic")


def parse_size(text: str) -> int:
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad size {text!r} (e.g. 4096, 64K, 16M, 1G)")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    parts = spec.split(":", 2)
    if len(parts) < 2 or parts[0] not in KINDS or not parts[1]:
        raise ValueError(f"device {spec!r}: must be KIND:NAME[:k=v,...] with KIND one of {', '.join(KINDS)}")
    opts: dict[str, str] = {}
    if len(parts) == 3 and parts[2]:
        for kv in parts[2].split(","):
            k, eq, v = kv.partition("=")
            if not eq:
                raise ValueError(f"device {parts[1]}: option {kv!r} must be key=value")
            opts[k.strip()] = v.strip()
    return parts[0], parts[1], opts


def build_device(kind: str, name: str, opts: dict[str, str], line: int | None, pic: Pic,
                 ram: Ram) -> Device:
    def take(key: str, default: Any = None) -> Any:
        return opts.pop(key, default)
    if kind == "timer":
        from .timer import Timer
        dev: Device = Timer(name, line, pic, ram)
    elif kind == "disk":
        from .disk import Disk
        image = take("image")
        if not image:
            raise ValueError(f"device {name}: disk needs image=PATH")
        size = take("size")
        dev = Disk(name, line, pic, ram, image, parse_size(size) if size else 0)
    elif kind == "fb":
        from .fb import Framebuffer
        dev = Framebuffer(name, None, pic, ram, int(take("width", 1024)), int(take("height", 768)))
    elif kind == "input":
        from .input import Input
        dev = Input(name, line, pic, ram)
    else:
        from .nic import Nic
        dev = Nic(name, line, pic, ram, backend=take("backend", "loopback"),
                  port=int(take("port", 0)), peer=take("peer"), tap=take("tap", "l4tap0"),
                  mac=take("mac"))
    if opts:
        raise ValueError(f"device {name}: unknown option(s) {', '.join(sorted(opts))} for a {kind}")
    return dev


def build(l4: L4, argv: list[str]) -> tuple[Machine, Control]:
    ap = argparse.ArgumentParser(prog="python -m hal", description="The L4Py emulated machine")
    ap.add_argument("--ram", required=True)
    ap.add_argument("--ram-size", default="0")
    ap.add_argument("--device", action="append", default=[])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--name", default="hal")
    ap.add_argument("--no-iommu", action="store_true",
                    help="let devices DMA anywhere in RAM (the attack suite's control only)")
    a = ap.parse_args(argv)
    # "kernel": the kernel's RAM through our memory channel (we are the DMA task).
    ram = Ram.attach(l4) if a.ram == "kernel" else Ram(a.ram, parse_size(a.ram_size))
    devices: list[Device] = []
    try:
        pic = Pic("pic", PIC_LINES, ram)
        used: set[int] = set()
        specs = [parse_spec(s) for s in a.device]
        for _, name, opts in specs:
            if "line" in opts:
                used.add(int(opts["line"]))
        free = (n for n in range(PIC_LINES) if n not in used)
        for kind, name, opts in specs:
            line: int | None = None
            if kind != "fb":
                line = int(opts.pop("line")) if "line" in opts else next(free)
                if not 0 <= line < PIC_LINES:
                    raise ValueError(f"device {name}: line {line} outside 0..{PIC_LINES - 1}")
            devices.append(build_device(kind, name, opts, line, pic, ram))
        m = Machine(l4, ram, devices, pic, a.name, iommu=not a.no_iommu)
        m.wire()
        run_dir = a.run_dir or os.path.dirname(l4.kernel_sock)
        return m, Control(m, run_dir)
    except BaseException:
        for d in devices:
            d.stop()
        ram.close()
        raise


def task(l4: L4, *argv: str) -> int:
    """The HAL as an L4 task (kernel.user.task hal.main:task ARGS)."""
    try:
        m, ctl = build(l4, list(argv))
    except (ValueError, OSError) as e:
        print(f"hal: {e}", file=sys.stderr, flush=True)
        return 2
    return m.run(ctl)


def main() -> int:
    from kernel.user.task import main as task_main
    return task_main(["hal.main:task", *sys.argv[1:]])
