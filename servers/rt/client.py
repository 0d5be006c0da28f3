"""The rt client library: reserve CPU time for the calling thread, run a periodic job.

    rt = RtClient(l4)                                   # capability "rt"
    res = rt.reserve(period_us=10_000, budget_us=2_000) # for the calling host thread
    job = Periodic(10_000)                              # release times, deadline misses
    while ...:
        work(); job.next()                              # sleeps to the next period
    rt.report(res, job.take()); rt.release(res)

`reserve` names the calling thread by its host thread id (threading.get_native_id()): an L4
thread of a task runs on one host thread of the task's process, so the thread that asks is
the one reserved (pass `tid` to reserve another thread of this task's process). Refusals are
`RemoteFailure` with `.error` (REFUSED, INVALID, NOT_YOURS, HOST, ...) and `.reason` (why).

`Periodic` keeps absolute release times (no drift: each period starts at start + k * period),
counts a deadline miss when a period's work ends after its release + deadline, and skips the
periods a late job overran (each counted as a miss), as a player that drops late frames does.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure

from .protocol import RT

__all__ = ["RtClient", "Periodic", "RemoteFailure"]


class Periodic:
    """Release times and deadline misses of a periodic job (monotonic clock)."""

    def __init__(self, period_us: int, deadline_us: int | None = None) -> None:
        self.period = period_us / 1e6
        self.deadline = (deadline_us or period_us) / 1e6
        self.release = time.monotonic()
        self.periods = self.misses = 0
        self.worst = 0.0                  # the worst lateness past the deadline (s)
        self._taken = (0, 0, 0.0)

    def next(self) -> bool:
        """End this period's work: count it (a miss if late), sleep to the next release.
        True if the deadline was met."""
        now = time.monotonic()
        late = now - (self.release + self.deadline)
        self.periods += 1
        met = late <= 0
        if not met:
            self.misses += 1
            self.worst = max(self.worst, late)
        self.release += self.period
        while self.release + self.deadline < now:      # overran whole periods: missed too
            self.release += self.period
            self.periods += 1
            self.misses += 1
        wait = self.release - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return met

    def take(self) -> tuple[int, int, int]:
        """(periods, misses, worst_us) since the last take."""
        p, m, _ = self._taken
        out = (self.periods - p, self.misses - m, int(self.worst * 1e6))
        self._taken = (self.periods, self.misses, self.worst)
        return out


class RtClient:
    """A session with the CPU reservation manager through capability `rt`."""

    def __init__(self, l4: L4, cap: int | None = None, timeout_ms: int = 10_000) -> None:
        self.stub: Any = RT.client(l4, l4.caps["rt"] if cap is None else cap, timeout=timeout_ms)

    def reserve(self, period_us: int, budget_us: int, deadline_us: int | None = None,
                tid: int | None = None) -> Any:
        """Reserve budget_us every period_us for `tid` (default: the calling thread).
        Answers the reply (id, policy, utilisation, total, bound); raises RemoteFailure."""
        return self.stub.reserve(threading.get_native_id() if tid is None else tid,
                                 period_us, budget_us, deadline_us or period_us)

    def release(self, res: Any) -> None:
        self.stub.release(res.id if hasattr(res, "id") else int(res))

    def report(self, res: Any, counts: tuple[int, int, int]) -> None:
        self.stub.report(res.id if hasattr(res, "id") else int(res), *counts)

    def mine(self) -> list[dict[str, Any]]:
        return list(self.stub.mine())
