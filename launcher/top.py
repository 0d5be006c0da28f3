"""`l4run top`: a live, refreshing table of the running system's tasks, like top(1).

    l4run top [--interval S] [--sort COLUMN] [--once] [--json] [--run-dir DIR]

The data is `l4run ps --json`'s (the launcher's `ps` control command, `Launcher.cmd_ps`):
state, restarts, pid, CPU seconds and RSS from /proc (launcher/proc.py), and the kernel's per-task counts of
KERNEL_INFO (`ipc`: `calls` system calls, `sent`/`received` messages, `errors`, `faults`
MEM_FAULTs). Two samples `interval` seconds apart give the rates: IPC messages (sent +
received), system calls, page faults and errors per second, and CPU% (CPU seconds used over
the interval, per cent of one core). A task whose pid changed between the samples
(restarted) has its counters started over: its rates are over what its new incarnation did.

`--once` prints one table (or with `--json` one JSON list, for scripts) after one interval;
without it the table refreshes every interval until ^C (on a pipe: one table per interval,
like top -b).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import click

# column -> (heading, justify right); the JSON keys are the column names
COLUMNS: dict[str, tuple[str, bool]] = {
    "name": ("task", False), "pid": ("pid", True), "state": ("state", False),
    "restarts": ("restarts", True), "cpu_pct": ("CPU%", True), "rss_kb": ("RSS KiB", True),
    "ipc_per_s": ("IPC/s", True), "calls_per_s": ("sys/s", True),
    "faults_per_s": ("PF/s", True), "errors_per_s": ("err/s", True),
    "ipc": ("IPC", True), "faults": ("PF", True),
}
SORTS = tuple(COLUMNS)

Ask = Callable[..., dict[str, Any]]


def sample(ask: Ask, run_dir: str) -> dict[str, Any]:
    """One look at the system: when (monotonic seconds) and `ps`'s rows."""
    return {"t": time.monotonic(), "tasks": ask(run_dir, "ps")["tasks"]}


def _counts(row: dict[str, Any]) -> dict[str, int]:
    ipc = row.get("ipc") or {}
    return {"ipc": ipc.get("sent", 0) + ipc.get("received", 0), "calls": ipc.get("calls", 0),
            "faults": ipc.get("faults", 0), "errors": ipc.get("errors", 0)}


def rates(prev: dict[str, Any], cur: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `cur` with their rates since `prev` (None where a task is not running)."""
    dt = max(cur["t"] - prev["t"], 1e-6)
    before = {r["name"]: r for r in prev["tasks"]}
    out = []
    for r in cur["tasks"]:
        now = _counts(r)
        p = before.get(r["name"])
        same = p is not None and p.get("pid") == r.get("pid") and r.get("pid")
        then = _counts(p) if same and p is not None else dict.fromkeys(now, 0)
        row: dict[str, Any] = {"name": r["name"], "pid": r.get("pid"), "state": r["state"],
                               "restarts": r.get("restarts", 0), "rss_kb": r.get("rss_kb"),
                               "ipc": now["ipc"], "faults": now["faults"], "calls": now["calls"],
                               "errors": now["errors"]}
        running = bool(r.get("pid"))
        for k in ("ipc", "calls", "faults", "errors"):
            row[f"{k}_per_s"] = round(max(now[k] - then[k], 0) / dt, 1) if running else None
        cpu0 = p.get("cpu_s") if same and p is not None else None
        cpu1 = r.get("cpu_s")
        row["cpu_pct"] = (round(max(cpu1 - cpu0, 0.0) / dt * 100, 1)
                          if cpu0 is not None and cpu1 is not None else None)
        out.append(row)
    return out


def ordered(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Sorted by column `by`: names and states ascending, numbers descending, None last."""
    if by in ("name", "state"):
        return sorted(rows, key=lambda r: str(r[by]))
    return sorted(rows, key=lambda r: (r[by] is None, -(r[by] or 0), r["name"]))


def table(rows: list[dict[str, Any]], by: str, title: str) -> Any:
    from rich.table import Table
    t = Table(title=title)
    for col, (head, right) in COLUMNS.items():
        t.add_column(head + (" ▼" if col == by else ""), justify="right" if right else "left")
    for r in rows:
        t.add_row(*("-" if r[c] is None else str(r[c]) for c in COLUMNS))
    return t


def register(cli: click.Group, ask: Ask, find_run_dir: Callable[[str | None], str],
             run_dir_option: Any) -> None:
    @cli.command("top")
    @click.option("--interval", default=1.0, show_default=True, type=float,
                  help="seconds between samples (the rates are over this)")
    @click.option("--sort", "by", default="cpu_pct", show_default=True, type=click.Choice(SORTS),
                  help="the column to sort by")
    @click.option("--once", is_flag=True, help="one table after one interval, then exit")
    @click.option("--json", "as_json", is_flag=True, help="with --once: a JSON list of rows")
    @run_dir_option
    def top(interval: float, by: str, once: bool, as_json: bool, run_dir: str | None) -> None:
        """A live table of the tasks: IPC, system calls, page faults per second, CPU%, RSS."""
        if interval <= 0:
            raise click.BadParameter("must be > 0", param_hint="--interval")
        rd = find_run_dir(run_dir)
        prev = sample(ask, rd)
        if once or as_json:
            time.sleep(interval)
            rows = ordered(rates(prev, sample(ask, rd)), by)
            if as_json:
                click.echo(json.dumps(rows, indent=1))
            else:
                from rich.console import Console
                Console(width=None if sys.stdout.isatty() else 160).print(
                    table(rows, by, f"l4run top ({interval:g} s)"))
            return
        _live(ask, rd, prev, interval, by)


def _live(ask: Ask, rd: str, prev: dict[str, Any], interval: float, by: str) -> None:
    """Refresh the table in place every `interval` until ^C; on something that is not a
    terminal (a pipe, a log) print one table per interval instead, like top -b."""
    from rich.console import Console
    from rich.live import Live

    from .trace import interrupts
    interrupts()                            # ^C quits, even if our shell ignored it
    tty = sys.stdout.isatty()
    console = Console(width=None if tty else 160)
    with Live(table([], by, "l4run top"), screen=False, console=console, auto_refresh=False,
              transient=not tty) as live:
        try:
            while True:
                time.sleep(interval)
                cur = sample(ask, rd)
                shown = table(ordered(rates(prev, cur), by), by,
                              f"l4run top — {time.strftime('%H:%M:%S')}, every {interval:g} s, "
                              f"^C quits")
                if tty:
                    live.update(shown, refresh=True)
                else:
                    console.print(shown)
                prev = cur
        except KeyboardInterrupt:
            pass
