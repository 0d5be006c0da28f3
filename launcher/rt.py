"""`l4run rt`: the DROPS resource managers of a running system, in one table.

    l4run rt [--json] [--run-dir DIR]

Asks (through the control socket; `Launcher.cmd_rt`) every CPU reservation manager
(`servers.rt.server:main`) for its `status` through its admin gate (label 0, which no task
holds): the mode (SCHED_DEADLINE, or the SCHED_FIFO fallback and why), the admitted sum
and the host's bound, each reservation (task, thread, budget/period, measured use, the
periods and deadline misses its job reported, throttles), the threads boosted for the
reserved jobs' path, and the refused requests with their reasons; and every block server
and ORe switch for their reservations (`rt_status`, servers/block and servers/ore), where
they have any.

Contract: one bounded call per server (CALL_MS); a server that does not answer is shown
with its error, never hangs the command.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

import click

from kernel.user import errors
from kernel.user.rpc import ADMIN_LABEL, RemoteError

if TYPE_CHECKING:
    from .system import Launcher

CALL_MS = 2_000
RT_RUN = "servers.rt.server:"
BLOCK_RUN = "servers.block.server:"
ORE_RUN = "servers.ore.server:"


def _admin(launcher: "Launcher", t: Any, proto: Any, op: str) -> dict[str, Any]:
    if t.state != "running":
        return {"error": f"{t.spec.name} is {t.state}"}
    if not t.spec.provides:
        return {"error": f"{t.spec.name} provides no service"}
    gate = launcher.service_gate(t.spec.provides[0], ADMIN_LABEL)
    try:
        stub: Any = proto.client(launcher.root, gate, timeout=CALL_MS)
        return dict(getattr(stub, op)())
    except (errors.L4Error, RemoteError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def status(launcher: "Launcher") -> dict[str, Any]:
    """Every manager's status by task name: {"cpu": {...}, "disk": {...}, "net": {...}}."""
    from servers.block.protocol import BLOCK
    from servers.ore.protocol import ORE
    from servers.rt.protocol import RT
    out: dict[str, dict[str, Any]] = {"cpu": {}, "disk": {}, "net": {}}
    for t in launcher.tasks.values():
        if t.spec.run.startswith(RT_RUN):
            out["cpu"][t.spec.name] = _admin(launcher, t, RT, "status")
        elif t.spec.run.startswith(BLOCK_RUN) and "rt_status" in BLOCK.ops:
            got = _admin(launcher, t, BLOCK, "rt_status")
            for disk, st in (got.items() if "error" not in got else [("", got)]):
                out["disk"][f"{t.spec.name}/{disk}" if disk else t.spec.name] = st
        elif t.spec.run.startswith(ORE_RUN) and "rt_status" in ORE.ops:
            out["net"][t.spec.name] = _admin(launcher, t, ORE, "rt_status")
    return out


def render(st: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, s in st.get("cpu", {}).items():
        if "error" in s:
            lines.append(f"cpu {name}: {s['error']}")
            continue
        lines.append(f"cpu {name}: mode {s['mode']} ({s['mode_reason']}); admitted "
                     f"{s['total']:.3f} of {s['bound']:.3f} CPUs")
        lines.append("  id task         tid     budget/period us  deadline  use    "
                     "periods  misses  worst_us  throttles")
        for r in s["reservations"]:
            lines.append(f"  {r['id']:<3}{r['task']:<13}{r['tid']:<8}"
                         f"{r['budget_us']:>7}/{r['period_us']:<10}{r['deadline_us']:>8}  "
                         f"{r['used']:<7.3f}{r['periods']:>7}{r['misses']:>8}"
                         f"{r['worst_us']:>10}{r['throttles']:>11}")
        if s.get("boosted"):
            how = {"fifo": "SCHED_FIFO", "nice": "nice -20",
                   "deadline": "SCHED_DEADLINE reservations of their own"}.get(
                       s.get("boost", "fifo"), str(s.get("boost")))
            lines.append(f"  boosted ({how}, the reserved jobs' path): " +
                         ", ".join(f"{k} {v} threads" for k, v in s["boosted"].items()))
        for f in s.get("refused", [])[-10:]:
            lines.append(f"  refused (client {f['label']}): {f['error']}: {f['reason']}")
    for kind in ("disk", "net"):
        for name, s in st.get(kind, {}).items():
            if "error" in s:
                lines.append(f"{kind} {name}: {s['error']}")
                continue
            lines.append(f"{kind} {name}: capacity {s.get('capacity')} {s.get('unit', '')}, "
                         f"reserved {s.get('reserved')}")
            for r in s.get("reservations", []):
                lines.append("  " + " ".join(f"{k}={v}" for k, v in r.items()))
            for f in s.get("refused", [])[-10:]:
                lines.append(f"  refused: {f}")
    return lines or ["no real-time managers in this system"]


def register(cli: click.Group, ask: Callable[..., dict[str, Any]],
             find_run_dir: Callable[[str | None], str], run_dir_option: Any) -> None:
    @cli.command("rt")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object")
    @run_dir_option
    def rt(as_json: bool, run_dir: str | None) -> None:
        """DROPS: CPU reservations (mode, use, deadline misses, refusals), disk and network
        reservations."""
        answer = ask(find_run_dir(run_dir), "rt")
        if as_json:
            click.echo(json.dumps(answer, indent=1))
        else:
            click.echo("\n".join(render(answer)))
