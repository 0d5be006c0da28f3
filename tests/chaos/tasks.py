"""Task functions the chaos tests spawn as real processes.

- `recorder(l4)`: keeps every message that arrives through a gate with label DATA (data
  bytes, in arrival order); a call is answered with its own data (an echo). Through a gate
  with label CTRL, data b"dump" answers the list recorded so far (msgpack) and clears it;
  b"block" makes the recorder call its capability "hold" and wait for that reply (so it is
  not receiving until the test lets it go), then answers the control call.
"""
from __future__ import annotations

from kernel.abi import pack
from kernel.user.client import L4

DATA = 1
CTRL = 2


def recorder(l4: L4) -> int:
    got: list[bytes] = []
    m = l4.wait()
    while True:
        answer = b""
        if m.label == CTRL and m.data == b"dump":
            answer, got = pack(got), []
        elif m.label == CTRL and m.data == b"block":
            l4.call(l4.caps["hold"], b"blocked")
            answer = b"released"
        else:
            got.append(m.data)
            answer = m.data
        m = l4.reply_and_wait(m.reply, answer) if m.reply else l4.wait()
