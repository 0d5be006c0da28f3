"""`l4run net`: the ORe switches of a running system, their ports and counters; and the
image's `net` tables that give tasks their ORe sessions.

    l4run net [--json] [--task NAME] [--run-dir DIR]

    [[task]]                                   in an image (launcher/image.py calls
    name = "web"                               `task_net` and `wire_switches`): the task gets
    net = { switch = "ore", ip = "10.0.2.15/24", broadcast = true }
                                               capability "net" to the service "ore" with
                                               a label of its own, and ORe's policy an entry
                                               for that label; optional keys: mac, allowed,
                                               active, promiscuous, label, cap
    net = { switch = "ore", dhcp = true }      instead of ip: the task asks a DHCP server
                                               (servers/dhcpd, or the host's) for its address:
                                               the word "dhcp" is added to its args
                                               (servers/netstack/config.py); ip and dhcp
                                               together are the image's mistake

The launcher (`Launcher.cmd_net`, launcher/system.py) asks each task that runs ORe
(`servers.ore.server:main`) through its admin gate (label 0, which no task holds) with the
declared admin op `counters` (servers/ore/protocol.py), one bounded call each, and answers
{"switches": {task: counters | {"error": why}}}. `ps --json` carries the same counters in
the ORe task's row, as "net".

Per port (a client session, or the uplink): frames and bytes in (tx: sent into the switch)
and out (rx: delivered to the port), drops by reason (spoofed, no_buffer, malformed,
oversized, inactive, no_route, loop), malformed details; then the MAC table.

Contract: `switch_counters` runs in the launcher's main thread; each call is bounded by
CALL_MS, so a hung switch delays a command by at most that, and is reported, not raised.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

import click

from kernel.user import errors
from kernel.user.rpc import ADMIN_LABEL, RemoteError

if TYPE_CHECKING:
    from .system import Launcher, TaskRun

ORE_RUN = "servers.ore.server:"
CALL_MS = 2_000
DROP_REASONS = ("spoofed", "no_buffer", "malformed", "oversized", "inactive", "no_route", "loop")


def ore_tasks(launcher: "Launcher") -> list["TaskRun"]:
    return [t for t in launcher.tasks.values() if t.spec.run.startswith(ORE_RUN)]


def counters_of(launcher: "Launcher", t: "TaskRun") -> dict[str, Any]:
    """One switch's counters through its admin gate, or {"error": why}."""
    from servers.ore.protocol import ORE
    if t.state != "running":
        return {"error": f"{t.spec.name} is {t.state}"}
    if not t.spec.provides:
        return {"error": f"{t.spec.name} provides no service (give it provides = [\"ore\"])"}
    assert launcher.root is not None, "control commands are served only while the kernel is up"
    gate = launcher.service_gate(t.spec.provides[0], ADMIN_LABEL)
    try:
        stub: Any = ORE.client(launcher.root, gate, timeout=CALL_MS)   # ops made at run time
        return dict(stub.counters())
    except (errors.L4Error, RemoteError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def switch_counters(launcher: "Launcher", task: str | None = None) -> dict[str, Any]:
    found = [t for t in ore_tasks(launcher) if task in (None, t.spec.name)]
    if task is not None and not found:
        raise ValueError(f"no ORe task named {task!r}")
    return {"switches": {t.spec.name: counters_of(launcher, t) for t in found}}


# -- images: `net = { switch = "ore", ip = "10.0.2.15/24" }` in a task table -------------------
NET_KEYS = {"switch", "ip", "mac", "broadcast", "allowed", "active", "promiscuous", "label",
            "cap", "dhcp"}
POLICY_KEYS = ("ip", "mac", "broadcast", "allowed", "active", "promiscuous")


def task_net(c: Any, key: str, v: Any) -> dict[str, Any] | None:
    """A task's `net` table, checked for its keys (the rest is checked with the switch)."""
    if not isinstance(v, dict):
        c.bad(key, "expected a table: net = { switch = \"ore\", ip = \"10.0.2.15/24\" }")
        return None
    for k in sorted(set(v) - NET_KEYS):
        c.bad(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(NET_KEYS))})")
    label = v.get("label")
    if label is not None and (type(label) is not int or label < 1):
        c.bad(f"{key}.label", f"a client label is an integer >= 1, got {label!r}")
        return None
    dhcp = v.get("dhcp", False)
    if type(dhcp) is not bool:
        c.bad(f"{key}.dhcp", f"true or false, got {dhcp!r}")
        return None
    if dhcp and "ip" in v:
        c.bad(f"{key}.dhcp", f"an address by DHCP and ip = {v['ip']!r} both: give one of them")
        return None
    return dict(v)


def wire_switches(c: Any, tasks: list[Any]) -> None:
    """Each task with `net` gets a capability to its switch's service (local name "net",
    or `cap`) with a label of its own (`label`, else the lowest free one), and an entry for
    that label in the switch task's policy (its first argument, JSON): the task's name and
    the `net` table's ip, mac, broadcast, allowed, active, promiscuous. The merged policy
    is checked as ORe will read it (servers/ore/switch.py parse_policy)."""
    import json as _json

    from servers.ore.switch import PolicyError, parse_policy

    from .image import CapSpec
    providers = {svc: t for t in tasks for svc in t.provides}
    for i, t in enumerate(tasks):
        if t.net is None:
            continue
        where = f"task[{i}] ({t.name}).net"
        service = str(t.net.get("switch", "ore"))
        sw = providers.get(service)
        if sw is None or not sw.run.startswith(ORE_RUN):
            c.bad(f"{where}.switch", f"no ORe task ({ORE_RUN}main) provides {service!r}")
            continue
        try:
            policy = _json.loads(sw.args[0]) if sw.args else {}
        except ValueError as e:
            c.bad(f"{where}.switch", f"{sw.name}'s policy argument is not JSON: {e}")
            continue
        clients = policy.setdefault("clients", {})
        used = {int(k) for k in clients if str(k).isdigit()} | {
            cap.label for other in tasks for cap in other.caps if cap.service == service}
        label = t.net.get("label") or next(n for n in range(1, len(used) + 2) if n not in used)
        if label in used:
            c.bad(f"{where}.label", f"label {label} of {service!r} is taken already")
            continue
        local = str(t.net.get("cap", "net"))
        if any(cap.local == local for cap in t.caps):
            c.bad(f"{where}.cap", f"the task has a capability {local!r} already")
            continue
        clients[str(label)] = {"name": t.name, **{k: t.net[k] for k in POLICY_KEYS
                                                 if k in t.net}}
        try:
            parse_policy(policy)
        except PolicyError as e:
            c.bad(where, f"as {sw.name}'s policy: {e}")
            continue
        sw.args = [_json.dumps(policy), *sw.args[1:]]
        t.caps.append(CapSpec(local=local, service=service, label=label))
        if t.net.get("dhcp") and any(a.startswith("ip=") for a in t.args):
            c.bad(f"{where}.dhcp", "an address by DHCP and the task argument "
                  f"{next(a for a in t.args if a.startswith('ip='))} both: give one of them")
            continue
        if t.net.get("dhcp") and "dhcp" not in t.args:
            t.args = [*t.args, "dhcp"]               # servers/netstack/config.py reads it


# -- the command ------------------------------------------------------------------------------
def _drops(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()) if v) or "-"


def render(switches: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    parts: list[Any] = []
    for name, sw in switches.items():
        if "error" in sw:
            parts.append(Text(f"{name}: {sw['error']}", style="bold red"))
            continue
        t = Table(title=f"switch {name}", title_justify="left")
        for col in ("port", "name", "mac", "ip", "frames in/out", "bytes in/out", "drops"):
            t.add_column(col, no_wrap=True)
        ports = list(sw.get("clients", {}).values())
        up = sw.get("uplink") or {}
        if up.get("configured"):
            ports.append({**up, "name": "uplink " + ("attached" if up.get("attached")
                                                      else "DETACHED")})
        for p in ports:
            t.add_row(str(p.get("port", "?")), p.get("name", "?"), p.get("mac") or "-",
                      p.get("ip") or "-", f"{p.get('tx_frames', 0)}/{p.get('rx_frames', 0)}",
                      f"{p.get('tx_bytes', 0)}/{p.get('rx_bytes', 0)}", _drops(p.get("drops", {})))
        parts.append(t)
        learned = [r for r in sw.get("table", []) if not r.get("pinned")]
        parts.append(Text(f"  MAC table: {len(sw.get('table', []))} entries "
                          f"({len(learned)} learned)", style="dim"))
        f = sw.get("faults") or {}
        if f.get("active") or any((f.get("counts") or {}).values()):   # ORe's chaos knobs
            knobs = ", ".join(f"{k} {f[k]:g}" for k in ("drop", "corrupt", "duplicate")
                              if f.get(k)) or "off"
            scope = ", ".join(map(str, f.get("ports") or ["every port"]))
            parts.append(Text(f"  faults: {knobs} on {scope}; {_drops(f.get('counts') or {})}",
                              style="yellow"))
    return Group(*parts) if parts else Text("no ORe switch in this system")


def register(cli: click.Group, ask: Callable[..., dict[str, Any]],
             find_run_dir: Callable[[str | None], str], run_dir_option: Any) -> None:
    @cli.command("net")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object")
    @click.option("--task", default=None, help="only this ORe task")
    @run_dir_option
    def net(as_json: bool, task: str | None, run_dir: str | None) -> None:
        """ORe's ports: frames and bytes in/out, drops by reason, the MAC table."""
        args = {"task": task} if task else {}
        answer = ask(find_run_dir(run_dir), "net", **args)
        switches = answer.get("switches", {})
        if as_json:
            click.echo(json.dumps(switches, indent=2))
            return
        import sys

        from rich.console import Console
        Console(width=None if sys.stdout.isatty() else 160).print(render(switches))
