"""A host thread of the test process to change the policy, group or CPUs of."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator


@contextlib.contextmanager
def parked_thread() -> Iterator[int]:
    """A thread that waits until the block ends (then it ends, and is joined): its TID."""
    got: list[int] = []
    go = threading.Event()

    def park() -> None:
        got.append(threading.get_native_id())
        go.wait(10)
    t = threading.Thread(target=park)
    t.start()
    try:
        while not got:
            pass
        yield got[0]
    finally:
        go.set()
        t.join()
