"""Task functions the trace tests spawn (`System.spawn("tests.trace.tasks:NAME")`).

- `forwarder`: a server that, for each call, calls its "next" capability with the same data
  and replies with the answer: B of a call chain A → B → C.
- `caller`: calls its "next" capability `n` times with `data` (A of the chain) and exits 0
  when every answer came back, 1 otherwise, 2 when a call ended in PEER_DIED.
"""
from __future__ import annotations

from kernel.user.client import L4
from kernel.user.errors import PeerDied

TIMEOUT_MS = 20_000


def forwarder(l4: L4) -> int:
    reply, out = 0, b""
    while True:
        msg = l4.reply_and_wait(reply, out)
        reply = msg.reply
        out = l4.call(l4.caps["next"], msg.data, rcv_timeout=TIMEOUT_MS).data


def caller(l4: L4, n: str = "3", data: str = "ping") -> int:
    try:
        answers = [l4.call(l4.caps["next"], data.encode(), rcv_timeout=TIMEOUT_MS).data
                   for _ in range(int(n))]
    except PeerDied:
        return 2
    return 0 if len(answers) == int(n) and all(answers) else 1
