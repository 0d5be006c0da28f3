"""Restart policies and restart budgets: the supervisor's decision, kept apart from its actions.

`decide()` answers what to do when a task's process ends: restart it or leave it down, and
why. Policies: `never` (leave it down), `on-failure` (restart unless it ended with status 0),
`always` (restart whatever the status). A `Budget` allows at most N restarts in a sliding
window of T seconds; a task over budget stays down ("budget exhausted") until a user
`start`s it again, which resets the budget. A death the user asked for (stop, down) is
never restarted; a restart the user asked for always happens and costs no budget.

A `Backoff` (opt-in per task: `restart_backoff = "100ms..5s"`) slows a crash loop down: a
death less than `QUICK_S` after the task started is "quick"; the first quick death in a row
restarts at once, the next waits `first`, then twice that, and so on up to `max`. A task
that lived `QUICK_S` or longer starts the count again.
"""
from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple


class Budget:
    def __init__(self, max_restarts: int, window_s: float) -> None:
        self.max = max_restarts
        self.window = window_s
        self.times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()

    def allows(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._prune(now)
        return len(self.times) < self.max

    def spend(self, now: float | None = None) -> None:
        self.times.append(time.monotonic() if now is None else now)

    def reset(self) -> None:
        self.times.clear()


class Backoff:
    QUICK_S = 1.0

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first = first_s
        self.max = max_s
        self.quick = 0          # quick deaths in a row

    def delay(self, uptime_s: float) -> float:
        """Seconds to wait before restarting a task that died after `uptime_s`."""
        if uptime_s >= self.QUICK_S:
            self.quick = 0
            return 0.0
        self.quick += 1
        if self.quick == 1:
            return 0.0
        return min(self.first * 2 ** (self.quick - 2), self.max)

    def reset(self) -> None:
        self.quick = 0


class Decision(NamedTuple):
    restart: bool
    state: str          # the task's state if it is not restarted
    reason: str


def failed(status: int | None) -> bool:
    """An unknown status (killed, crashed before EXIT) counts as a failure."""
    return status != 0


def decide(policy: str, status: int | None, budget: Budget, *, wanted: bool,
           forced: bool, now: float | None = None) -> Decision:
    how = ("exited with status 0" if status == 0 else
           f"was killed by signal {-status}" if status is not None and status < 0 else
           f"failed with status {status}" if status is not None else "died (killed or crashed)")
    if not wanted:
        return Decision(False, "stopped", f"{how}; stopped on request")
    if forced:
        return Decision(True, "", f"{how}; restart requested")
    if policy == "never" or (policy == "on-failure" and not failed(status)):
        return Decision(False, "failed" if failed(status) else "exited", f"{how}; policy {policy}")
    if not budget.allows(now):
        return Decision(False, "failed",
                        f"{how}; restart budget exhausted ({budget.max} in {budget.window:g}s)")
    budget.spend(now)
    return Decision(True, "", f"{how}; restarting (policy {policy})")
