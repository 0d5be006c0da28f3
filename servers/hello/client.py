"""A client that keeps calling a service and prints every answer.

A call that fails with PEER_DIED (the server died) or TIMEOUT is retried after a short
pause: the launcher restarts the server and rebinds the gate, so the same capability reaches
the new incarnation. `cap` names the capability to use; if the task does not hold it yet
(a service attached later), it is looked up from the launcher by name.
"""
from __future__ import annotations

import time

from kernel.user.client import L4
from kernel.user.errors import PartnerError

from launcher.names import lookup


def run(l4: L4, name: str = "world", period_ms: str = "500", count: str = "0",
        cap: str = "hello") -> int:
    period, limit = float(period_ms) / 1000.0, int(count)
    while cap not in l4.caps:
        try:
            lookup(l4, cap)
        except Exception as e:
            print(f"[{l4.task_name}] waiting for '{cap}': {e}", flush=True)
            time.sleep(0.5)
    n = 0
    while limit <= 0 or n < limit:
        try:
            m = l4.call(l4.caps[cap], f"{name} {n}".encode(), rcv_timeout=5000)
        except PartnerError as e:
            print(f"[{l4.task_name}] call failed ({e.err.name}); retrying", flush=True)
            time.sleep(0.05)
            continue
        print(f"[{l4.task_name}] {m.data.decode(errors='replace')}", flush=True)
        n += 1
        time.sleep(period)
    return 0
