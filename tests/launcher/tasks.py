"""Task functions the launcher tests start (real processes, via the zygote)."""
from __future__ import annotations

import os
import time
from typing import Any

from kernel.user.client import L4
from launcher.names import lookup


def exit_with(l4: L4, code: str = "0", delay_ms: str = "0") -> int:
    time.sleep(int(delay_ms) / 1000)
    return int(code)


def crash(l4: L4) -> int:
    raise RuntimeError("crashing on purpose")


def idle(l4: L4) -> int:
    while True:
        time.sleep(1)


def show_env(l4: L4) -> int:
    print(f"ENV GREETING={os.environ.get('GREETING')} caps={sorted(l4.caps)}", flush=True)
    idle(l4)
    return 0


def lookup_then_call(l4: L4, name: str) -> int:
    """Wait until the launcher routes `name` to us, then call it once and print the answer."""
    while True:
        try:
            slot = lookup(l4, name)
            break
        except Exception:
            time.sleep(0.05)
    from servers.hello.protocol import HELLO
    hello: Any = HELLO.client(l4, slot, timeout=5000)
    print(f"LOOKUP {hello.hello('via lookup')}", flush=True)
    idle(l4)
    return 0
