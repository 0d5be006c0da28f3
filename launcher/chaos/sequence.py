"""The injection sequence of a run, drawn from the seed before the run starts.

Contract: `schedule(plan, tasks, services, seed, duration, budgets)` is a pure function of
its arguments — the plan, the seed and the image's task and service names (their order does
not matter) — so the same seed on the same image gives the same sequence (`Injection.key()`
equal, docs/CHAOS.md "Reproducibility"). Everything random a run needs (times, kinds,
targets, delays, the seeds of the kernel's rules) is drawn here and nowhere else.

Spacing: with `spacing = "budget"`, a kill or crash of a task closer to its previous one
than its restart budget allows (or than half the recovery time) is left out of the sequence.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from .plan import IPC_KINDS, LINUX_KINDS, SWITCH_KINDS, TASK_KINDS, FaultSpec, Plan


@dataclass
class Injection:
    seq: int
    at: float
    kind: str
    target: str                     # task, "service:NAME", "gate:ID" or "device:NAME"
    params: dict[str, Any]

    def key(self) -> tuple[Any, ...]:
        """What must be equal between two runs with the same seed."""
        return (self.seq, round(self.at, 6), self.kind, self.target,
                json.dumps(self.params, sort_keys=True))


def _targets(f: FaultSpec, tasks: list[str], services: list[str]) -> list[str]:
    if f.kind in TASK_KINDS:
        return sorted(f.tasks or tasks)
    if f.kind in IPC_KINDS:
        return [f"gate:{g}" for g in sorted(f.gates)] + \
               [f"service:{s}" for s in sorted(f.services or ([] if f.gates else services))]
    if f.kind in LINUX_KINDS:
        return [f"linux:{t}" for t in sorted(f.tasks)] or ["linux:"]
    if f.kind in SWITCH_KINDS:
        return [f"service:{s}" for s in sorted(f.services)]
    return [f"device:{d}" for d in sorted(f.devices)] or ["device:"]


def _params(f: FaultSpec, rng: random.Random) -> dict[str, Any]:
    if f.kind in IPC_KINDS:
        p: dict[str, Any] = {"probability": f.probability, "count": f.count,
                             "seed": rng.getrandbits(32), "for": f.duration}
        if f.kind == "delay":
            p["delay_ms"] = rng.randint(*f.delay_ms)
        if f.kind == "corrupt":
            p["bytes"] = f.nbytes
        return p
    if f.kind in LINUX_KINDS:
        p = {"probability": f.probability, "count": f.count, "seed": rng.getrandbits(32),
             "for": f.duration}
        if f.kind == "linux_delay":
            p["delay_ms"] = rng.randint(*f.delay_ms)
        else:
            p["errno"] = f.errno
        if f.nrs:
            p["nr"] = sorted(f.nrs)
        return p
    if f.kind in ("stop", "cpu_hog"):
        return {"for": f.duration}
    if f.kind == "mem_hog":
        return {"for": f.duration, "mib": f.mib}
    if f.kind == "device":
        return {"for": f.duration, "knobs": f.knobs, "reset": f.reset}
    if f.kind in SWITCH_KINDS:           # ORe's generator seeded from the plan's
        return {"for": f.duration, "knobs": {"seed": rng.getrandbits(32), **f.knobs},
                "reset": f.reset}
    return {}


def _pick(faults: list[FaultSpec], total: float, rng: random.Random) -> FaultSpec:
    """One fault drawn by weight (`total` is the sum of the weights)."""
    pick, acc = rng.random() * total, 0.0
    for cand in faults:
        acc += cand.weight
        if pick < acc:
            return cand
    return faults[-1]


def schedule(plan: Plan, tasks: list[str], services: list[str], seed: int | None = None,
             duration: float | None = None,
             budgets: dict[str, tuple[int, float]] | None = None) -> list[Injection]:
    """The complete injection sequence of a run (a pure function of its arguments)."""
    rng = random.Random(plan.seed if seed is None else seed)
    duration = plan.duration if duration is None else duration
    tasks, services = sorted(tasks), sorted(services)
    out: list[tuple[float, str, str, dict[str, Any]]] = []
    for at, f in plan.at:
        if at < duration:
            for target in _targets(f, tasks, services)[:1] or [""]:
                out.append((at, f.kind, target, _params(f, rng)))
    last_hit: dict[str, float] = {}
    gap = {t: (w / n) * 1.25 for t, (n, w) in (budgets or {}).items() if n > 0}
    total = sum(f.weight for f in plan.faults)
    t = 0.0
    while plan.rate > 0 and total > 0:
        t += rng.expovariate(plan.rate)
        if t >= duration:
            break
        f = _pick(plan.faults, total, rng)
        targets = _targets(f, tasks, services)
        if not targets:
            continue
        target = targets[rng.randrange(len(targets))]
        params = _params(f, rng)
        if f.kind in ("kill", "crash") and plan.spacing == "budget":
            if t - last_hit.get(target, -1e9) < max(gap.get(target, 0.0), plan.recovery / 2):
                continue        # would overrun the task's restart budget: skip it
            last_hit[target] = t
        out.append((t, f.kind, target, params))
    out.sort(key=lambda x: x[0])
    return [Injection(i + 1, at, kind, target, params)
            for i, (at, kind, target, params) in enumerate(out)]
