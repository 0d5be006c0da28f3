"""`l4run chaos PLAN` and `l4run bench chaos`: the command line of chaos runs, and the long run.

    l4run chaos PLAN [--image IMAGE | --run-dir DIR] [--seed N] [--duration S] [--json]
        boots IMAGE (or the plan's `chaos.image`) in RUN_DIR (default ./run/chaos-<image>),
        or attaches to the system running in DIR; shows a progress bar, ends with a report
        (rich tables, or one JSON object) and exits 1 on any invariant violation.
    l4run bench chaos [--json] [--duration S] [--seed N]
        `run_chaos_bench()`: ≥ 1,000 faults on the default image's own tasks (kills,
        crashes, hung servers, every IPC fault kind on the messages its clients send), with
        the ledger's workload at full pace and its history checked at the end; reports
        faults_injected, faults_by_task, violations, history_violations,
        checked_operations, kernel_crashes, recovery_ms_p50, recovery_ms_p99 against the
        targets.

The chaos machinery itself is the package `launcher.chaos` (the report's rendering too,
`launcher.chaos.report.render_report`), imported only when a command runs.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console

from .zygote import PROJECT_ROOT

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
DEFAULT = os.path.join(PROJECT_ROOT, "configs", "default.toml")
WORKLOAD = ["ledger-a", "ledger-b", "ledger-c"]      # the ledger's recording clients
SERVERS = ["ledger", "hello", "counter"]
CLIENTS = ["alice", "bob", "tally"]
_IPC = {"services": SERVERS}
BENCH_PLAN: dict[str, Any] = {
    "chaos": {"name": "bench", "seed": 1, "duration": "25s", "rate": 12.0, "recovery": "5s",
              "client_recovery": "12s", "settle": "2s"},
    "fault": [
        {"kind": "kill", "tasks": SERVERS + WORKLOAD + CLIENTS, "weight": 1.0},
        {"kind": "crash", "tasks": SERVERS + WORKLOAD + CLIENTS, "weight": 0.6},
        {"kind": "stop", "tasks": SERVERS + WORKLOAD, "for": "200ms", "weight": 0.3},
        {"kind": "drop", **_IPC, "probability": 0.3, "count": 6, "for": "1s"},
        {"kind": "delay", **_IPC, "delay": ["1ms", "50ms"], "count": 20, "for": "1s"},
        {"kind": "duplicate", **_IPC, "count": 20, "for": "1s"},
        {"kind": "corrupt", **_IPC, "bytes": 2, "count": 20, "for": "1s"},
        {"kind": "timeout", **_IPC, "probability": 0.5, "count": 10, "for": "1s"},
        {"kind": "reorder", **_IPC, "count": 20, "for": "1s"},
    ],
    "check": [{"task": t, "within": "14s"} for t in WORKLOAD],
    "history": {"clients": WORKLOAD, "server": "ledger"},
}
TARGETS = {"faults_injected": 1000, "violations": 0, "kernel_crashes": 0, "recovery_ms_p99": 1000,
           "checked_operations": 10_000}


def full_pace(image: Any) -> None:
    """The bench's workload: the ledger's clients without a pause between operations."""
    for t in image.tasks:
        if t.name in WORKLOAD:
            t.args = [t.args[0] if t.args else "8", "0"]


def run_chaos_bench(duration: float | None = None, seed: int | None = None,
                    image: str = DEFAULT) -> dict[str, Any]:
    """The long chaos run on the default image; restart budgets are lifted (we kill on
    purpose, many times). Answers the numbers the issue asks for, and the targets.
    `violations` counts the invariants' and the history's (history_violations: the
    history's alone, exactly)."""
    from .chaos import parse_plan, run_plan
    plan = parse_plan(BENCH_PLAN, "bench-plan")
    r = run_plan(plan, image_path=image, seed=seed, duration=duration, budgets=(10_000, 1.0),
                 edit=full_pace)
    kept = sum(v["invariant"] == "history" for v in r["violations"])
    violations = len(r["violations"]) - kept + r.get("history_violations", 0)
    checked = r.get("checked_operations", 0)
    return {"bench": "chaos", "image": os.path.relpath(image, PROJECT_ROOT),
            "seed": r["seed"], "duration_s": r["duration_s"],
            "faults_injected": r["faults_injected"], "faults": r["faults"],
            "faults_by_task": r["faults_by_task"],
            "ipc_faults_by_receiver": r["ipc_faults_by_receiver"],
            "violations": violations, "violation_list": r["violations"],
            "history_violations": r.get("history_violations", 0),
            "history_by_rule": r.get("history_by_rule", {}),
            "checked_operations": checked, "operations": r.get("operations", {}),
            "kernel_crashes": r["kernel_crashes"], "restarts": r["restarts"],
            "recoveries": r["recoveries"], "recovery_ms_p50": r["recovery_ms_p50"],
            "recovery_ms_p99": r["recovery_ms_p99"], "recovery_ms_max": r["recovery_ms_max"],
            "calls": r["calls"], "targets": TARGETS,
            "met": (r["faults_injected"] >= TARGETS["faults_injected"] and not violations
                    and not r["kernel_crashes"] and checked >= TARGETS["checked_operations"]
                    and (r["recovery_ms_p99"] or 0) <= TARGETS["recovery_ms_p99"])}


def register(cli: click.Group, bench: click.Group) -> None:
    """`l4run chaos` on `cli`, `l4run bench chaos` on `bench`."""
    _register_chaos(cli)
    _register_bench(bench)


def _register_chaos(cli: click.Group) -> None:
    from .cli import Fail, find_run_dir

    @cli.command("chaos")
    @click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
    @click.option("--image", default=None, type=click.Path(dir_okay=False),
                  help="boot this image for the run (default: the plan's chaos.image)")
    @click.option("--run-dir", "run_dir", default=None, metavar="DIR",
                  help="with --image: where to boot it; alone: the running system to attack")
    @click.option("--seed", type=int, default=None, help="override the plan's seed")
    @click.option("--duration", default=None, help="override the plan's duration (e.g. 30s)")
    @click.option("--json", "as_json", is_flag=True, help="the report as one JSON object")
    def chaos_cmd(plan_path: str, image: str | None, run_dir: str | None, seed: int | None,
                  duration: str | None, as_json: bool) -> None:
        """Run a chaos PLAN against a system; exit status 1 on any invariant violation."""
        from . import control
        from .chaos import PlanError, load_plan, render_report, seconds
        from .image import ImageError
        from .system import BootError
        try:
            plan = load_plan(plan_path)
            secs = seconds(duration, "--duration") if duration is not None else None
        except PlanError as e:
            for p in e.problems:
                click.echo(p, err=True)
            raise Fail(f"{plan_path}: {len(e.problems)} problem(s); nothing was run") from None
        except ValueError as e:
            raise Fail(str(e)) from None
        image = image or (None if run_dir else plan.image)
        if image is None:
            run_dir = find_run_dir(run_dir)
        elif run_dir is None:
            name = os.path.splitext(os.path.basename(image))[0]
            run_dir = os.path.abspath(os.path.join("run", f"chaos-{name}"))
        console = Console(stderr=True)
        total = secs if secs is not None else plan.duration
        report = _run_with_progress(plan, image, run_dir, seed, secs, total, console,
                                    show=console.is_terminal and not as_json,
                                    errors_=(PlanError, ImageError, BootError, control.NotRunning,
                                             OSError), fail=Fail)
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            render_report(report, Console())
        if report["violations"]:
            sys.exit(1)


def _register_bench(bench: click.Group) -> None:
    @bench.command("chaos")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--duration", default=None, type=float, help="seconds (default 25)")
    @click.option("--seed", default=None, type=int)
    def bench_chaos_cmd(as_json: bool, duration: float | None, seed: int | None) -> None:
        """≥ 1,000 faults on the default image's tasks, its ledger workload's history checked."""
        r = run_chaos_bench(duration, seed)
        if as_json:
            click.echo(json.dumps(r))
            return
        click.echo(f"chaos: {r['faults_injected']} faults in {r['duration_s']:g}s "
                   f"(seed {r['seed']}): {r['violations']} violations, {r['kernel_crashes']} "
                   f"kernel crashes, recovery median {r['recovery_ms_p50']} ms, "
                   f"p99 {r['recovery_ms_p99']} ms over {r['recoveries']} recoveries; "
                   f"{r['checked_operations']} operations checked, {r['history_violations']} "
                   f"history violations; targets {'met' if r['met'] else 'NOT met'}")
        for kind, n in r["faults"].items():
            click.echo(f"  {kind:10} {n}")
        click.echo("by task: " + ", ".join(f"{k} {n}" for k, n in r["faults_by_task"].items()))


def _run_with_progress(plan: Any, image: str | None, run_dir: str, seed: int | None,
                       secs: float | None, total: float, console: Console, show: bool,
                       errors_: tuple[type[BaseException], ...], fail: Any) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .chaos import PlanError, run_plan
    progress = Progress(TextColumn("[bold]chaos[/bold] {task.description}"), BarColumn(),
                        TextColumn("{task.fields[faults]} faults"), TimeRemainingColumn(),
                        console=console, transient=True, disable=not show)
    with progress:
        bar = progress.add_task(plan.name, total=total, faults=0)

        def tick(elapsed: float, _total: float, counts: dict[str, int]) -> None:
            progress.update(bar, completed=elapsed, faults=sum(counts.values()))
        try:
            return run_plan(plan, image_path=image, run_dir=run_dir, seed=seed,
                            duration=secs, progress=tick)
        except PlanError as e:
            for p in e.problems:
                console.print(p)
            raise fail(f"{plan.path}: {len(e.problems)} problem(s) against the system") from None
        except errors_ as e:
            raise fail(str(e)) from None
