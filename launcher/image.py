"""System images: the TOML format, parsed and validated before anything starts.

An image names the system and lists its tasks. Each task says what it runs (a Python
`MODULE:FUNCTION` started by `python -m kernel.user.task`), its arguments, environment, priority,
quotas and restart policy, which services it *provides*, and which capabilities it gets, by
local name, to services other tasks provide (optionally with reduced rights and a label the
server sees). See `EXAMPLE` below.

Contract: `load_image()` either returns a fully checked `Image` or raises `ImageError`
carrying *every* mistake found, each as "FILE: KEY: REASON" (unknown key or service,
duplicate name, cycle in start order, missing module, bad size, bad policy...). Nothing in
this module starts a process or imports task code (modules are found with `find_spec`).
`check_snippet()` validates an `attach` snippet against the services already running.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any

from kernel.abi import Rights

POLICIES = ("never", "on-failure", "always")
SYSTEM_KEYS = {"name", "ram", "tcp", "uids", "kernel_cpu", "kernel_rt_port"}
TASK_KEYS = {"name", "run", "args", "env", "priority", "quota", "memory", "restart",
             "restart_budget", "restart_backoff", "restart_dependents", "provides", "caps", "depends_on",
             "devices", "remote", "network", "net"}
CAP_KEYS = {"service", "rights", "label"}
RESERVED_CAP_NAMES = {"launcher"}          # every task gets the launcher's name service
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
TCP_RE = re.compile(r"^[A-Za-z0-9_.*-]+:\d{1,5}$")
UIDS_RE = re.compile(r"^(\d+)\s*\.\.\s*(\d+)$")
DEFAULT_UIDS = (61000, 61999)              # tasks' uids (launcher/sandbox.py), [system] uids
BUDGET_RE = re.compile(r"^(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s$")
RIGHT_NAMES = {"invoke": Rights.INVOKE, "write": Rights.WRITE, "grant": Rights.GRANT,
               "delete": Rights.DELETE, "all": Rights.ALL}
DEFAULT_BUDGET = (5, 10.0)                 # at most 5 restarts in 10 s

EXAMPLE = '''
[system]
name = "minimal"
ram = "64M"

[[task]]
name = "hello"
run = "servers.hello.server:serve"
args = ["hello"]
provides = ["hello"]
restart = "on-failure"
restart_budget = "5/10s"

[[task]]
name = "client"
run = "servers.hello.client:run"
args = ["world", "500"]
restart = "on-failure"
[task.caps]
hello = { service = "hello", rights = "invoke", label = 1 }
'''


class ImageError(Exception):
    """Every mistake found in an image, one "FILE: KEY: REASON" line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CapSpec:
    local: str          # the name the task finds it under (l4.caps[local])
    service: str
    rights: int = int(Rights.INVOKE | Rights.GRANT)
    label: int = 0      # the label the server sees on calls through this capability


@dataclass
class TaskSpec:
    name: str
    run: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 100
    quota: int = 256
    memory: int | None = None
    restart: str = "on-failure"
    budget: tuple[int, float] = DEFAULT_BUDGET
    backoff: tuple[float, float] | None = None     # (first, max) seconds; None: off
    restart_dependents: bool = False
    provides: list[str] = field(default_factory=list)
    caps: list[CapSpec] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)   # io policy (launcher/devices.py)
    module_path: list[str] = field(default_factory=list)  # where else its module is found
    remote: bool = False          # runs on another machine, over the kernel's tcp:// port
    network: bool = False         # may open TCP/UDP sockets (launcher/sandbox.py)
    net: dict[str, Any] | None = None   # an ORe session: { switch, ip or dhcp, ... } (launcher/net.py)

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]

    def services_used(self) -> set[str]:
        return {c.service for c in self.caps}


@dataclass
class Image:
    name: str
    path: str
    ram: int | None
    tasks: list[TaskSpec]
    devices: list[Any] = field(default_factory=list)   # launcher.devices.DeviceSpec
    memory: Any = None                                  # launcher.memory.MemorySpec
    tcp: str | None = None        # HOST:PORT the kernel also listens on (remote tasks)
    uids: tuple[int, int] = DEFAULT_UIDS    # the range tasks' uids and gids come from
    kernel_cpu: str | None = None  # the kernel's --cpu (auto, none or N); None: its default
    kernel_rt_port: bool = False   # the kernel's --rt-port (RUN_DIR/kernel-rt.sock)

    def task(self, name: str) -> TaskSpec | None:
        return next((t for t in self.tasks if t.name == name), None)

    def providers(self) -> dict[str, str]:
        return {svc: t.name for t in self.tasks for svc in t.provides}


def parse_size(v: Any) -> int:
    """64M, 512K, 1G, 4096 (bytes). Raises ValueError with the reason."""
    if isinstance(v, bool):
        raise ValueError(f"expected a size like \"64M\", got {v!r}")
    if isinstance(v, int):
        n, unit = v, "b"
    elif isinstance(v, str) and SIZE_RE.match(v.strip()):
        m = SIZE_RE.match(v.strip())
        assert m is not None
        n, unit = int(m.group(1)), (m.group(2) or "b").lower()
    else:
        raise ValueError(f"expected a size like \"64M\", \"512K\" or a byte count, got {v!r}")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit[0], 1)
    size = n * mult
    if size <= 0 or size % 4096:
        raise ValueError(f"size {v!r} must be a positive multiple of 4 KiB")
    return size


def parse_rights(v: Any) -> int:
    """"invoke", "invoke,grant", ["invoke", "grant"], "all"."""
    names = v if isinstance(v, list) else re.split(r"[,+| ]+", v) if isinstance(v, str) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected rights like \"invoke,grant\", got {v!r}")
    r = Rights.NONE
    for n in names:
        if n.lower() not in RIGHT_NAMES:
            raise ValueError(f"unknown right {n!r} (known: {', '.join(RIGHT_NAMES)})")
        r |= RIGHT_NAMES[n.lower()]
    return int(r)


def parse_budget(v: Any) -> tuple[int, float]:
    """"5/10s" or {max = 5, window = 10}: at most `max` restarts in `window` seconds."""
    if isinstance(v, str) and BUDGET_RE.match(v.strip()):
        m = BUDGET_RE.match(v.strip())
        assert m is not None
        n, t = int(m.group(1)), float(m.group(2))
    elif isinstance(v, dict) and set(v) == {"max", "window"} and \
            isinstance(v["max"], int) and isinstance(v["window"], (int, float)):
        n, t = v["max"], float(v["window"])
    else:
        raise ValueError(f"expected \"N/Ts\" (e.g. \"5/10s\") or {{max = N, window = T}}, got {v!r}")
    if n < 0 or t <= 0:
        raise ValueError(f"budget {v!r}: restarts must be ≥ 0 and the window > 0 s")
    return n, t


def parse_uids(v: Any) -> tuple[int, int]:
    """"61000..61999": the uids (and gids, the same numbers) tasks run under, one each."""
    m = UIDS_RE.match(v.strip()) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"expected \"FIRST..LAST\" (e.g. \"61000..61999\"), got {v!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 1000 <= lo <= hi <= 0x7FFFFFFF or 65534 in (lo, hi) or lo <= 65534 < hi:
        raise ValueError(f"uids {v!r}: need 1000 <= FIRST <= LAST < 2^31, leaving out root, "
                         f"the system uids (< 1000) and nobody (65534)")
    return lo, hi


DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")


def _seconds(text: str) -> float:
    m = DURATION_RE.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration like \"100ms\" or \"2s\"")
    return float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)


def parse_backoff(v: Any) -> tuple[float, float] | None:
    """"100ms..5s" (first delay .. longest delay) or "off"."""
    if v == "off" or v is False:
        return None
    if not isinstance(v, str) or v.count("..") != 1:
        raise ValueError(f"expected \"FIRST..MAX\" (e.g. \"100ms..5s\") or \"off\", got {v!r}")
    first, top = (_seconds(x) for x in v.split(".."))
    if not 0 < first <= top <= 3600:
        raise ValueError(f"backoff {v!r}: need 0 < first ≤ max ≤ 3600 s")
    return first, top


class _Checker:
    """Collects problems as "FILE: KEY: REASON" while building specs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def bad(self, key: str, reason: str) -> None:
        self.problems.append(f"{self.path}: {key}: {reason}")

    def typed(self, d: dict, key: str, where: str, kind: type | tuple, default: Any) -> Any:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.bad(f"{where}.{key}", f"expected {names}, got {type(v).__name__} {v!r}")
            return default
        return v

    def task(self, i: int, d: Any) -> TaskSpec | None:
        where = f"task[{i}]"
        if not isinstance(d, dict):
            self.bad(where, "each [[task]] must be a table")
            return None
        name = d.get("name")
        if isinstance(name, str) and NAME_RE.match(name):
            where = f"task[{i}] ({name})"
        else:
            self.bad(f"{where}.name", f"missing or invalid task name {name!r} "
                                      f"(letters, digits, _ . -; starting with a letter)")
            name = f"task{i}"
        for k in sorted(set(d) - TASK_KEYS):
            self.bad(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(TASK_KEYS))})")
        t = TaskSpec(name=name, run="")
        t.remote = self.typed(d, "remote", where, bool, False)
        t.network = self.typed(d, "network", where, bool, False)
        t.run = self._run(d, where, importable=not t.remote)   # a remote module lives there
        args = self.typed(d, "args", where, list, [])
        if not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
            self.bad(f"{where}.args", "arguments must be strings or numbers")
        t.args = [str(a) for a in args]
        env = self.typed(d, "env", where, dict, {})
        if not all(isinstance(v, str) for v in env.values()):
            self.bad(f"{where}.env", "environment values must be strings")
        t.env = {str(k): str(v) for k, v in env.items()}
        t.priority = self.typed(d, "priority", where, int, 100)
        if not 0 <= t.priority <= 255:
            self.bad(f"{where}.priority", f"{t.priority} is outside 0..255")
        t.quota = self.typed(d, "quota", where, int, 256)
        if not 8 <= t.quota <= 1_000_000:
            self.bad(f"{where}.quota", f"kernel-object quota {t.quota} is outside 8..1000000")
        if "memory" in d:                # a moe session with this quota (launcher/memory.py)
            from .memory import task_memory
            t.memory = task_memory(self, f"{where}.memory", d["memory"])
        if "net" in d:                   # an ORe session (launcher/net.py)
            from .net import task_net
            t.net = task_net(self, f"{where}.net", d["net"])
        self._policy(d, where, t)
        t.provides = self._names(d, "provides", where)
        t.depends_on = self._names(d, "depends_on", where)
        t.devices = self._names(d, "devices", where)
        t.caps = self._caps(d, where)
        return t

    def _run(self, d: dict, where: str, importable: bool = True) -> str:
        run = d.get("run")
        if not isinstance(run, str) or run.count(":") != 1 or not all(run.split(":")):
            self.bad(f"{where}.run", f"expected \"MODULE:FUNCTION\", got {run!r}")
            return ""
        if not importable:
            return run
        module = run.split(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            self.bad(f"{where}.run", f"missing module {module!r} (not importable from here)")
        return run

    def _policy(self, d: dict, where: str, t: TaskSpec) -> None:
        t.restart = self.typed(d, "restart", where, str, "on-failure")
        if t.restart not in POLICIES:
            self.bad(f"{where}.restart", f"unknown policy {t.restart!r} (known: {', '.join(POLICIES)})")
        if "restart_budget" in d:
            try:
                t.budget = parse_budget(d["restart_budget"])
            except ValueError as e:
                self.bad(f"{where}.restart_budget", str(e))
        if "restart_backoff" in d:
            try:
                t.backoff = parse_backoff(d["restart_backoff"])
            except ValueError as e:
                self.bad(f"{where}.restart_backoff", str(e))
        t.restart_dependents = self.typed(d, "restart_dependents", where, bool, False)

    def _names(self, d: dict, key: str, where: str) -> list[str]:
        v = self.typed(d, key, where, list, [])
        out = []
        for n in v:
            if not isinstance(n, str) or not NAME_RE.match(n):
                self.bad(f"{where}.{key}", f"invalid name {n!r}")
            elif n in out:
                self.bad(f"{where}.{key}", f"{n!r} is listed twice")
            else:
                out.append(n)
        return out

    def _caps(self, d: dict, where: str) -> list[CapSpec]:
        raw = self.typed(d, "caps", where, dict, {})
        out = []
        for local, spec in raw.items():
            key = f"{where}.caps.{local}"
            if not NAME_RE.match(local) or local in RESERVED_CAP_NAMES:
                self.bad(key, f"invalid or reserved local name {local!r}")
                continue
            if isinstance(spec, str):
                spec = {"service": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
                self.bad(key, "expected a service name or { service = \"...\", rights = \"...\", label = N }")
                continue
            for k in sorted(set(spec) - CAP_KEYS):
                self.bad(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(CAP_KEYS))})")
            cap = CapSpec(local, spec["service"])
            if "rights" in spec:
                try:
                    cap = CapSpec(local, cap.service, parse_rights(spec["rights"]), cap.label)
                except ValueError as e:
                    self.bad(f"{key}.rights", str(e))
            label = spec.get("label", 0)
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 2 ** 32:
                self.bad(f"{key}.label", f"label must be an integer 0..2^32-1, got {label!r}")
            else:
                cap = CapSpec(local, cap.service, cap.rights, label)
            out.append(cap)
        return out

    def wiring(self, tasks: list[TaskSpec], running: dict[str, str],
               running_tasks: set[str]) -> None:
        """Names unique, services known and provided once, start order acyclic."""
        names: dict[str, int] = {}
        providers = dict(running)
        for i, t in enumerate(tasks):
            if t.name in names or t.name in running_tasks:
                self.bad(f"task[{i}].name", f"duplicate task name {t.name!r}")
            names[t.name] = i
            for svc in t.provides:
                if svc in providers:
                    self.bad(f"task[{i}] ({t.name}).provides",
                             f"service {svc!r} is already provided by task {providers[svc]!r}")
                else:
                    providers[svc] = t.name
        for i, t in enumerate(tasks):
            where = f"task[{i}] ({t.name})"
            for c in t.caps:
                if c.service not in providers:
                    known = ", ".join(sorted(providers)) or "none"
                    self.bad(f"{where}.caps.{c.local}",
                             f"unknown service {c.service!r} (provided: {known})")
            for dep in t.depends_on:
                if dep not in names and dep not in running_tasks:
                    self.bad(f"{where}.depends_on", f"unknown task {dep!r}")
        self._cycles(tasks, providers, names)

    def _cycles(self, tasks: list[TaskSpec], providers: dict[str, str],
                names: dict[str, int]) -> None:
        deps: dict[str, set[str]] = {}
        for t in tasks:             # a duplicate name was reported already; keep the first
            deps.setdefault(t.name, start_deps(t, providers) & set(names))
        state: dict[str, int] = {}
        reported: set[frozenset[str]] = set()

        def visit(n: str, path: list[str]) -> None:
            state[n] = 1
            for m in sorted(deps.get(n, ())):
                if state.get(m) == 1:
                    cyc = path[path.index(m):] + [m] if m in path else [n, m]
                    if frozenset(cyc) not in reported:
                        reported.add(frozenset(cyc))
                        self.bad(f"task[{names[cyc[0]]}] ({cyc[0]})",
                                 "cycle in start order: " + " -> ".join(cyc))
                elif state.get(m) is None:
                    visit(m, path + [m])
            state[n] = 2

        for t in tasks:
            if t.name not in state:
                visit(t.name, [t.name])


def start_deps(t: TaskSpec, providers: dict[str, str]) -> set[str]:
    """The tasks that must run before `t`: explicit depends_on plus its services' providers."""
    out = set(t.depends_on)
    out |= {providers[s] for s in t.services_used() if s in providers and providers[s] != t.name}
    return out


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ImageError([f"{path}: -: no such file"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ImageError([f"{path}: -: not valid TOML: {e}"]) from None
    except OSError as e:
        raise ImageError([f"{path}: -: cannot read: {e.strerror}"]) from None


def _tasks(c: _Checker, data: dict, path: str) -> list[TaskSpec]:
    raw = data.get("task", [])
    if not isinstance(raw, list):
        c.bad("task", "tasks must be given as [[task]] tables")
        return []
    from .linux import section_tasks          # [linux]: the personality's task tables
    raw = raw + section_tasks(c, data, path)
    return [t for i, d in enumerate(raw) if (t := c.task(i, d)) is not None]


def parse_image(data: dict, path: str) -> Image:
    c = _Checker(path)
    for k in sorted(set(data) - {"system", "task", "device", "memory", "linux"}):
        c.bad(k, "unknown top-level key (known: system, task, device, memory, linux)")
    system = data.get("system", {})
    if not isinstance(system, dict):
        c.bad("system", "[system] must be a table")
        system = {}
    for k in sorted(set(system) - SYSTEM_KEYS):
        c.bad(f"system.{k}", f"unknown key (known: {', '.join(sorted(SYSTEM_KEYS))})")
    name = system.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.bad("system.name", f"missing or invalid system name {name!r}")
        name = "system"
    ram = None
    if "ram" in system:
        try:
            ram = parse_size(system["ram"])
        except ValueError as e:
            c.bad("system.ram", f"bad size: {e}")
    tcp = system.get("tcp")
    if tcp is not None and not (isinstance(tcp, str) and TCP_RE.match(tcp)):
        c.bad("system.tcp", f"expected \"HOST:PORT\" (port 0 picks one), got {tcp!r}")
        tcp = None
    kernel_cpu = system.get("kernel_cpu")
    if kernel_cpu is not None:
        if type(kernel_cpu) is int and kernel_cpu >= 0:
            kernel_cpu = str(kernel_cpu)
        elif kernel_cpu not in ("auto", "none"):
            c.bad("system.kernel_cpu", f"expected \"auto\", \"none\" or a CPU number, "
                                       f"got {kernel_cpu!r}")
            kernel_cpu = None
    kernel_rt_port = system.get("kernel_rt_port", False)
    if type(kernel_rt_port) is not bool:
        c.bad("system.kernel_rt_port", f"expected true or false, got {kernel_rt_port!r}")
        kernel_rt_port = False
    uids = DEFAULT_UIDS
    if "uids" in system:
        try:
            uids = parse_uids(system["uids"])
        except ValueError as e:
            c.bad("system.uids", str(e))
    tasks = _tasks(c, data, path)
    for i, t in enumerate(tasks):
        if not t.remote:
            continue
        where = f"task[{i}] ({t.name})"
        if tcp is None:
            c.bad(f"{where}.remote", "a remote task needs [system] tcp = \"HOST:PORT\"")
        if t.memory is not None or t.devices:
            c.bad(f"{where}.remote", "a remote task cannot have memory or devices "
                                     "(they are this machine's RAM)")
    if not tasks and ("task" in data or "linux" in data):
        pass
    elif not tasks and "device" not in data:
        c.bad("task", "the image has no [[task]] (and no [[device]])")
    from .devices import check_devices
    devices = check_devices(c, data, tasks, path, ram)
    from .memory import check_memory
    memory = check_memory(c, data, tasks, ram)
    if any(t.net is not None for t in tasks):
        from .net import wire_switches
        wire_switches(c, tasks)
    c.wiring(tasks, {}, set())
    if c.problems:
        raise ImageError(c.problems)
    return Image(name, path, ram, tasks, devices, memory, tcp, uids, kernel_cpu, kernel_rt_port)


def module_dirs(path: str) -> list[str]:
    """Where an image's task modules are found, besides PYTHONPATH and the project: the
    image's own directory and the current directory (as for `python -m`)."""
    return list(dict.fromkeys([os.path.dirname(os.path.abspath(path)), os.getcwd()]))


def _importable_from(dirs: list[str]) -> None:
    for d in reversed(dirs):       # so validation finds what the tasks will import
        if d not in sys.path:
            sys.path.insert(0, d)


def load_image(path: str) -> Image:
    _importable_from(module_dirs(path))
    return parse_image(_read_toml(path), path)


@dataclass(frozen=True)
class RouteSpec:
    """`[[route]]` in a snippet: hand running task `task` a capability to `cap.service`."""
    task: str
    cap: CapSpec


def _routes(c: _Checker, data: dict, services: set[str], tasks: set[str]) -> list[RouteSpec]:
    raw = data.get("route", [])
    if not isinstance(raw, list):
        c.bad("route", "routes must be given as [[route]] tables")
        return []
    out = []
    for i, d in enumerate(raw):
        where = f"route[{i}]"
        if not isinstance(d, dict):
            c.bad(where, "each [[route]] must be a table")
            continue
        for k in sorted(set(d) - {"task", "service", "name", "rights", "label"}):
            c.bad(f"{where}.{k}", "unknown key (known: label, name, rights, service, task)")
        if d.get("task") not in tasks:
            c.bad(f"{where}.task", f"unknown task {d.get('task')!r}")
        svc = d.get("service")
        name = d.get("name", svc)
        caps = c._caps({"caps": {name: {k: v for k, v in d.items()
                                        if k in ("service", "rights", "label")}}}, where) \
            if isinstance(name, str) else []
        if not caps:
            continue
        if caps[0].service not in services:
            c.bad(f"{where}.service", f"unknown service {svc!r} (provided: "
                                      f"{', '.join(sorted(services)) or 'none'})")
            continue
        out.append(RouteSpec(str(d["task"]), caps[0]))
    return out


def check_snippet(data: dict, path: str, services: dict[str, str],
                  running_tasks: set[str]) -> tuple[list[TaskSpec], list[RouteSpec]]:
    """The tasks and routes of an `attach` snippet, checked against what already runs.
    Task modules are also found beside the snippet (as beside an image)."""
    dirs = module_dirs(path)
    _importable_from(dirs)
    c = _Checker(path)
    for k in sorted(set(data) - {"task", "route"}):
        why = ("a snippet joins a running system, whose [system] was set when it booted"
               if k == "system" else "unknown top-level key in a snippet")
        c.bad(k, f"{why} (known: task, route)")
    tasks = _tasks(c, data, path)
    for i, t in enumerate(tasks):
        if t.devices:       # io's policy is fixed at boot (launcher/devices.py)
            c.bad(f"task[{i}] ({t.name}).devices", "an attached task cannot be given devices "
                                                   "(the io policy is set when the image boots)")
    if not tasks and not data.get("route") and not c.problems:
        c.bad("task", "the snippet has no [[task]] and no [[route]]")
    c.wiring(tasks, services, running_tasks)
    all_services = set(services) | {s for t in tasks for s in t.provides}
    routes = _routes(c, data, all_services, running_tasks | {t.name for t in tasks})
    if c.problems:
        raise ImageError(c.problems)
    for t in tasks:
        t.module_path = dirs
    return tasks, routes


def load_snippet_data(path: str) -> dict:
    return _read_toml(path)
