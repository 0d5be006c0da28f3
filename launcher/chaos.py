"""Chaos runs: a plan (TOML) of faults, a seeded schedule, injection, invariants, a report.

    plan      `load_plan(path)` validates a chaos plan (docs/CHAOS.md) and names file, key
              and reason for every mistake, before anything runs.
    schedule  `schedule(plan, names)` turns the plan and a seed into the complete list of
              injections (time, kind, target, parameters). It depends on nothing but the plan,
              the seed and the image's task and service names, so the same seed on the same
              image gives the same sequence — it is computed before the run starts.
    run       `ChaosRun` boots the image in this process (or attaches to a running system
              through its control socket), injects each fault when due, records it in
              RUN_DIR/chaos/injections.jsonl (with the kernel's own log of the IPC faults it
              injected), and checks the invariants during and after the run.
    report    faults by kind, violations with timestamps, restarts, recovery times, verdict.

Fault kinds: task faults through the launcher (kill = SIGKILL, stop/cont = SIGSTOP/SIGCONT,
crash = the kernel answers the task's blocked system calls with PROTOCOL so the task library
raises inside the task's own code), cpu_hog / mem_hog processes beside a task (bounded in time
and size, reaped at the end), IPC faults inside the kernel on a service's gates (drop, delay,
duplicate, reorder, corrupt, timeout; kernel/faults.py), device faults through the HAL's
control socket when a HAL runs.

Threads: the launcher (when we booted it) runs its own loop in a background thread; the
prober and load threads each own an L4 thread of the root task; everything else — schedule,
injections, invariant checks, the record — is the calling thread's.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from kernel import errors

from . import control

TASK_KINDS = ("kill", "crash", "stop", "cont", "cpu_hog", "mem_hog")
IPC_KINDS = ("drop", "delay", "duplicate", "reorder", "corrupt", "timeout")
DEVICE_KINDS = ("device",)
KINDS = TASK_KINDS + IPC_KINDS + DEVICE_KINDS
PROBE_LABEL = 0xC4A05        # the gate label of the chaos prober (never faulted)
MAX_HOG_S = 60.0
MAX_HOG_MIB = 1024
INVARIANTS = {"kernel_up": True, "restart": True, "call_timeouts": True,
              "clients_recover": True, "no_leaks": True, "allow_budget_exhaustion": False}


class PlanError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------
# The plan

@dataclass
class FaultSpec:
    kind: str
    tasks: list[str] = field(default_factory=list)       # scope: task names
    services: list[str] = field(default_factory=list)    # scope: services (their gates)
    gates: list[int] = field(default_factory=list)       # scope: kernel gate ids
    devices: list[str] = field(default_factory=list)     # scope: HAL devices
    weight: float = 1.0
    probability: float = 1.0
    count: int = 1
    delay_ms: tuple[int, int] = (10, 10)
    nbytes: int = 1
    duration: float = 1.0           # stop, hogs, IPC rules, device knobs: how long
    mib: int = 64                   # mem_hog
    knobs: dict[str, Any] = field(default_factory=dict)   # device
    reset: dict[str, Any] = field(default_factory=dict)   # device knobs after `duration`
    where: str = ""                 # "fault[3]" / "schedule[0]": for messages


@dataclass
class Check:
    what: str                        # "command", "task" or "service"
    target: str
    every: float = 2.0
    within: float = 5.0              # task/service: longest time without progress / answer
    timeout: float = 10.0            # command: its time limit


@dataclass
class Plan:
    path: str
    name: str
    seed: int = 0
    duration: float = 20.0
    rate: float = 0.0                # faults per second (0: only the explicit schedule)
    faults: list[FaultSpec] = field(default_factory=list)
    at: list[tuple[float, FaultSpec]] = field(default_factory=list)
    invariants: dict[str, bool] = field(default_factory=lambda: dict(INVARIANTS))
    checks: list[Check] = field(default_factory=list)
    recovery: float = 5.0            # a restarted task runs again (and answers) within this
    client_recovery: float = 10.0    # clients of a restarted server get an answer within this
    call_slack: float = 1.0          # a call may end this late after its timeouts
    settle: float = 3.0              # after the last fault, before the final checks
    spacing: str = "budget"          # kill/crash of one task: "budget" spaces them to fit it
    load: dict[str, Any] = field(default_factory=dict)   # {service, threads, timeout}
    image: str | None = None


_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min)?\s*$")


def seconds(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    m = _DUR.match(v) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"{where}: {v!r} is not a duration (e.g. 20, \"20s\", \"500ms\", \"2m\")")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0}[m.group(2)]
    return float(m.group(1)) * scale


def _fault(d: Any, where: str, problems: list[str]) -> FaultSpec | None:
    if not isinstance(d, dict):
        problems.append(f"{where}: a fault is a table")
        return None
    kind = d.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        return None
    f = FaultSpec(kind, where=where.rpartition(": ")[2])
    known = {"kind", "tasks", "task", "services", "service", "gates", "devices", "device",
             "weight", "probability", "count", "delay", "bytes", "for", "mib", "knobs", "reset",
             "at"}
    for key in d:
        if key not in known:
            problems.append(f"{where}.{key}: unknown key")
    try:
        for plural, single in (("tasks", "task"), ("services", "service"), ("devices", "device")):
            vals = d.get(plural, [d[single]] if single in d else [])
            if not (isinstance(vals, list) and all(isinstance(x, str) for x in vals)):
                raise ValueError(f"{where}.{plural}: a list of names")
            setattr(f, plural, vals)
        f.gates = [int(g) for g in d.get("gates", [])]
        f.weight = float(d.get("weight", 1.0))
        f.probability = float(d.get("probability", 1.0))
        if not 0.0 <= f.probability <= 1.0:
            raise ValueError(f"{where}.probability: must be 0..1")
        f.count = int(d.get("count", 1))
        delay = d.get("delay", "10ms")
        lo_hi = delay if isinstance(delay, list) else [delay, delay]
        f.delay_ms = (int(seconds(lo_hi[0], f"{where}.delay") * 1000),
                      int(seconds(lo_hi[-1], f"{where}.delay") * 1000))
        if f.delay_ms[0] > f.delay_ms[1]:
            raise ValueError(f"{where}.delay: [min, max] with min <= max")
        f.nbytes = int(d.get("bytes", 1))
        f.duration = seconds(d.get("for", 1.0), f"{where}.for")
        f.mib = int(d.get("mib", 64))
        f.knobs, f.reset = dict(d.get("knobs", {})), dict(d.get("reset", {}))
    except (ValueError, TypeError) as e:
        problems.append(str(e) if str(e).startswith(where) else f"{where}: {e}")
        return None
    if kind in ("cpu_hog", "mem_hog") and not (f.duration <= MAX_HOG_S and f.mib <= MAX_HOG_MIB):
        problems.append(f"{where}: hogs are bounded to {MAX_HOG_S:g}s and {MAX_HOG_MIB} MiB")
    if kind == "device" and not f.knobs:
        problems.append(f"{where}.knobs: a device fault sets HAL knobs (e.g. {{error_rate = 0.1}})")
    if kind in IPC_KINDS and f.tasks and not f.services and not f.gates:
        problems.append(f"{where}: IPC faults are scoped by services or gates, not tasks")
    return f


def load_plan(path: str, image_names: tuple[set[str], set[str]] | None = None) -> Plan:
    """Read and check a plan. `image_names` (tasks, services) checks the scopes too."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise PlanError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as e:
        raise PlanError([f"{path}: not TOML: {e}"]) from None
    return parse_plan(data, path, image_names)


def parse_plan(data: dict[str, Any], path: str = "plan",
               image_names: tuple[set[str], set[str]] | None = None) -> Plan:
    problems: list[str] = []
    head = data.get("chaos", {})
    plan = Plan(path, str(head.get("name", os.path.splitext(os.path.basename(path))[0])))
    for key in data:
        if key not in ("chaos", "fault", "schedule", "invariants", "check", "load"):
            problems.append(f"{path}: [{key}]: unknown table")
    try:
        plan.seed = int(head.get("seed", 0))
        plan.duration = seconds(head.get("duration", 20), f"{path}: chaos.duration")
        plan.rate = float(head.get("rate", 0.0))
        plan.recovery = seconds(head.get("recovery", 5), f"{path}: chaos.recovery")
        plan.client_recovery = seconds(head.get("client_recovery", 10), f"{path}: chaos.client_recovery")
        plan.call_slack = seconds(head.get("call_slack", 1), f"{path}: chaos.call_slack")
        plan.settle = seconds(head.get("settle", 3), f"{path}: chaos.settle")
        plan.spacing = str(head.get("spacing", "budget"))
        plan.image = head.get("image")
        if plan.spacing not in ("budget", "none"):
            raise ValueError(f"{path}: chaos.spacing: 'budget' or 'none'")
    except (ValueError, TypeError) as e:
        problems.append(str(e))
    for i, d in enumerate(data.get("fault", [])):
        f = _fault(d, f"{path}: fault[{i}]", problems)
        if f is not None:
            plan.faults.append(f)
    for i, d in enumerate(data.get("schedule", [])):
        where = f"{path}: schedule[{i}]"
        f = _fault(d, where, problems)
        try:
            at = seconds(d.get("at"), f"{where}.at") if isinstance(d, dict) else 0.0
        except ValueError as e:
            problems.append(str(e))
            continue
        if f is not None:
            plan.at.append((at, f))
    for key, value in data.get("invariants", {}).items():
        if key not in INVARIANTS or not isinstance(value, bool):
            problems.append(f"{path}: invariants.{key}: unknown invariant or not true/false "
                            f"(known: {', '.join(INVARIANTS)})")
        else:
            plan.invariants[key] = value
    for i, d in enumerate(data.get("check", [])):
        where = f"{path}: check[{i}]"
        kinds = [k for k in ("command", "task", "service") if k in d]
        if len(kinds) != 1:
            problems.append(f"{where}: exactly one of command, task, service")
            continue
        try:
            plan.checks.append(Check(kinds[0], str(d[kinds[0]]),
                                     seconds(d.get("every", 2), f"{where}.every"),
                                     seconds(d.get("within", 5), f"{where}.within"),
                                     seconds(d.get("timeout", 10), f"{where}.timeout")))
        except ValueError as e:
            problems.append(str(e))
    if "load" in data:
        plan.load = dict(data["load"])
        if not isinstance(plan.load.get("service"), str):
            problems.append(f"{path}: load.service: the service the load threads call")
    if plan.rate > 0 and not plan.faults:
        problems.append(f"{path}: chaos.rate needs [[fault]] entries to draw from")
    if not plan.faults and not plan.at:
        problems.append(f"{path}: no [[fault]] and no [[schedule]]: nothing to inject")
    if image_names is not None:
        problems += _check_scope(plan, *image_names)
    if problems:
        raise PlanError(problems)
    return plan


def _check_scope(plan: Plan, tasks: set[str], services: set[str]) -> list[str]:
    out = []
    for f in plan.faults + [f for _, f in plan.at]:
        where = f.where
        out += [f"{plan.path}: {where}.tasks: no task {t!r} in the image" for t in f.tasks
                if t not in tasks]
        out += [f"{plan.path}: {where}.services: no service {s!r} in the image"
                for s in f.services if s not in services]
        if f.kind in IPC_KINDS and not (f.services or f.gates) and not services:
            out.append(f"{plan.path}: {where}: the image provides no service to fault")
    for c in plan.checks:
        if c.what == "task" and c.target not in tasks:
            out.append(f"{plan.path}: check: no task {c.target!r} in the image")
        if c.what == "service" and c.target not in services:
            out.append(f"{plan.path}: check: no service {c.target!r} in the image")
    if plan.load and plan.load.get("service") not in services:
        out.append(f"{plan.path}: load.service: no service {plan.load.get('service')!r}")
    return out


# ---------------------------------------------------------------------------
# The schedule: everything random is drawn here, from the seed, before the run.

@dataclass
class Injection:
    seq: int
    at: float
    kind: str
    target: str                     # task, "service:NAME", "gate:ID" or "device:NAME"
    params: dict[str, Any]

    def key(self) -> tuple[Any, ...]:
        """What must be equal between two runs with the same seed."""
        return (self.seq, round(self.at, 6), self.kind, self.target,
                json.dumps(self.params, sort_keys=True))


def _targets(f: FaultSpec, tasks: list[str], services: list[str]) -> list[str]:
    if f.kind in TASK_KINDS:
        return sorted(f.tasks or tasks)
    if f.kind in IPC_KINDS:
        return [f"gate:{g}" for g in sorted(f.gates)] + \
               [f"service:{s}" for s in sorted(f.services or ([] if f.gates else services))]
    return [f"device:{d}" for d in sorted(f.devices)] or ["device:"]


def _params(f: FaultSpec, rng: random.Random) -> dict[str, Any]:
    if f.kind in IPC_KINDS:
        p: dict[str, Any] = {"probability": f.probability, "count": f.count,
                             "seed": rng.getrandbits(32), "for": f.duration}
        if f.kind == "delay":
            p["delay_ms"] = rng.randint(*f.delay_ms)
        if f.kind == "corrupt":
            p["bytes"] = f.nbytes
        return p
    if f.kind in ("stop", "cpu_hog"):
        return {"for": f.duration}
    if f.kind == "mem_hog":
        return {"for": f.duration, "mib": f.mib}
    if f.kind == "device":
        return {"for": f.duration, "knobs": f.knobs, "reset": f.reset}
    return {}


def schedule(plan: Plan, tasks: list[str], services: list[str], seed: int | None = None,
             duration: float | None = None,
             budgets: dict[str, tuple[int, float]] | None = None) -> list[Injection]:
    """The complete injection sequence of a run (a pure function of its arguments)."""
    rng = random.Random(plan.seed if seed is None else seed)
    duration = plan.duration if duration is None else duration
    tasks, services = sorted(tasks), sorted(services)
    out: list[tuple[float, str, str, dict[str, Any]]] = []
    for at, f in plan.at:
        if at < duration:
            for target in _targets(f, tasks, services)[:1] or [""]:
                out.append((at, f.kind, target, _params(f, rng)))
    last_hit: dict[str, float] = {}
    gap = {t: (w / n) * 1.25 for t, (n, w) in (budgets or {}).items() if n > 0}
    total = sum(f.weight for f in plan.faults)
    t = 0.0
    while plan.rate > 0 and total > 0:
        t += rng.expovariate(plan.rate)
        if t >= duration:
            break
        pick, acc = rng.random() * total, 0.0
        f = plan.faults[-1]
        for cand in plan.faults:
            acc += cand.weight
            if pick < acc:
                f = cand
                break
        targets = _targets(f, tasks, services)
        if not targets:
            continue
        target = targets[rng.randrange(len(targets))]
        params = _params(f, rng)
        if f.kind in ("kill", "crash") and plan.spacing == "budget":
            if t - last_hit.get(target, -1e9) < max(gap.get(target, 0.0), plan.recovery / 2):
                continue        # would overrun the task's restart budget: skip it
            last_hit[target] = t
        out.append((t, f.kind, target, params))
    out.sort(key=lambda x: x[0])
    return [Injection(i + 1, at, kind, target, params)
            for i, (at, kind, target, params) in enumerate(out)]


# ---------------------------------------------------------------------------
# The system under test: booted here, or attached through its control socket

class Unsupported(Exception):
    """The system cannot take this kind of fault (say why)."""


class Booted:
    """Boot an image in this process; the launcher's loop runs in a background thread."""

    def __init__(self, image: Any, run_dir: str, budgets: tuple[int, float] | None = None) -> None:
        from .system import Launcher
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
            self.ctl = self.thread()
            self.probe_gates = {svc: self.la._gate(svc, PROBE_LABEL) for svc in self.la.services}
            self.gate_ids = {svc: sorted(self.la.root.cap_inspect(slot)["id"]
                                         for label, slot in s.gates.items() if label != PROBE_LABEL)
                             for svc, s in self.la.services.items()}
            self.client_gates = {svc: s.gates[min(lb for lb in s.gates if lb != PROBE_LABEL)]
                                 for svc, s in self.la.services.items()
                                 if any(lb != PROBE_LABEL for lb in s.gates)}
        except BaseException:
            self.la.shutdown()
            raise
        self.loop = threading.Thread(target=self.la.serve, kwargs={"signals": False},
                                     name="l4run-launcher", daemon=True)
        self.loop.start()

    def thread(self) -> Any:
        """A new L4 thread of the root task (one per OS thread that makes calls)."""
        from kernel.client import L4
        assert self.la.root is not None
        new = self.la.root.create_thread()
        l4 = L4(self.la.kernel_sock, new.secret, ctx=self.la.root.ctx)
        self._threads.append(l4)
        return l4

    def ps(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in control.request(self.run_dir, "ps")["tasks"]}

    def kill(self, task: str, sig: str) -> dict[str, Any]:
        return control.request(self.run_dir, "kill", task=task, signal_name=sig)

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


class Attached:
    """A system booted elsewhere (`l4run boot --detach`): everything via its control socket.
    IPC faults and crashes need the launcher's `fault` command (`control_fault` below)."""

    def __init__(self, run_dir: str) -> None:
        from .image import load_image
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
        self.gate_ids = {s: [] for t in self.image.tasks for s in t.provides}

    def ps(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in control.request(self.run_dir, "ps")["tasks"]}

    def kill(self, task: str, sig: str) -> dict[str, Any]:
        return control.request(self.run_dir, "kill", task=task, signal_name=sig)

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


# ---------------------------------------------------------------------------
# Probes and load: calls whose answers measure recovery and whose durations check timeouts

class Caller(threading.Thread):
    """Calls one gate over and over with timeouts; records outcomes and overlong calls."""

    def __init__(self, l4: Any, gate: int, timeout_ms: int, slack: float, pause: float,
                 name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.l4, self.gate, self.timeout_ms, self.pause = l4, gate, timeout_ms, pause
        self.bound = 2 * timeout_ms / 1000 + slack
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: list[tuple[float, float]] = []       # (start, end) of answered calls
        self.failed: list[float] = []                 # end times of failed calls
        self.hung: list[tuple[float, float]] = []     # (start, seconds) past the bound
        self.calls = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.time()
            try:
                self.l4.call(self.gate, b"chaos", snd_timeout=self.timeout_ms,
                             rcv_timeout=self.timeout_ms)
                ok = True
            except errors.KernelGone:
                return
            except errors.L4Error:
                ok = False
            t1 = time.time()
            with self.lock:
                self.calls += 1
                (self.ok.append((t0, t1)) if ok else self.failed.append(t1))
                del self.ok[:-5000], self.failed[:-5000]
                if t1 - t0 > self.bound:
                    self.hung.append((t0, t1 - t0))
            time.sleep(self.pause if ok else 0.005)

    def first_ok_after(self, t: float) -> float | None:
        with self.lock:
            for start, end in self.ok:
                if start >= t:
                    return end
        return None

    def last_ok(self) -> float:
        with self.lock:
            return self.ok[-1][1] if self.ok else 0.0


# ---------------------------------------------------------------------------
# The run

@dataclass
class Violation:
    t: float            # seconds since the start of the run
    ts: float
    invariant: str
    message: str


@dataclass
class Pending:
    """A task that died on purpose and must come back."""
    task: str
    kind: str
    t0: float
    old_pid: int
    services: list[str]
    dead_at: float = 0.0
    running_at: float = 0.0
    deadline: float = 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


class ChaosRun:
    def __init__(self, plan: Plan, system: Any, *, seed: int | None = None,
                 duration: float | None = None,
                 progress: Callable[[float, float, dict[str, int]], None] | None = None) -> None:
        self.plan, self.sys = plan, system
        self.seed = plan.seed if seed is None else seed
        self.duration = plan.duration if duration is None else duration
        self.progress = progress
        img = system.image
        self.specs = {t.name: t for t in img.tasks}
        self.services = {s: t.name for t in img.tasks for s in t.provides}
        budgets = {t.name: t.budget for t in img.tasks}
        self.injections = schedule(plan, list(self.specs), list(self.services), self.seed,
                                   self.duration, budgets)
        self.dir = os.path.join(system.run_dir, "chaos")
        os.makedirs(self.dir, exist_ok=True)
        self.record_path = os.path.join(self.dir, "injections.jsonl")
        self.record = open(self.record_path, "w")
        self.t_start = 0.0
        self.violations: list[Violation] = []
        self.applied: dict[str, int] = {}
        self.kernel_hits: dict[str, int] = {}
        self.skipped: list[str] = []
        self.pending: list[Pending] = []
        self.recoveries: list[float] = []
        self.clients: list[tuple[str, int, int, float]] = []   # task, pid, received, deadline
        self.later: list[tuple[float, str, Callable[[], None]]] = []
        self.hogs: list[subprocess.Popen[bytes]] = []
        self.stopped: dict[str, float] = {}                   # task -> until
        self.seen_pids: set[int] = set()
        self.callers: dict[str, Caller] = {}
        self.load: list[Caller] = []
        self.checks: list[dict[str, Any]] = []
        self.kernel_bugs0 = 0
        self.shm0 = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        self.rows: dict[str, dict[str, Any]] = {}
        self.rows0: dict[str, dict[str, Any]] = {}

    # -- bookkeeping ------------------------------------------------------------
    def now(self) -> float:
        return time.time() - self.t_start

    def violate(self, invariant: str, message: str) -> None:
        if invariant in INVARIANTS and not self.plan.invariants.get(invariant, True):
            return
        self.violations.append(Violation(round(self.now(), 3), time.time(), invariant, message))
        self._write({"violation": invariant, "message": message})

    def _write(self, obj: dict[str, Any]) -> None:
        self.record.write(json.dumps({"t": round(self.now(), 4), "ts": time.time(), **obj},
                                     default=str) + "\n")
        self.record.flush()

    def _count(self, kind: str) -> None:
        self.applied[kind] = self.applied.get(kind, 0) + 1

    # -- injecting ----------------------------------------------------------------
    def inject(self, inj: Injection) -> None:
        entry: dict[str, Any] = {"seq": inj.seq, "at": round(inj.at, 4), "kind": inj.kind,
                                 "target": inj.target, "params": inj.params}
        try:
            entry["result"] = getattr(self, "_do_" + inj.kind, self._do_ipc)(inj)
        except (Unsupported, errors.L4Error, control.NotRunning, KeyError, OSError) as e:
            entry["skipped"] = f"{type(e).__name__}: {e}"
            self.skipped.append(f"#{inj.seq} {inj.kind} {inj.target}: {e}")
        self._write(entry)

    def _row(self, task: str) -> dict[str, Any]:
        return self.sys.ps()[task]

    def _expect_back(self, task: str, kind: str, pid: int) -> None:
        spec = self.specs[task]
        if spec.restart == "never":
            return
        for old in [p for p in self.pending if p.task == task]:
            self.pending.remove(old)        # a newer fault supersedes it
            self._write({"note": f"{task}: {old.kind} superseded by a {kind} before it recovered"})
        self.pending.append(Pending(task, kind, time.time(), pid, list(spec.provides),
                                    deadline=time.time() + self.plan.recovery))

    def _do_kill(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        if inj.target in self.stopped:
            self.sys.kill(inj.target, "SIGCONT")
            self.stopped.pop(inj.target, None)
        a = self.sys.kill(inj.target, "SIGKILL")
        if not a.get("ok"):
            raise Unsupported(a.get("error"))
        self.seen_pids.add(row["pid"])
        self._expect_back(inj.target, "kill", row["pid"])
        self._count("kill")
        return {"pid": row["pid"]}

    def _do_crash(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        res = self._crash(inj.target, True)
        self.seen_pids.add(row["pid"])
        self._expect_back(inj.target, "crash", row["pid"])
        if not res.get("crashed"):
            # Not in a system call right now (a server between two requests): try again
            # shortly; its next send is armed to crash meanwhile (a client's next call).
            self._crash_retry(inj.target, res.get("rule"), time.time() + 1.0)
        self._count("crash")
        return {"pid": row["pid"], **res}

    def _crash(self, task: str, next_send: bool) -> dict[str, Any]:
        if isinstance(self.sys, Attached):
            return self.sys.fault("crash", {"next_send": next_send}, task=task)
        return self.sys.fault("crash", {"task_id": self.sys.task_id(task), "next_send": next_send})

    def _crash_retry(self, task: str, rule: int | None, until: float) -> None:
        def again() -> None:
            try:
                res = self._crash(task, False)
            except (errors.L4Error, Unsupported, KeyError):
                return          # it died already (its armed send crashed it)
            if res.get("crashed"):
                for pd in self.pending:
                    if pd.task == task:
                        pd.t0 = time.time()
                if rule is not None:
                    self._disarm([rule])
            elif time.time() < until:
                self._crash_retry(task, rule, until)
        self.later.append((time.time() + 0.01, f"crash {task}", again))

    def _do_stop(self, inj: Injection) -> Any:
        row = self._row(inj.target)
        if row["state"] != "running" or inj.target in self.stopped:
            raise Unsupported(f"task {inj.target} is {row['state']} or stopped already")
        self.sys.kill(inj.target, "SIGSTOP")
        until = time.time() + inj.params["for"]
        self.stopped[inj.target] = until
        self.later.append((until, f"cont {inj.target}", lambda: self._cont(inj.target, row["pid"])))
        self._count("stop")
        return {"pid": row["pid"]}

    def _cont(self, task: str, pid: int) -> None:
        if self.stopped.pop(task, None) is not None:
            try:
                self.sys.kill(task, "SIGCONT")
            except control.NotRunning:
                pass
            self._write({"kind": "cont", "target": task, "pid": pid, "auto": True})

    def _do_cont(self, inj: Injection) -> Any:
        self.sys.kill(inj.target, "SIGCONT")
        self.stopped.pop(inj.target, None)
        self._count("cont")
        return {}

    def _hog(self, inj: Injection, code: str) -> Any:
        row = self._row(inj.target)
        if not row["pid"]:
            raise Unsupported(f"task {inj.target} is {row['state']}")
        try:
            cpus = psutil.Process(row["pid"]).cpu_affinity()
        except (psutil.Error, AttributeError):
            cpus = None
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if cpus:
            try:
                psutil.Process(p.pid).cpu_affinity(cpus[:1])
            except psutil.Error:
                pass
        self.hogs.append(p)
        self._count(inj.kind)
        return {"hog_pid": p.pid, "beside": row["pid"], "cpus": cpus[:1] if cpus else None}

    def _do_cpu_hog(self, inj: Injection) -> Any:
        return self._hog(inj, _HOG_PRELUDE + f"end = time.monotonic() + {inj.params['for']!r}\n"
                              "while time.monotonic() < end:\n    pass\n")

    def _do_mem_hog(self, inj: Injection) -> Any:
        return self._hog(inj, _HOG_PRELUDE + f"b = bytearray({int(inj.params['mib'])} << 20)\n"
                              "for i in range(0, len(b), 4096):\n    b[i] = 1\n"
                              f"time.sleep({inj.params['for']!r})\n")

    def _do_ipc(self, inj: Injection) -> Any:
        p = inj.params
        spec = {"kind": inj.kind, "probability": p["probability"], "count": p["count"],
                "seed": p["seed"]}
        if "delay_ms" in p:
            spec["delay_ms"] = p["delay_ms"]
        if "bytes" in p:
            spec["bytes"] = p["bytes"]
        where, _, name = inj.target.partition(":")
        if isinstance(self.sys, Attached):
            rules = self.sys.fault("add", spec, service=name) if where == "service" else \
                [self.sys.fault("add", {**spec, "gate": int(name)})]
        else:
            gates = self.sys.gate_ids.get(name, []) if where == "service" else [int(name)]
            if not gates:
                raise Unsupported(f"no gate for {inj.target}")
            rules = [self.sys.fault("add", {**spec, "gate": g}) for g in gates]
        ids = [r["rule"] for r in rules]
        self.later.append((time.time() + p["for"], f"disarm {ids}", lambda: self._disarm(ids)))
        self._count("rules_armed")
        return {"rules": ids, "gates": [r["gate"] for r in rules]}

    def _disarm(self, ids: list[int]) -> None:
        for rid in ids:
            try:
                self.sys.fault("remove", {"rule": rid})
            except (errors.L4Error, Unsupported, control.NotRunning):
                pass

    def _do_device(self, inj: Injection) -> Any:
        path = os.path.join(self.sys.run_dir, "hal.ctl")
        if not os.path.exists(path):
            raise Unsupported("no HAL runs in this system (no hal.ctl)")
        device = inj.target.partition(":")[2]
        answer = _hal_request(path, {"op": "faults", "device": device,
                                     "knobs": inj.params["knobs"]})
        reset = inj.params.get("reset") or {k: (False if isinstance(v, bool) else 0)
                                             for k, v in inj.params["knobs"].items()}
        self.later.append((time.time() + inj.params["for"], f"reset {device}",
                           lambda: _hal_request(path, {"op": "faults", "device": device,
                                                       "knobs": reset})))
        self._count("device")
        return answer

    # -- watching -------------------------------------------------------------------
    def _drain_kernel_log(self) -> None:
        if isinstance(self.sys, Attached):
            return
        try:
            while True:
                log = self.sys.fault("log", {"max": 1000})
                for e in log:
                    self.kernel_hits[e["kind"]] = self.kernel_hits.get(e["kind"], 0) + 1
                    self._write({"source": "kernel", **e})
                if len(log) < 1000:
                    return
        except errors.L4Error:
            return

    def _kernel_up(self) -> bool:
        try:
            p = psutil.Process(self.sys.kernel_pid)
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _watch(self) -> None:
        now = time.time()
        try:
            self.rows = self.sys.ps()
        except control.NotRunning as e:
            self.violate("kernel_up", f"the launcher stopped answering: {e}")
            return
        for r in self.rows.values():
            if r["pid"]:
                self.seen_pids.add(r["pid"])
        for pd in list(self.pending):
            self._watch_pending(pd, now)
        for c in list(self.clients):
            self._watch_client(c, now)
        for name, caller in list(self.callers.items()) + [(f"load{i}", c) for i, c in
                                                          enumerate(self.load)]:
            with caller.lock:
                hung, caller.hung = caller.hung, []
            for start, secs in hung:
                self.violate("call_timeouts", f"a call to {name} took {secs:.2f}s, past its "
                                              f"timeouts ({caller.bound:.2f}s with slack)")

    def _watch_pending(self, pd: Pending, now: float) -> None:
        row = self.rows.get(pd.task, {})
        if not pd.dead_at and not psutil.pid_exists(pd.old_pid) or \
                (not pd.dead_at and _zombie(pd.old_pid)):
            pd.dead_at = now
        if not pd.running_at and row.get("state") == "running" and row.get("pid") \
                and row["pid"] != pd.old_pid:
            pd.running_at = now
        done_at = None
        if pd.running_at:
            probes = [self.callers[s] for s in pd.services if s in self.callers]
            if not probes:
                done_at = pd.running_at
            else:
                ends = [c.first_ok_after(pd.dead_at or pd.running_at) for c in probes]
                if all(e is not None for e in ends):
                    done_at = max(e for e in ends if e is not None)
        if done_at is not None:
            self.pending.remove(pd)
            self.recoveries.append(max(0.0, done_at - pd.t0) * 1000)
            self._write({"recovered": pd.task, "after_ms": round((done_at - pd.t0) * 1000, 1)})
            for t in self.specs.values():
                if set(pd.services) & t.services_used():
                    crow = self.rows.get(t.name, {})
                    if crow.get("state") == "running" and crow.get("pid"):
                        got = (crow.get("ipc") or {}).get("received", 0)
                        self.clients.append((t.name, crow["pid"], got,
                                             now + self.plan.client_recovery))
            return
        if now > pd.deadline:
            self.pending.remove(pd)
            if not pd.dead_at and pd.kind == "crash" and row.get("pid") == pd.old_pid:
                self._write({"note": f"{pd.task} survived the crash (it caught the error "
                                     f"or made no system call)"})
                return
            last = row.get("last_exit", "")
            if "budget" in last and self.plan.invariants.get("allow_budget_exhaustion"):
                return
            self.violate("restart", f"{pd.task} not running and answering again within "
                                    f"{self.plan.recovery:g}s of its {pd.kind} "
                                    f"(state {row.get('state')}: {last})")

    def _watch_client(self, c: tuple[str, int, int, float], now: float) -> None:
        task, pid, got, deadline = c
        row = self.rows.get(task, {})
        progressed = row.get("pid") and (row["pid"] != pid or
                                         (row.get("ipc") or {}).get("received", 0) > got)
        if progressed:
            self.clients.remove(c)
        elif now > deadline:
            self.clients.remove(c)
            if task in self.stopped or row.get("state") != "running":
                return
            self.violate("clients_recover", f"client {task} got no answer within "
                                            f"{self.plan.client_recovery:g}s of its server's "
                                            f"restart")

    # -- user checks ------------------------------------------------------------------------
    def _start_checks(self) -> None:
        for c in self.plan.checks:
            self.checks.append({"check": c, "next": time.time() + c.every, "proc": None,
                                "started": 0.0, "mark": None, "since": time.time()})

    def _run_checks(self, now: float) -> None:
        for st in self.checks:
            c: Check = st["check"]
            if c.what == "command":
                p = st["proc"]
                if p is not None:
                    if p.poll() is None and now - st["started"] > c.timeout:
                        p.kill()
                        p.wait()
                        self.violate("check", f"command {c.target!r} ran past {c.timeout:g}s")
                        st["proc"] = None
                    elif p.poll() is not None:
                        if p.returncode != 0:
                            self.violate("check", f"command {c.target!r} exited with "
                                                  f"{p.returncode}")
                        st["proc"] = None
                if st["proc"] is None and now >= st["next"]:
                    st["proc"] = subprocess.Popen(c.target, shell=True, stdin=subprocess.DEVNULL,
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
                    st["started"], st["next"] = now, now + c.every
            elif c.what == "task":
                row = self.rows.get(c.target, {})
                ipc = row.get("ipc") or {}
                mark = (row.get("pid"), ipc.get("sent", 0) + ipc.get("received", 0))
                if mark != st["mark"] or c.target in self.stopped:
                    st["mark"], st["since"] = mark, now
                elif now - st["since"] > c.within:
                    self.violate("check", f"task {c.target} made no IPC progress for "
                                          f"{c.within:g}s")
                    st["since"] = now
            elif c.what == "service" and c.target in self.callers:
                last = max(self.callers[c.target].last_ok(), self.t_start)
                if now - last > c.within and now - st["since"] > c.within:
                    self.violate("check", f"service {c.target} did not answer for "
                                          f"{c.within:g}s")
                    st["since"] = now

    # -- the run ------------------------------------------------------------------------
    def _start_callers(self) -> None:
        if isinstance(self.sys, Attached):
            return
        slack = self.plan.call_slack
        for svc, gate in self.sys.probe_gates.items():
            c = Caller(self.sys.thread(), gate, 1000, slack, 0.02, f"probe-{svc}")
            self.callers[svc] = c
            c.start()
        if self.plan.load:
            svc = self.plan.load["service"]
            ms = int(seconds(self.plan.load.get("timeout", "500ms"), "load.timeout") * 1000)
            for i in range(int(self.plan.load.get("threads", 2))):
                c = Caller(self.sys.thread(), self.sys.client_gates[svc], ms, slack,
                           float(self.plan.load.get("pause", 0.0)), f"load-{svc}-{i}")
                self.load.append(c)
                c.start()

    def run(self) -> dict[str, Any]:
        self.t_start = time.time()
        self._write({"start": self.plan.name, "seed": self.seed, "duration": self.duration,
                     "scheduled": len(self.injections)})
        info = self.sys.kernel_info()
        self.kernel_bugs0 = info["stats"]["kernel_bugs"] if info else 0
        self.rows0 = self.rows = self.sys.ps()
        self._start_callers()
        self._start_checks()
        queue = list(self.injections)
        end = self.t_start + self.duration
        last_drain = 0.0
        last_watch = 0.0
        try:
            while True:
                now = time.time()
                if not self._kernel_up():
                    self.violate("kernel_up", "the kernel process is gone")
                    break
                while queue and self.t_start + queue[0].at <= now:
                    self.inject(queue.pop(0))
                for item in [x for x in self.later if x[0] <= now]:
                    self.later.remove(item)
                    item[2]()
                if now - last_watch >= 0.05:
                    last_watch = now
                    self._watch()
                    self._run_checks(now)
                if now - last_drain >= 0.5:
                    last_drain = now
                    self._drain_kernel_log()
                if self.progress is not None:
                    self.progress(min(now, end) - self.t_start, self.duration, self.counts())
                if now >= end and not self.later and not self.pending and not self.clients:
                    break
                if now >= end + self.plan.settle + self.plan.client_recovery + 5:
                    break           # pending expectations have deadlines; this is a backstop
                time.sleep(0.01)
        finally:
            self._cleanup()
        return self.report()

    def counts(self) -> dict[str, int]:
        out = {k: v for k, v in self.applied.items() if k not in ("crash", "rules_armed")}
        for k, v in self.kernel_hits.items():
            out[k] = out.get(k, 0) + v
        return out

    def _cleanup(self) -> None:
        for task in list(self.stopped):
            self._cont(task, 0)
        for _, what, fn in sorted(self.later, key=lambda x: x[0]):
            try:
                fn()
            except Exception:
                pass
        self.later = []
        for c in list(self.callers.values()) + self.load:
            c.stop.set()
        for c in list(self.callers.values()) + self.load:
            c.join(5)
        try:
            if not isinstance(self.sys, Attached):
                self.sys.fault("remove", {})
        except errors.L4Error:
            pass
        self._drain_kernel_log()
        info = self.sys.kernel_info()
        if info is not None and info["stats"]["kernel_bugs"] > self.kernel_bugs0:
            self.violate("kernel_up", f"the kernel counted "
                                      f"{info['stats']['kernel_bugs'] - self.kernel_bugs0} "
                                      f"internal errors (see logs/kernel.log)")
        for p in self.hogs:
            if p.poll() is None:
                p.kill()
            p.wait()
        try:
            self.rows = self.sys.ps()
        except control.NotRunning:
            pass

    def finish(self) -> None:
        """Shut a booted system down and check that nothing leaked."""
        pids = set(self.seen_pids) | {self.sys.kernel_pid}
        self.sys.close()
        deadline = time.time() + 10
        booted = not isinstance(self.sys, Attached)
        if not booted:
            live = {r["pid"] for r in self.rows.values() if r.get("pid")}
            pids -= live | {self.sys.kernel_pid}
        while time.time() < deadline and [p for p in pids if psutil.pid_exists(p)
                                           and not _zombie(p)]:
            time.sleep(0.05)
        left = [p for p in pids if psutil.pid_exists(p) and not _zombie(p)]
        if left:
            self.violate("no_leaks", f"processes left behind: {sorted(left)}")
        hogs = [p.pid for p in self.hogs if p.poll() is None]
        if hogs:
            self.violate("no_leaks", f"hog processes left behind: {hogs}")
        if os.path.isdir("/dev/shm"):
            new = {f for f in set(os.listdir("/dev/shm")) - self.shm0
                   if "l4" in f.lower() or any(str(p) in f for p in pids)}
            if new:
                self.violate("no_leaks", f"left in /dev/shm: {sorted(new)}")
        if booted:
            socks = [f for f in os.listdir(self.sys.run_dir) if f.endswith(".sock")]
            if socks:
                self.violate("no_leaks", f"socket files left in {self.sys.run_dir}: {socks}")
        self.record.close()

    # -- the report ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        restarts = {n: r["restarts"] - self.rows0.get(n, {}).get("restarts", 0)
                    for n, r in self.rows.items()}
        counts = self.counts()
        return {
            "plan": self.plan.name, "seed": self.seed, "duration_s": self.duration,
            "run_dir": self.sys.run_dir, "injections_file": self.record_path,
            "scheduled": len(self.injections),
            "faults": dict(sorted(counts.items())),
            "faults_injected": sum(counts.values()),
            "rules_armed": self.applied.get("rules_armed", 0),
            "skipped": self.skipped,
            "violations": [v.__dict__ for v in self.violations],
            "kernel_crashes": sum(v.invariant == "kernel_up" for v in self.violations),
            "restarts": restarts,
            "recoveries": len(self.recoveries),
            "recovery_ms_p50": round(statistics.median(self.recoveries), 1) if self.recoveries else None,
            "recovery_ms_p99": round(pct(self.recoveries, 99), 1) if self.recoveries else None,
            "recovery_ms_max": round(max(self.recoveries), 1) if self.recoveries else None,
            "calls": {n: c.calls for n, c in self.callers.items()} |
                     {f"load{i}": c.calls for i, c in enumerate(self.load)},
            "verdict": "fail" if self.violations else "pass",
        }


_HOG_PRELUDE = ("import ctypes, signal, time\n"
                "try:\n    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL)\n"
                "except Exception:\n    pass\n")


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _hal_request(path: str, req: dict[str, Any]) -> Any:
    import msgpack
    import zmq
    s = zmq.Context.instance().socket(zmq.REQ)
    s.linger = 0
    try:
        s.connect("ipc://" + path)
        s.send(msgpack.packb(req))
        if not s.poll(2000):
            raise Unsupported("the HAL's control socket does not answer")
        answer = msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close(0)
    if "error" in answer:
        raise Unsupported(f"HAL: {answer['error']}")
    return answer.get("ok")


def run_plan(plan: Plan, *, image_path: str | None = None, run_dir: str | None = None,
             seed: int | None = None, duration: float | None = None,
             budgets: tuple[int, float] | None = None,
             progress: Callable[[float, float, dict[str, int]], None] | None = None) -> dict[str, Any]:
    """Boot `image_path` (in `run_dir`, or a temporary one) or attach to `run_dir`; run the
    plan; shut down what we booted; answer the report."""
    import tempfile

    from .image import load_image
    tmp = None
    if image_path is not None:
        image = load_image(image_path)
        if run_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="l4chaos-")
            run_dir = tmp.name
        system: Any = Booted(image, run_dir, budgets)
    elif run_dir is not None:
        system = Attached(run_dir)
    else:
        raise ValueError("give an image to boot or the run directory of a running system")
    names = ({t.name for t in system.image.tasks},
             {s for t in system.image.tasks for s in t.provides})
    problems = _check_scope(plan, *names)
    if problems:
        system.close() if isinstance(system, Attached) else _close_quietly(system)
        raise PlanError(problems)
    run = ChaosRun(plan, system, seed=seed, duration=duration, progress=progress)
    try:
        run.run()
    finally:
        run.finish()
    report = run.report()
    if tmp is not None:
        report["injections_file"] = None      # the temporary run directory is gone
        tmp.cleanup()
    return report


def _close_quietly(system: Any) -> None:
    try:
        system.close()
    except Exception:
        pass
