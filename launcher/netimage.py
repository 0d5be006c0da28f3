"""The image text of a small networked machine, for the network benchmarks and tests.

    net_image("t", nics=[nic("nic0")], nic_clients={"1": "ore"},
              ore={"uplink": "uplink", "clients": {}}, tasks=[task("web", ...)]) -> str

The machine is always the same shape: sigma0 only (no moe), a PIC, HAL NICs (each a back end
with its keys: loopback; udp with port/peer/mac; tap with its device name), then in order
the `nic` device server (servers/nic, the l4nic driver) on the first NIC with its client
policy, ORe (servers/ore) with its policy and, if it has one, its uplink (a session of the
nic server), and the caller's task tables. The servers take sigma0's labels from 2 upward
in that order (nic 2, ORe 3; ORe alone 2); the caller's tasks name their own caps.

Contract: the text is TOML that launcher/image.py reads; values are written from Python
values (str, int, bool, lists, dicts as inline tables), so no caller escapes braces or quotes.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def value(v: Any) -> str:
    """One TOML value: strings as basic strings (JSON's escapes are TOML's), dicts inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return json.dumps(v) if isinstance(v, str) else repr(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no TOML value for {type(v).__name__}: {v!r}")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def table(header: str, fields: Mapping[str, Any]) -> str:
    """`[[header]]` and its fields (None fields left out), one per line."""
    lines = [f"[[{header}]]"] + [f"{_key(k)} = {value(v)}" for k, v in fields.items()
                                 if v is not None]
    return "\n".join(lines) + "\n"


def nic(name: str = "nic0", backend: str = "loopback", **keys: Any) -> dict[str, Any]:
    """A HAL NIC device: its back end and that back end's keys (tap=, port=, peer=, mac=)."""
    return {"kind": "nic", "name": name, "backend": backend, **keys}


def task(name: str, run: str, args: Sequence[str] | None = None, *, restart: str = "never",
         **fields: Any) -> dict[str, Any]:
    """A task table; `fields` are its other keys (caps, net, devices, provides...)."""
    return {"name": name, "run": run, "args": list(args) if args is not None else None,
            "restart": restart, **fields}


def session(service: str, label: int, local: str = "net") -> dict[str, Any]:
    """`caps` holding one session of `service` (a nic or ORe client's NIC)."""
    return {local: {"service": service, "label": label}}


def nic_server(clients: Mapping[str, Any], device: str = "nic0",
               restart: str = "on-failure") -> dict[str, Any]:
    """The nic server's task table; `clients` maps a label to a name or to its policy entry."""
    policy = {"clients": {lbl: {"name": c} if isinstance(c, str) else dict(c)
                          for lbl, c in clients.items()}}
    return {"name": "nic", "run": "servers.nic.server:main", "args": [json.dumps(policy)],
            "devices": [device], "provides": ["nic"], "restart": restart,
            "caps": session("sigma0", 2, "sigma0")}


def ore_server(policy: Mapping[str, Any], uplink: int | None, sigma0: int,
               restart: str = "on-failure") -> dict[str, Any]:
    """ORe's task table; `uplink` is its label at the nic server (None: no uplink)."""
    caps = session("sigma0", sigma0, "sigma0")
    if uplink is not None:
        caps.update(session("nic", uplink, "uplink"))
    return {"name": "ore", "run": "servers.ore.server:main", "args": [json.dumps(policy)],
            "provides": ["ore"], "restart": restart, "caps": caps}


def net_image(name: str, *, nics: Sequence[Mapping[str, Any]] = (),
              nic_clients: Mapping[str, Any] | None = None, nic_restart: str = "on-failure",
              ore: Mapping[str, Any] | None = None, ore_uplink: int | None = None,
              ore_restart: str = "on-failure", tasks: Sequence[Mapping[str, Any]] = ()) -> str:
    """The machine's image text: NICs, the nic server on the first NIC if `nic_clients` is
    given, ORe if `ore` (its policy) is, then `tasks` (see the module docstring)."""
    parts = [f'[system]\nname = {value(name)}\nram = "64M"\n', "[memory]\nmoe = false\n",
             table("device", {"kind": "pic", "name": "pic"})]
    parts += [table("device", d) for d in nics]
    sigma0 = 2
    if nic_clients is not None:
        parts.append(table("task", nic_server(nic_clients, str(nics[0]["name"]), nic_restart)))
        sigma0 += 1
    if ore is not None:
        parts.append(table("task", ore_server(ore, ore_uplink, sigma0, ore_restart)))
    parts += [table("task", t) for t in tasks]
    return "\n".join(parts)
