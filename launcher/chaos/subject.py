"""The system under test: booted in this process (`Booted`) or attached (`Attached`).

Both answer the same calls the runner makes — `ps()`, `kill(task, signal)`, `fault(op,
spec)` (the kernel's FAULT call), `task_id`, `kernel_info`, `thread()`, `close()` — and carry
`image`, `run_dir`, `kernel_pid`, `probe_gates`, `client_gates`, `gate_ids`. What a system
cannot do raises `Unsupported` with the reason (the runner records the injection as skipped).

    Booted    boots the image with a `Launcher` whose loop runs in a background thread; the
              runner's calls go through L4 threads of the root task, and every service gets
              one more gate (label PROBE_LABEL) for the prober, never faulted.
    Attached  a system booted elsewhere (`l4run boot --detach`): everything goes through the
              launcher's control socket; IPC faults and crashes through its `fault` command,
              whose launcher side is `control_fault`.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from kernel.user import errors

from .. import control

PROBE_LABEL = 0xC4A05        # the gate label of the chaos prober (never faulted)


class Unsupported(Exception):
    """The system cannot take this kind of fault (say why)."""


class _Controlled:
    """The task table and signals, through the launcher's control socket."""

    run_dir: str

    def ps(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in control.request(self.run_dir, "ps")["tasks"]}

    def kill(self, task: str, sig: str) -> dict[str, Any]:
        return control.request(self.run_dir, "kill", task=task, signal_name=sig)


class Booted(_Controlled):
    """Boot an image in this process; the launcher's loop runs in a background thread."""

    def __init__(self, image: Any, run_dir: str, budgets: tuple[int, float] | None = None) -> None:
        from ..system import Launcher
        if budgets is not None:
            for t in image.tasks:
                t.budget = budgets
        self.image = image
        self.events: list[tuple[float, str]] = []
        self.la = Launcher(image, run_dir, on_event=lambda s: self.events.append((time.time(), s)))
        self.run_dir = self.la.run_dir
        self._threads: list[Any] = []
        try:
            self.la.boot(timeout=30)
            assert self.la.root is not None and self.la.kernel is not None
            self.kernel_pid = self.la.kernel.pid
            # The root L4 thread belongs to the launcher's loop (started below): the L4
            # threads of probes and callers are made through a thread of our own, made now.
            from kernel.user.client import L4
            made = self.la.root.create_thread()
            self._maker = L4(self.la.kernel_sock, made.secret, ctx=self.la.root.ctx)
            self._maker_lock = threading.Lock()
            self._threads.append(self._maker)
            self.ctl = self.thread()
            self._gates()
        except BaseException:
            self.la.shutdown()
            raise
        self.loop = threading.Thread(target=self.la.serve, kwargs={"signals": False},
                                     name="l4run-launcher", daemon=True)
        self.loop.start()

    def _gates(self) -> None:
        """A prober gate per service; the kernel ids of the others (the ones to fault); one
        client gate per service for the load threads."""
        assert self.la.root is not None
        self.probe_gates = {svc: self.la.service_gate(svc, PROBE_LABEL) for svc in self.la.services}
        self.gate_ids = {svc: sorted(self.la.root.cap_inspect(slot)["id"]
                                     for label, slot in s.gates.items() if label != PROBE_LABEL)
                         for svc, s in self.la.services.items()}
        self.client_gates = {svc: s.gates[min(lb for lb in s.gates if lb != PROBE_LABEL)]
                             for svc, s in self.la.services.items()
                             if any(lb != PROBE_LABEL for lb in s.gates)}

    def thread(self) -> Any:
        """A new L4 thread of the root task (one per OS thread that makes calls). Made by
        our own maker thread, never the root thread: the launcher's loop uses that one, and
        two OS threads on one L4 connection would take each other's answers."""
        from kernel.user.client import L4
        assert self.la.root is not None
        with self._maker_lock:
            new = self._maker.create_thread()
        l4 = L4(self.la.kernel_sock, new.secret, ctx=self.la.root.ctx)
        self._threads.append(l4)
        return l4

    def fault(self, op: str, spec: dict[str, Any] | None = None) -> Any:
        return self.ctl.fault(op, spec)

    def task_id(self, task: str) -> int:
        return self.la.tasks[task].task_id

    def kernel_info(self) -> dict[str, Any] | None:
        try:
            return self.ctl.kernel_info()
        except errors.L4Error:
            return None

    def close(self) -> None:
        self.la.stopping = True
        self.loop.join(30)
        for l4 in self._threads:
            l4.close()


class Attached(_Controlled):
    """A system booted elsewhere (`l4run boot --detach`): everything via its control socket.
    IPC faults and crashes need the launcher's `fault` command (`control_fault` below)."""

    def __init__(self, run_dir: str) -> None:
        from ..image import load_image
        self.run_dir = os.path.abspath(run_dir)
        state = control.read_state(self.run_dir)
        if state is None:
            raise control.NotRunning(f"no system is running in {self.run_dir}")
        control.request(self.run_dir, "status")
        self.kernel_pid = int(state.get("kernel_pid") or 0)
        self.image = load_image(state["image"])
        self.events: list[tuple[float, str]] = []
        self.probe_gates: dict[str, int] = {}
        self.client_gates: dict[str, int] = {}
        self.gate_ids: dict[str, list[int]] = {s: [] for t in self.image.tasks for s in t.provides}

    def fault(self, op: str, spec: dict[str, Any] | None = None, **extra: Any) -> Any:
        a = control.request(self.run_dir, "fault", op=op, spec=spec or {}, **extra)
        if not a.get("ok"):
            if "unknown command" in str(a.get("error")):
                raise Unsupported("this launcher has no 'fault' control command; boot the "
                                  "image with `l4run chaos --image` for IPC faults and crashes")
            raise errors.InvalidArgument(str(a.get("error")))
        return a.get("result")

    def task_id(self, task: str) -> int:
        raise Unsupported("attached: crash goes through the launcher's fault command")

    def kernel_info(self) -> dict[str, Any] | None:
        return None

    def thread(self) -> Any:
        raise Unsupported("attached: no root thread for probes")

    def close(self) -> None:
        pass


def control_fault(la: Any, op: str, spec: dict[str, Any] | None = None,
                  service: str | None = None, task: str | None = None) -> dict[str, Any]:
    """The launcher's `fault` control command (`Launcher.cmd_fault` delegates here): a
    kernel FAULT op on behalf of a chaos run attached through the control socket; `service`
    arms the rule on every gate of that service, `task` names the task of a crash."""
    spec = dict(spec or {})
    if task is not None:
        spec["task_id"] = la.tasks[task].task_id
    if service is None:
        return {"result": la.root.fault(op, spec)}
    svc = la.services[service]
    out = [la.root.fault(op, {**spec, "gate": la.root.cap_inspect(slot)["id"]})
           for label, slot in svc.gates.items() if label != PROBE_LABEL]
    return {"result": out}
