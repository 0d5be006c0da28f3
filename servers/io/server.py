"""The io server: holds every device capability of the HAL, hands each driver its own.

Started as a task with the HAL's bus gate as capability "hal" and the policy as its
argument (JSON: {"<client label>": ["device", ...]}):

    python -m kernel.user.task servers.io.server:serve '{"20": ["disk0"], "21": ["nic0", "timer0"]}'

At start it opens every device on the bus (their gates and IRQ objects land in its slots),
then serves the `io` protocol. The policy decides, per client label, which devices that
client may open; nothing else reaches a driver.

Revocation: each grant to a client is mapped from a per-(label, device) copy that io
derives first; `set_policy` taking a device away deletes that copy, which revokes every
capability the client (and anyone it passed them to) got from it — other clients keep theirs.
"""
from __future__ import annotations

import json
import sys
from typing import Any, cast

from hal.driver import free_slots
from hal.protocol import BUS
from kernel.abi import Rights
from kernel.user.client import L4, map_cap
from kernel.user.rpc import Call, Reply, RpcError

from .protocol import ADMIN_LABEL, IO


def parse_policy(text: str) -> dict[int, list[str]]:
    raw = json.loads(text) if text else {}
    if not isinstance(raw, dict):
        raise ValueError("io policy must be a JSON object {label: [device, ...]}")
    out: dict[int, list[str]] = {}
    for k, v in raw.items():
        if not str(k).isdigit() or not isinstance(v, list) or not all(isinstance(n, str) for n in v):
            raise ValueError(f"io policy entry {k!r}: must be \"<label>\": [device names]")
        if int(k) == ADMIN_LABEL:
            raise ValueError(f"io policy entry {k!r}: label {ADMIN_LABEL} is the admin gate's")
        out[int(k)] = list(v)
    return out


class IoServer:
    def __init__(self, l4: L4, bus: int, policy: dict[int, list[str]]) -> None:
        self.l4 = l4
        # A stub's ops are attributes set at run time from the protocol declaration, so the
        # checker can see them only through Any (a plain `: Any` is narrowed back to Stub).
        self.bus = cast(Any, BUS.client(l4, bus, timeout=30_000))
        self.devs: dict[str, dict[str, Any]] = {}      # name -> {info, gate, irq}
        for d in self.bus.devices():
            base = free_slots(l4, 2, 256)
            info = self.bus.open(d["name"], _window=(base, 2))
            slots = [it[1] for it in self.bus.last_items]
            self.devs[d["name"]] = {"info": info, "gate": slots[0],
                                       "irq": slots[1] if len(slots) > 1 else None}
        self.ram_info = self.bus.ram()
        unknown = {n for names in policy.values() for n in names} - set(self.devs)
        if unknown:
            raise ValueError(f"io policy names devices the HAL does not have: {', '.join(sorted(unknown))}")
        self.rules = policy
        self.grants: dict[tuple[int, str], list[int]] = {}   # (label, device) -> our derived slots

    # -- client ops ---------------------------------------------------------------------
    def devices(self, call: Call) -> list[str]:
        return list(self.rules.get(call.label, []))

    def open(self, call: Call, name: str) -> Reply:
        if name not in self.devs:
            raise RpcError("NOT_FOUND", f"no device {name!r}")
        if name not in self.rules.get(call.label, []):
            raise RpcError("DENIED", f"the policy gives client {call.label} no access to {name}")
        d = self.devs[name]
        mine = self.grants.setdefault((call.label, name), [])
        gate = self._derive(d["gate"])
        mine.append(gate)
        items = [map_cap(gate, Rights.INVOKE)]
        if d["irq"] is not None:
            irq = self._derive(d["irq"])
            mine.append(irq)
            items.append(map_cap(irq, Rights.INVOKE | Rights.WRITE))
        return Reply(d["info"], items)

    def ram(self, call: Call) -> dict:
        return self.ram_info

    def _derive(self, slot: int) -> int:
        # An explicit dst: the ABI layout of CAP_DERIVE takes no nil dst (kernel/abi.py
        # declares "dst:int" while L4.cap_derive defaults dst to None) - reported.
        return self.l4.cap_derive(slot, Rights.ALL, dst=free_slots(self.l4, 1, 512))

    # -- admin ops (the dispatch lets only the admin gate through) --------------------------
    def set_policy(self, call: Call, label: int, names: list) -> None:
        if label == ADMIN_LABEL:
            raise RpcError("DENIED", f"label {ADMIN_LABEL} is the admin gate's, no client's")
        unknown = [n for n in names if not isinstance(n, str) or n not in self.devs]
        if unknown:
            raise RpcError("NOT_FOUND", f"no device(s) {', '.join(map(str, unknown))}")
        for n in set(self.rules.get(label, [])) - set(names):
            for slot in self.grants.pop((label, n), []):
                self.l4.cap_delete(slot)
        self.rules[label] = list(names)

    def policy(self, call: Call) -> dict:
        return {str(k): v for k, v in self.rules.items()}


def serve(l4: L4, policy: str = "{}") -> int:
    """The io task: needs capability "hal" (the HAL's bus gate)."""
    if "hal" not in l4.caps:
        print("io: no 'hal' capability (the HAL's bus gate)", file=sys.stderr, flush=True)
        return 2
    try:
        srv = IoServer(l4, l4.caps["hal"], parse_policy(policy))
    except ValueError as e:
        print(f"io: {e}", file=sys.stderr, flush=True)
        return 2
    IO.serve(l4, srv)
    return 0
