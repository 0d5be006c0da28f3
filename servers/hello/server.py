"""A hello server: the standard L4 server loop (reply_and_wait), one answer per call.

Contract: each call's data is a UTF-8 name; the answer is "GREETING, NAME (#N, label L)".
The label comes from the kernel (the gate the caller used), never from the caller.
"""
from __future__ import annotations

import os
import sys

from kernel.user.client import L4
from kernel.user.errors import L4Error

MAX_NAME = 256        # bytes of the caller's name echoed back


def serve(l4: L4, greeting: str = "hello", crash_every: str = "0") -> int:
    crash = int(crash_every)
    print(f"[{l4.task_name}] serving '{greeting}' (pid {os.getpid()})", flush=True)
    n = 0
    m = l4.wait()
    while True:
        n += 1
        if crash and n % crash == 0:
            print(f"[{l4.task_name}] crashing on purpose after {n} calls", flush=True)
            sys.stdout.flush()
            os._exit(7)
        name = m.data[:MAX_NAME].decode(errors="replace")   # the answer must fit in a message
        answer = f"{greeting}, {name} (#{n}, label {m.label})"
        if not m.reply:
            m = l4.wait()
            continue
        try:
            m = l4.reply_and_wait(m.reply, answer.encode())
        except L4Error as e:      # our answer could not be delivered: say why, serve on
            print(f"[{l4.task_name}] reply failed: {e}", file=sys.stderr, flush=True)
            m = l4.wait()
