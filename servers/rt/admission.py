"""Admission control of CPU reservations: the same test the host's SCHED_DEADLINE applies.

Linux admits a deadline thread while Σ runtime/period over the root domain stays within
(sched_rt_runtime_us / sched_rt_period_us) × CPUs, minus the bandwidth its fair servers hold
(since Linux 6.12 each CPU runs a deadline server for the ordinary class, 50 ms every
second by default, accounted like any deadline thread). `Admission` keeps the sum of what
this manager admitted and refuses anything past the bound, with the numbers in the reason,
before the host is asked; so a host EBUSY is never the first word.

Contract: `check` decides and changes nothing; `add` / `remove` change the sum (the caller
adds only what the host then accepted). Fields are checked one by one, each refusal naming
the field. Owned by the manager's main thread.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .hostsched import Bound
from .protocol import MAX_PERIOD_US, MIN_BUDGET_US, MIN_PERIOD_US

FAIR_SERVER = "/sys/kernel/debug/sched/fair_server"
FAIR_DEFAULT = 0.05              # 50 ms per 1 s per CPU (kernel/sched/deadline.c)


class Invalid(ValueError):
    """A field of a request is out of range: `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def check_fields(period_us: int, budget_us: int, deadline_us: int) -> None:
    """Raise Invalid naming the first bad field (budget <= deadline <= period)."""
    if not MIN_PERIOD_US <= period_us <= MAX_PERIOD_US:
        raise Invalid("period_us", f"{period_us} is outside {MIN_PERIOD_US}..{MAX_PERIOD_US}")
    if not MIN_BUDGET_US <= budget_us:
        raise Invalid("budget_us", f"{budget_us} is below {MIN_BUDGET_US}")
    if not budget_us <= deadline_us <= period_us:
        raise Invalid("deadline_us", f"{deadline_us} must lie within budget {budget_us} .. "
                                     f"period {period_us}")


def fair_server_share(cpus: int) -> float:
    """The utilisation the host's fair servers hold (all CPUs): from debugfs when mounted,
    else the default on kernels that have them (>= 6.12), else 0."""
    total, found = 0.0, False
    try:
        for cpu in os.listdir(FAIR_SERVER):
            with open(f"{FAIR_SERVER}/{cpu}/runtime") as f:
                rt = int(f.read())
            with open(f"{FAIR_SERVER}/{cpu}/period") as f:
                total += rt / int(f.read())
            found = True
    except OSError:
        pass
    if found:
        return total
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return FAIR_DEFAULT * cpus if (major, minor) >= (6, 12) else 0.0


@dataclass
class Admission:
    """The admitted sum against the host's bound (`limit`, utilisation in CPUs)."""
    bound: Bound
    reserved_for_host: float      # what the host holds itself (fair servers)
    total: float = 0.0

    @classmethod
    def for_host(cls, bound: Bound) -> "Admission":
        return cls(bound, fair_server_share(bound.cpus))

    @property
    def limit(self) -> float:
        return self.bound.total - self.reserved_for_host

    def check(self, budget_us: int, period_us: int) -> str | None:
        """None if a reservation of budget/period fits, else why not (the numbers)."""
        u = budget_us / period_us
        if u > self.bound.fraction:
            return (f"utilisation {u:.3f} of one thread exceeds the host's per-CPU share "
                    f"{self.bound.fraction:.2f}")
        if self.total + u > self.limit + 1e-9:
            return (f"admitted {self.total:.3f} + {u:.3f} would exceed the bound {self.limit:.3f}"
                    f" (sched_rt_runtime_us/sched_rt_period_us = {self.bound.runtime_us}/"
                    f"{self.bound.period_us} x {self.bound.cpus} CPUs"
                    f" - {self.reserved_for_host:.3f} held by the host's fair servers)")
        return None

    def add(self, budget_us: int, period_us: int) -> None:
        self.total += budget_us / period_us

    def remove(self, budget_us: int, period_us: int) -> None:
        self.total = max(0.0, self.total - budget_us / period_us)
