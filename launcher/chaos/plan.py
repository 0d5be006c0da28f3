"""Chaos plans: the TOML format (docs/CHAOS.md), parsed and checked before anything runs.

Contract: `load_plan(path)` / `parse_plan(data, path)` answer a `Plan` or raise `PlanError`
with every mistake found, one "FILE: KEY: REASON" line each — the whole plan is read before
the error is raised, so one run names them all. With `image_names` (tasks, services) the
scopes are checked against the image too; `check_scope` does that part alone (the runner
calls it once it knows the system it attacks). A `Plan` that comes back is complete: every
duration is seconds, every fault kind is known, hogs are within their bounds.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

TASK_KINDS = ("kill", "crash", "stop", "cont", "cpu_hog", "mem_hog")
IPC_KINDS = ("drop", "delay", "duplicate", "reorder", "corrupt", "timeout")
DEVICE_KINDS = ("device",)
# ORe's own fault knobs (servers/ore/switch.py `Faults`) through its admin op `faults`.
SWITCH_KINDS = ("switch",)
# Kernel rules on the Linux system calls forwarded to L4Linux personalities (docs/CHAOS.md
# "Linux system calls"): every personality's processes, `nr` limits the calls.
LINUX_KINDS = ("linux_delay", "linux_error")
KINDS = TASK_KINDS + IPC_KINDS + DEVICE_KINDS + LINUX_KINDS + SWITCH_KINDS
MAX_HOG_S = 60.0
MAX_HOG_MIB = 1024
INVARIANTS = {"kernel_up": True, "restart": True, "call_timeouts": True,
              "clients_recover": True, "no_leaks": True, "allow_budget_exhaustion": False}
TABLES = ("chaos", "fault", "schedule", "invariants", "check", "load", "history")
FAULT_KEYS = {"kind", "tasks", "task", "services", "service", "gates", "devices", "device",
              "weight", "probability", "count", "delay", "bytes", "for", "mib", "knobs", "reset",
              "at", "errno", "nr"}


class PlanError(Exception):
    """Every mistake found in a plan, one "FILE: KEY: REASON" line each (`problems`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    errno: int = 4                  # linux_error: the answer is -errno (EINTR)
    nrs: list[int] = field(default_factory=list)         # linux_*: the calls (none: any)
    duration: float = 1.0           # stop, hogs, IPC rules, device knobs: how long
    mib: int = 64                   # mem_hog
    knobs: dict[str, Any] = field(default_factory=dict)   # device, switch
    reset: dict[str, Any] = field(default_factory=dict)   # their knobs after `duration`
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
    history: dict[str, Any] = field(default_factory=dict)   # {clients: [task], server: task}


_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min)?\s*$")


def seconds(v: Any, where: str) -> float:
    """A duration (a number of seconds, or "500ms", "20s", "2m") in seconds; ValueError
    naming `where` otherwise."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    m = _DUR.match(v) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"{where}: {v!r} is not a duration (e.g. 20, \"20s\", \"500ms\", \"2m\")")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0}[m.group(2)]
    return float(m.group(1)) * scale


# ---------------------------------------------------------------------------
# One fault table ([[fault]] or [[schedule]])

def _fault(d: Any, where: str, problems: list[str]) -> FaultSpec | None:
    """The fault table `d`, or None with its problems appended."""
    if not isinstance(d, dict):
        problems.append(f"{where}: a fault is a table")
        return None
    kind = d.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        return None
    f = FaultSpec(kind, where=where.rpartition(": ")[2])
    problems += [f"{where}.{key}: unknown key" for key in d if key not in FAULT_KEYS]
    try:
        _fault_fields(f, d, where)
    except (ValueError, TypeError) as e:
        problems.append(str(e) if str(e).startswith(where) else f"{where}: {e}")
        return None
    if kind in ("cpu_hog", "mem_hog") and not (f.duration <= MAX_HOG_S and f.mib <= MAX_HOG_MIB):
        problems.append(f"{where}: hogs are bounded to {MAX_HOG_S:g}s and {MAX_HOG_MIB} MiB")
    if kind == "device" and not f.knobs:
        problems.append(f"{where}.knobs: a device fault sets HAL knobs (e.g. {{error_rate = 0.1}})")
    if kind in SWITCH_KINDS:
        problems += _switch_problems(f, where)
    if kind in LINUX_KINDS and (f.services or f.gates or f.devices):
        problems.append(f"{where}: Linux faults are scoped by personality tasks (`tasks`; "
                        "none: every personality) and `nr`, not services, gates or devices")
    if kind in IPC_KINDS and f.tasks and not f.services and not f.gates:
        problems.append(f"{where}: IPC faults are scoped by services or gates, not tasks")
    return f


def _switch_problems(f: FaultSpec, where: str) -> list[str]:
    """A switch fault: one or more ORe services, knobs (and reset) as ORe checks them."""
    from servers.ore.switch import RATE_KNOBS, KnobError, check_knobs
    out = []
    if not f.services or f.tasks or f.gates or f.devices:
        out.append(f"{where}: a switch fault is scoped by `service` (the ORe service, e.g. "
                   "service = \"ore\") and the knob `ports`, not tasks, gates or devices")
    for key, knobs in (("knobs", f.knobs), ("reset", f.reset)):
        try:
            good = check_knobs(knobs)
        except KnobError as e:
            out.append(f"{where}.{key}: {e}")
            continue
        if "clear" in good:
            out.append(f"{where}.{key}.clear: the counts are the run's evidence; not cleared "
                       "by a plan")
        if key == "knobs" and not any(good.get(k) for k in RATE_KNOBS):
            out.append(f"{where}.knobs: a switch fault sets a rate > 0 of "
                       f"{', '.join(RATE_KNOBS)} (e.g. {{drop = 0.03, corrupt = 0.02}})")
    return out


def _fault_fields(f: FaultSpec, d: dict[str, Any], where: str) -> None:
    """Fill `f` from `d`; the first bad value raises ValueError/TypeError."""
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
    f.errno = int(d.get("errno", 4))
    if not 1 <= f.errno <= 4095:
        raise ValueError(f"{where}.errno: must be 1..4095")
    nrs = d.get("nr", [])
    f.nrs = [nrs] if isinstance(nrs, int) else nrs
    if not (isinstance(f.nrs, list) and all(type(n) is int and 0 <= n < 1024 for n in f.nrs)):
        raise ValueError(f"{where}.nr: a system-call number 0..1023 or a list of them")
    f.duration = seconds(d.get("for", 1.0), f"{where}.for")
    f.mib = int(d.get("mib", 64))
    f.knobs, f.reset = dict(d.get("knobs", {})), dict(d.get("reset", {}))


# ---------------------------------------------------------------------------
# The whole plan

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
    """Check the plan `data` (read from `path`, which names it in messages)."""
    problems: list[str] = []
    head = data.get("chaos", {})
    plan = Plan(path, str(head.get("name", os.path.splitext(os.path.basename(path))[0])))
    problems += [f"{path}: [{key}]: unknown table" for key in data if key not in TABLES]
    _parse_head(plan, head, problems)
    _parse_faults(plan, data, problems)
    _parse_invariants(plan, data.get("invariants", {}), problems)
    _parse_checks(plan, data.get("check", []), problems)
    if "load" in data:
        plan.load = dict(data["load"])
        if not isinstance(plan.load.get("service"), str):
            problems.append(f"{path}: load.service: the service the load threads call")
    if "history" in data:
        _parse_history(plan, data["history"], problems)
    if plan.rate > 0 and not plan.faults:
        problems.append(f"{path}: chaos.rate needs [[fault]] entries to draw from")
    if not plan.faults and not plan.at:
        problems.append(f"{path}: no [[fault]] and no [[schedule]]: nothing to inject")
    if image_names is not None:
        problems += check_scope(plan, *image_names)
    if problems:
        raise PlanError(problems)
    return plan


def _parse_head(plan: Plan, head: dict[str, Any], problems: list[str]) -> None:
    """The [chaos] table; stops at its first bad value."""
    path = plan.path
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


def _parse_faults(plan: Plan, data: dict[str, Any], problems: list[str]) -> None:
    """[[fault]] (drawn at the rate) and [[schedule]] (at fixed times)."""
    for i, d in enumerate(data.get("fault", [])):
        f = _fault(d, f"{plan.path}: fault[{i}]", problems)
        if f is not None:
            plan.faults.append(f)
    for i, d in enumerate(data.get("schedule", [])):
        where = f"{plan.path}: schedule[{i}]"
        f = _fault(d, where, problems)
        try:
            at = seconds(d.get("at"), f"{where}.at") if isinstance(d, dict) else 0.0
        except ValueError as e:
            problems.append(str(e))
            continue
        if f is not None:
            plan.at.append((at, f))


def _parse_invariants(plan: Plan, table: dict[str, Any], problems: list[str]) -> None:
    for key, value in table.items():
        if key not in INVARIANTS or not isinstance(value, bool):
            problems.append(f"{plan.path}: invariants.{key}: unknown invariant or not true/false "
                            f"(known: {', '.join(INVARIANTS)})")
        else:
            plan.invariants[key] = value


def _parse_checks(plan: Plan, tables: list[Any], problems: list[str]) -> None:
    for i, d in enumerate(tables):
        where = f"{plan.path}: check[{i}]"
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


def _parse_history(plan: Plan, table: Any, problems: list[str]) -> None:
    """[history]: the workload tasks whose recorded histories the run checks at the end
    (launcher/chaos/history.py), and the ledger task whose log it reads."""
    where = f"{plan.path}: history"
    if not isinstance(table, dict):
        problems.append(f"{where}: a table {{clients = [task, ...], server = task}}")
        return
    problems += [f"{where}.{key}: unknown key" for key in table if key not in ("clients", "server")]
    clients, server = table.get("clients"), table.get("server")
    if not (isinstance(clients, list) and clients and all(isinstance(c, str) for c in clients)):
        problems.append(f"{where}.clients: a non-empty list of task names")
    elif server is not None and not isinstance(server, str):
        problems.append(f"{where}.server: a task name")
    else:
        plan.history = {"clients": list(clients), "server": server}


def check_scope(plan: Plan, tasks: set[str], services: set[str]) -> list[str]:
    """The plan's scopes against an image's task and service names: the problems."""
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
    for t in plan.history.get("clients", []) + [plan.history.get("server")]:
        if t is not None and t not in tasks:
            out.append(f"{plan.path}: history: no task {t!r} in the image")
    if plan.load and plan.load.get("service") not in services:
        out.append(f"{plan.path}: load.service: no service {plan.load.get('service')!r}")
    return out
