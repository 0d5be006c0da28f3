"""Boot a kernel with one or more HALs, for tests and benchmarks.

    with HalRig(devices={"hal": ["timer:timer0", "disk:disk0:size=1M"]}) as rig:
        devs = rig.open("hal")                  # {name: DeviceHandle}, held by root
        rig.ram_map("hal")                      # the driver's view of that HAL's RAM (mmap)

Each HAL gets its own RAM: a memfd this process creates (nothing named in the file system
or /dev/shm; Linux frees it when the last holder exits), handed to the HAL as the path
`/proc/<our pid>/fd/<fd>` (as the kernel hands out its RAM), its control socket `RUN_DIR/NAME.ctl`, and relative `image=` paths of disks are put in the run
directory. The root task (this process) holds the bus gate of each HAL (`rig.bus[name]`).
"""
from __future__ import annotations

import mmap
import os
from typing import Any

from kernel.user.testing import System, TaskProc, wait_for

from .control import control_path
from .driver import DeviceHandle, open_devices
from .protocol import BUS_LABEL

DEFAULT_RAM = 16 << 20


class HalRig:
    def __init__(self, devices: dict[str, list[str]], ram_size: int = DEFAULT_RAM,
                 system: System | None = None) -> None:
        self.own_system = system is None
        self.sys = system or System()
        self.run_dir = self.sys.run_dir
        self.root = self.sys.root
        self.procs: dict[str, TaskProc] = {}
        self.bus: dict[str, int] = {}
        self.ram_size = ram_size
        self._maps: dict[str, mmap.mmap] = {}
        self._ram_fds: dict[str, int] = {}
        try:
            for name, specs in devices.items():
                self.start(name, specs)
        except BaseException:
            self.close()
            raise

    def ram_path(self, name: str) -> str:
        if name not in self._ram_fds:
            fd = os.memfd_create(f"l4py-{name}-ram", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.ram_size)
            self._ram_fds[name] = fd
        return f"/proc/{os.getpid()}/fd/{self._ram_fds[name]}"

    def start(self, name: str, specs: list[str]) -> TaskProc:
        fixed = []
        for s in specs:
            if s.startswith("disk:") and "image=" not in s:
                s += ("," if s.count(":") == 2 else ":") + f"image={os.path.join(self.run_dir, s.split(':')[1] + '.img')}"
            fixed.append(s)
        args = ["--ram", self.ram_path(name), "--ram-size", str(self.ram_size), "--name", name,
                "--run-dir", self.run_dir]
        for s in fixed:
            args += ["--device", s]
        proc = self.sys.spawn("hal.main:task", name, args=tuple(args))
        self.procs[name] = proc
        self.bus[name] = self.root.create_gate(BUS_LABEL, thread=proc.thread)
        wait_for(lambda: os.path.exists(control_path(self.run_dir, name)) or proc.proc.poll() is not None,
                 30, f"HAL {name} control socket")
        if proc.proc.poll() is not None:
            raise RuntimeError(f"HAL {name} exited with {proc.proc.returncode}")
        return proc

    def open(self, name: str = "hal", l4: Any = None) -> dict[str, DeviceHandle]:
        return open_devices(l4 or self.root, self.bus[name])

    def ram_map(self, name: str = "hal") -> mmap.mmap:
        if name not in self._maps:
            self.ram_path(name)
            self._maps[name] = mmap.mmap(self._ram_fds[name], self.ram_size)
        return self._maps[name]

    def stop_hal(self, name: str) -> int:
        """Stop a HAL through its control socket; answers its exit status."""
        from .tools import control
        control(self.run_dir, {"op": "stop"}, name)
        return self.procs[name].wait(30)

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:
                pass
        self._maps.clear()
        for name, p in self.procs.items():
            if p.proc.poll() is None:
                try:
                    self.stop_hal(name)
                except Exception:
                    p.kill()
        for fd in self._ram_fds.values():
            os.close(fd)
        self._ram_fds.clear()
        if self.own_system:
            self.sys.close()          # checks nothing is left: our RAM memfds are closed first

    def __enter__(self) -> "HalRig":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
