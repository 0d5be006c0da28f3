"""A client that keeps calling a service and prints every answer.

`cap` names the capability to use and so the service: "counter" is called with COUNTER
(`add(NAME)`, NAME a number), anything else with HELLO (`hello("NAME N")`). A call that fails
with PEER_DIED (the server died) or TIMEOUT is retried after a short pause: the launcher
restarts the server and rebinds the gate, so the same capability reaches the new
incarnation. If the task does not hold `cap` yet (a service attached later), it is looked
up from the launcher by name.
"""
from __future__ import annotations

import time
from typing import Any, Callable, cast

from kernel.user.client import L4
from kernel.user.errors import PartnerError
from kernel.user.rpc import RemoteError

from launcher.names import lookup

from .protocol import COUNTER, HELLO

CALL_MS = 5000


def _asker(l4: L4, cap: str, name: str) -> Callable[[int], str]:
    """One call to the service behind `cap`, the nth time: answers its text."""
    if cap == "counter":
        counter = cast(Any, COUNTER.client(l4, l4.caps[cap], timeout=CALL_MS))
        inc = int(name) if name.lstrip("-").isdigit() else 1
        return lambda n: str(counter.add(inc))
    hello = cast(Any, HELLO.client(l4, l4.caps[cap], timeout=CALL_MS))
    return lambda n: str(hello.hello(f"{name} {n}"))


def run(l4: L4, name: str = "world", period_ms: str = "500", count: str = "0",
        cap: str = "hello") -> int:
    period, limit = float(period_ms) / 1000.0, int(count)
    while cap not in l4.caps:
        try:
            lookup(l4, cap)
        except Exception as e:
            print(f"[{l4.task_name}] waiting for '{cap}': {e}", flush=True)
            time.sleep(0.5)
    ask = _asker(l4, cap, name)
    n = 0
    while limit <= 0 or n < limit:
        try:
            answer = ask(n)
        except PartnerError as e:
            print(f"[{l4.task_name}] call failed ({e.err.name}); retrying", flush=True)
            time.sleep(0.05)
            continue
        except RemoteError as e:
            print(f"[{l4.task_name}] refused: {e}", flush=True)
            time.sleep(period)
            continue
        print(f"[{l4.task_name}] {answer}", flush=True)
        n += 1
        time.sleep(period)
    return 0
