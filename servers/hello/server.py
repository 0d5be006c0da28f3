"""A hello server: the smallest server on the one framework (kernel.user.rpc), HELLO.

`serve(l4, greeting, crash_every)` answers each `hello(name)` with "GREETING, NAME (#N, label
L)"; with crash_every=N > 0 it crashes on purpose at every Nth call (to show supervision).
The label comes from the kernel (the gate the caller used), never from the caller.
"""
from __future__ import annotations

import os
import sys

from kernel.user.client import L4
from kernel.user.rpc import Call

from .protocol import HELLO, MAX_NAME


class Hello:
    def __init__(self, task: str, greeting: str, crash_every: int) -> None:
        self.task, self.greeting, self.crash_every = task, greeting, crash_every
        self.calls = 0

    def hello(self, call: Call, name: str) -> str:
        self.calls += 1
        if self.crash_every and self.calls % self.crash_every == 0:
            print(f"[{self.task}] crashing on purpose after {self.calls} calls", flush=True)
            sys.stdout.flush()
            os._exit(7)
        return f"{self.greeting}, {name[:MAX_NAME]} (#{self.calls}, label {call.label})"


def serve(l4: L4, greeting: str = "hello", crash_every: str = "0") -> int:
    print(f"[{l4.task_name}] serving '{greeting}' (pid {os.getpid()})", flush=True)
    HELLO.serve(l4, Hello(l4.task_name, greeting, int(crash_every)))
    return 0
