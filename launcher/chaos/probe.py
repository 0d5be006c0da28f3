"""Probes and load: threads calling a service's gate non-stop, with timeouts.

A `Caller` owns one L4 thread of the root task and calls one gate over and over. Its answers
measure recovery (`first_ok_after`: the first answer to a call that started after a
moment) and service liveness (`last_ok`); a call that ends later than its send + receive
timeouts plus the plan's slack is kept in `hung` for the `call_timeouts` invariant.

Threads: `run` is the caller's own thread; `ok`, `failed`, `hung` and `calls` are shared
with the runner's thread and guarded by `lock`. `stop` ends the loop after the current call.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from kernel.user import errors


class Caller(threading.Thread):
    """Calls one gate over and over with timeouts; records outcomes and overlong calls."""

    def __init__(self, l4: Any, gate: int, timeout_ms: int, slack: float, pause: float,
                 name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.l4, self.gate, self.timeout_ms, self.pause = l4, gate, timeout_ms, pause
        self.bound = 2 * timeout_ms / 1000 + slack
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: list[tuple[float, float]] = []       # (start, end) of answered calls
        self.failed: list[float] = []                 # end times of failed calls
        self.hung: list[tuple[float, float]] = []     # (start, seconds) past the bound
        self.calls = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.time()
            try:
                self.l4.call(self.gate, b"chaos", snd_timeout=self.timeout_ms,
                             rcv_timeout=self.timeout_ms)
                ok = True
            except errors.KernelGone:
                return
            except errors.L4Error:
                ok = False
            t1 = time.time()
            with self.lock:
                self.calls += 1
                (self.ok.append((t0, t1)) if ok else self.failed.append(t1))
                del self.ok[:-5000], self.failed[:-5000]
                if t1 - t0 > self.bound:
                    self.hung.append((t0, t1 - t0))
            time.sleep(self.pause if ok else 0.005)

    def first_ok_after(self, t: float) -> float | None:
        with self.lock:
            for start, end in self.ok:
                if start >= t:
                    return end
        return None

    def last_ok(self) -> float:
        with self.lock:
            return self.ok[-1][1] if self.ok else 0.0

    def take_hung(self) -> list[tuple[float, float]]:
        """The overlong calls since the last time (and forget them)."""
        with self.lock:
            hung, self.hung = self.hung, []
        return hung
