"""A counter server: state per client, keyed by the kernel-given label of its capability.

Serves COUNTER (servers/hello/protocol.py): `add(n)` answers "label L: total T (all clients: A)".
"""
from __future__ import annotations

from kernel.user.client import L4
from kernel.user.rpc import Call

from .protocol import COUNTER


class Counter:
    def __init__(self) -> None:
        self.totals: dict[int, int] = {}      # gate label -> its running total

    def add(self, call: Call, n: int) -> str:
        self.totals[call.label] = self.totals.get(call.label, 0) + n
        return (f"label {call.label}: total {self.totals[call.label]} "
                f"(all clients: {sum(self.totals.values())})")


def serve(l4: L4) -> int:
    print(f"[{l4.task_name}] counting", flush=True)
    COUNTER.serve(l4, Counter())
    return 0
