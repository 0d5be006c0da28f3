"""The report of a chaos run: one JSON-able dict, and its rendering as rich tables.

Contract: `build_report(run)` answers the keys docs/CHAOS.md "The report" lists — `plan`,
`seed`, `duration_s`, `run_dir`, `injections_file`, `scheduled`, `faults` (by kind, sorted),
`faults_injected`, `rules_armed`, `skipped`, `violations` (`t`, `ts`, `invariant`,
`message`), `kernel_crashes`, `restarts` (per task, during the run), `recoveries`,
`recovery_ms_p50`/`p99`/`max` (None without recoveries), `calls`, `faults_by_task` (a task
fault by its target, an IPC fault by the task that sent the message), `ipc_faults_by_receiver`
(the IPC faults by the task the message was for), with a
`[history]` table `checked_operations`, `operations`, `history_violations` (every one; the
first few per rule are in `violations` too) and `history_by_rule`, `verdict` ("pass" with
no violation, else "fail"); `l4run chaos --json` prints it as it is. `render_report` prints the
same for a terminal.
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from .run import ChaosRun


def pct(values: list[float], q: float) -> float:
    """The `q`th percentile (nearest rank, rounded); 0.0 of nothing."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def build_report(run: ChaosRun) -> dict[str, Any]:
    inv, inj = run.invariants, run.injector
    restarts = {n: r["restarts"] - inv.rows0.get(n, {}).get("restarts", 0)
                for n, r in inv.rows.items()}
    counts = inj.counts()
    recoveries = inv.recoveries
    violations = run.record.violations
    return {
        "plan": run.plan.name, "seed": run.seed, "duration_s": run.duration,
        "run_dir": run.sys.run_dir, "injections_file": run.record.path,
        "scheduled": len(run.injections),
        "faults": dict(sorted(counts.items())),
        "faults_injected": sum(counts.values()),
        "rules_armed": inj.applied.get("rules_armed", 0),
        "skipped": inj.skipped,
        "violations": [v.__dict__ for v in violations],
        "kernel_crashes": sum(v.invariant == "kernel_up" for v in violations),
        "restarts": restarts,
        "recoveries": len(recoveries),
        "recovery_ms_p50": round(statistics.median(recoveries), 1) if recoveries else None,
        "recovery_ms_p99": round(pct(recoveries, 99), 1) if recoveries else None,
        "recovery_ms_max": round(max(recoveries), 1) if recoveries else None,
        "calls": {n: c.calls for n, c in inv.callers.items()} |
                 {f"load{i}": c.calls for i, c in enumerate(inv.load)},
        "faults_by_task": inj.counts_by_task(),
        "ipc_faults_by_receiver": dict(sorted(inj.by_receiver.items())),
        **_history(run),
        "verdict": "fail" if violations else "pass",
    }


def _history(run: ChaosRun) -> dict[str, Any]:
    v = run.history
    if v is None:
        return {}
    return {"checked_operations": v.checked_operations, "operations": v.operations,
            "history_violations": v.total, "history_by_rule": dict(v.counts)}


def render_report(r: dict[str, Any], console: Console) -> None:
    """The report `r` as rich tables: faults by kind, violations, restarts, recovery,
    skipped injections, the record's path, the verdict."""
    from rich.table import Table
    t = Table(title=f"chaos '{r['plan']}'  seed {r['seed']}  {r['duration_s']:g}s  —  "
                    f"{r['faults_injected']} faults", title_justify="left")
    t.add_column("fault kind")
    t.add_column("injected", justify="right")
    for kind, n in r["faults"].items():
        t.add_row(kind, str(n))
    console.print(t)
    if r["violations"]:
        v = Table(title="invariant violations", title_justify="left", style="red")
        for col in ("t (s)", "invariant", "what"):
            v.add_column(col)
        for x in r["violations"]:
            v.add_row(f"{x['t']:.3f}", x["invariant"], x["message"])
        console.print(v)
    if r.get("faults_by_task"):
        console.print("faults by task: " + ", ".join(f"{k} {v}" for k, v in
                                                      r["faults_by_task"].items()))
    if "checked_operations" in r:
        console.print(f"history: {r['checked_operations']} operations checked, "
                      f"{r['history_violations']} violations {r['history_by_rule'] or ''}")
    restarts = ", ".join(f"{k} {v}" for k, v in r["restarts"].items() if v) or "none"
    console.print(f"restarts: {restarts}")
    if r["recoveries"]:
        console.print(f"recovery: median {r['recovery_ms_p50']} ms, p99 {r['recovery_ms_p99']} ms "
                      f"(max {r['recovery_ms_max']} ms, {r['recoveries']} recoveries)")
    if r["skipped"]:
        console.print(f"[dim]skipped {len(r['skipped'])}: {'; '.join(r['skipped'][:3])}[/dim]")
    if r.get("injections_file"):
        console.print(f"[dim]every injection: {r['injections_file']}[/dim]")
    style = "bold green" if r["verdict"] == "pass" else "bold red"
    console.print(f"verdict: [{style}]{r['verdict'].upper()}[/{style}]"
                  + (f" ({len(r['violations'])} violation(s))" if r["violations"] else ""))
