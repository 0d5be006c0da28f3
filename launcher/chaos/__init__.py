"""Chaos runs: a plan (TOML) of faults, a seeded schedule, injection, invariants, a report.

    plan.py        `load_plan(path)` validates a chaos plan (docs/CHAOS.md) and names file,
                   key and reason for every mistake, before anything runs.
    sequence.py    `schedule(plan, tasks, services)` turns the plan and a seed into the
                   complete list of injections (time, kind, target, parameters). It depends
                   on nothing but the plan, the seed and the image's task and service names,
                   so the same seed on the same image gives the same sequence — it is
                   computed before the run starts.
    subject.py     the system under test: `Booted` in this process, or `Attached` through
                   its control socket (`control_fault` is the launcher's side of that).
    inject.py      `Injector`: how each fault kind is applied, and undone.
    probe.py       `Caller`: the prober and load threads calling a service.
    invariants.py  `Invariants`: what is checked during and after the run.
    record.py      RUN_DIR/chaos/injections.jsonl and the violations.
    history.py     the ledger workload's recorded operations and answers, checked (lost
                   acknowledged writes, answers the ledger never produced, adds run twice).
    run.py         `ChaosRun` / `run_plan`: boot or attach, play the schedule, clean up.
    report.py      faults by kind, violations with timestamps, restarts, recovery times,
                   verdict; as a dict (`--json`) or rich tables.

Fault kinds: task faults through the launcher (kill = SIGKILL, stop/cont = SIGSTOP/SIGCONT,
crash = the kernel answers the task's blocked system calls with PROTOCOL so the task library
raises inside the task's own code), cpu_hog / mem_hog processes beside a task (bounded in time
and size, reaped at the end), IPC faults inside the kernel on a service's gates (drop, delay,
duplicate, reorder, corrupt, timeout; kernel/core/faults.py), device faults through the HAL's
control socket when a HAL runs, and switch faults (ORe's own drop/corrupt/duplicate knobs,
through the launcher's `switch_faults` command and ORe's admin op `faults`).

The public surface is re-exported here; the modules are the implementation.
"""
from __future__ import annotations

from .history import Verdict
from .history import check as check_history
from .history import load as load_history
from .inject import Injector, Pending
from .invariants import Invariants
from .plan import (DEVICE_KINDS, SWITCH_KINDS, INVARIANTS, IPC_KINDS, KINDS, MAX_HOG_MIB, MAX_HOG_S,
                   TASK_KINDS, Check, FaultSpec, Plan, PlanError, check_scope, load_plan,
                   parse_plan, seconds)
from .probe import Caller
from .record import Record, Violation
from .report import build_report, pct, render_report
from .run import ChaosRun, run_plan
from .sequence import Injection, schedule
from .subject import PROBE_LABEL, Attached, Booted, Unsupported, control_fault

__all__ = [
    "DEVICE_KINDS", "SWITCH_KINDS", "INVARIANTS", "IPC_KINDS", "KINDS", "MAX_HOG_MIB", "MAX_HOG_S",
    "PROBE_LABEL", "TASK_KINDS",
    "Attached", "Booted", "Caller", "ChaosRun", "Check", "FaultSpec", "Injection", "Injector",
    "Invariants", "Pending", "Plan", "PlanError", "Record", "Unsupported", "Verdict", "Violation",
    "build_report", "check_history", "check_scope", "control_fault", "load_history", "load_plan", "parse_plan", "pct",
    "render_report", "run_plan", "schedule", "seconds",
]
