"""A counter server: state per client, keyed by the kernel-given label of its capability.

Call data: a decimal increment. Answer: "label L: total T (all clients: A)".
"""
from __future__ import annotations

from kernel.user.client import L4


def serve(l4: L4) -> int:
    totals: dict[int, int] = {}
    print(f"[{l4.task_name}] counting", flush=True)
    m = l4.wait()
    while True:
        try:
            inc = int(m.data or b"1")
        except ValueError:
            inc = 0
        totals[m.label] = totals.get(m.label, 0) + inc
        answer = f"label {m.label}: total {totals[m.label]} (all clients: {sum(totals.values())})"
        m = l4.reply_and_wait(m.reply, answer.encode()) if m.reply else l4.wait()
