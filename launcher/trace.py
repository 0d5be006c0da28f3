"""`l4run trace`: record the kernel's IPC trace for a while, write it for Perfetto.

    l4run trace [--duration S] [--tasks A,B] [-o FILE] [--svg FILE] [--summary] [--run-dir DIR]

The launcher holds the kernel capability; `Launcher.cmd_trace` (launcher/system.py) passes
the control command on as the TRACE system call (kernel/ABI.md): `on` for the duration,
`off`, then `drain` until the ring is empty. The kernel's events (kernel/core/trace.py)
become Chrome trace-event JSON, which ui.perfetto.dev and chrome://tracing open:

- one process track per task (`pid` = the kernel's task id; 0 is the kernel itself), one
  thread track per L4 thread (`tid` = the thread's kernel id), named by `M` metadata events;
- a complete slice (`ph: "X"`) per call on the caller's track from its send to the reply
  (or the error that ended it), and one on the server's track from the delivery to its
  reply; a flow arrow (`ph: "s"` → `"f"`) from the caller's slice to the server's and one
  back with the reply;
- a call that ends in an error is a slice named with the error (`call hello label 1 →
  PEER_DIED`); a task's death ends the slices of what it was serving, calling or faulting on
  (`… (died)`);
- a page fault sent to a pager is a slice on the faulting thread (`page fault 0x… → mapped`,
  or the error or `exception` that ended it) with flow arrows to the pager's `serve kernel
  (page fault)` slice and back; a refill is an instant;
- a server thread holding several calls at once gets extra lanes (tracks "thread T · lane
  n") for the serve slices that would overlap without nesting;
- instants (`ph: "i"`) for one-way sends, error answers, alien reports, trapped Linux system
  calls, IRQs, task deaths and chaos injections.

Pairing (the kernel's contract): a thread has at most one call in flight, so a caller's
`send` … `reply`/`error` pair by its thread id; a server's delivery and reply pair by
(server thread, reply id).

`--svg FILE` also draws the trace as a timeline picture (launcher/timeline.py), for where
Perfetto's UI is not at hand.

`--summary` prints the top talkers (caller → server by calls) and the slowest calls
instead of writing a file.

How long: `--duration S`, or `--until-key` — until a key is pressed on a terminal (stdin
in cbreak mode, one key), else until a line or end of input on stdin. Either way ^C
(SIGINT) ends the recording early and the trace is still turned off, drained and written.
The ring is bounded (`--capacity`): what did not fit is counted by the kernel and reported
(`dropped` in the output line and in the file's `otherData`).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Callable

import click

from kernel.abi import Proto

DRAIN_LIMIT = 4096
LANE = 1_000_000        # the tid of lane n of thread T is T + LANE * n (see _Chrome.lanes)


def interrupts() -> None:
    """^C is how these commands end: make SIGINT raise KeyboardInterrupt even when the shell
    that started us ignored it (a background job of a non-interactive shell inherits
    SIG_IGN, and Python then leaves it so)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def record(ask: Callable[..., dict[str, Any]], run_dir: str, wait: Callable[[], None],
           capacity: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trace the running system in `run_dir` while `wait()` runs (^C ends it early); the
    kernel's events and its final status (`recorded`, `dropped`, `capacity`)."""
    interrupts()
    ask(run_dir, "trace", action="on", limit=capacity)
    try:
        try:
            wait()
        except KeyboardInterrupt:
            pass                        # ^C ends the recording, not the command
    finally:
        ask(run_dir, "trace", action="off")
    events: list[dict[str, Any]] = []
    while True:
        got = ask(run_dir, "trace", action="drain", limit=DRAIN_LIMIT)
        if not got["events"]:
            return events, {k: got[k] for k in ("capacity", "recorded", "dropped")}
        events += got["events"]


def for_seconds(duration: float) -> Callable[[], None]:
    return lambda: time.sleep(duration)


def _until_key() -> None:
    """Until a key is pressed (a terminal on stdin), else until a line or EOF on stdin."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        click.echo("tracing; Enter, end of input or ^C stops", err=True)
        sys.stdin.readline()
        return
    import termios
    import tty
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)               # flushes what was typed before: say so only after it
        click.echo("tracing; press a key (or ^C) to stop", err=True)
        os.read(fd, 1)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def only(events: list[dict[str, Any]], tasks: set[str]) -> list[dict[str, Any]]:
    """The events in which one of the named tasks takes part."""
    return [e for e in events if e.get("name") in tasks or e.get("to_name") in tasks]


class _Chrome:
    """The conversion: kernel events in, trace events out (`events`)."""

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.out: list[dict[str, Any]] = []
        self.procs: dict[int, str] = {0: "kernel"}
        self.threads: dict[tuple[int, int], str] = {}
        self.calls: dict[int, dict[str, Any]] = {}               # caller thread -> its call
        self.serving: dict[tuple[int, int], dict[str, Any]] = {}  # (server th, reply) -> call
        self.faults: dict[int, dict[str, Any]] = {}              # faulting th -> its `pf pager`
        self.paging: dict[int, list[dict[str, Any]]] = {}        # pager th -> faults sent to it
        self.flow = 0

    def us(self, ns: int) -> float:
        return (ns - self.t0) / 1000.0

    def see(self, task: int, th: int, name: str) -> None:
        self.procs.setdefault(task, name)
        self.threads.setdefault((task, th), "kernel" if th == 0 else f"thread {th}")

    def add(self, ph: str, name: str, task: int, th: int, ts: int, **more: Any) -> dict[str, Any]:
        e = {"ph": ph, "name": name, "cat": "ipc", "pid": task, "tid": th, "ts": self.us(ts),
             **more}
        self.out.append(e)
        return e

    def instant(self, e: dict[str, Any], name: str) -> None:
        args = {k: v for k, v in e.items() if k not in ("ts", "th", "task")}
        self.add("i", name, e["task"], e["th"], e["ts"], s="t", args=args)

    def event(self, e: dict[str, Any]) -> None:
        self.see(e["task"], e["th"], e["name"])
        if "to_task" in e:
            self.see(e["to_task"], e["to_th"], e["to_name"])
        getattr(self, "ev_" + e["ev"], self.other)(e)

    def ev_send(self, e: dict[str, Any]) -> None:
        if e["call"] and e["th"]:
            self.calls[e["th"]] = {"send": e}
        elif not e["call"]:
            self.instant(e, f"send label {e['label']}")

    def ev_recv(self, e: dict[str, Any]) -> None:
        call: dict[str, Any] | None = self.calls.get(e["th"]) if e["th"] else {"send": None}
        if not e["call"] or call is None:
            self.instant(e | {"task": e["to_task"], "th": e["to_th"]},
                         f"recv from {e['name']}")
            return
        call["recv"] = e
        self.serving[(e["to_th"], e["reply"])] = call

    def ev_reply(self, e: dict[str, Any]) -> None:
        call = self.serving.pop((e["th"], e.get("reply", 0)), None)
        if call is None:
            self.instant(e, f"reply to {e['to_name']}")
            return
        recv = call["recv"]
        what = f"{recv['to_name']} label {recv['label']}"
        sargs = {"caller": recv["name"], "label": recv["label"], "proto": recv["proto"],
                 "size": recv["size"], "reply_size": e["size"]}
        serve = self.add("X", f"serve {_caller(recv)}", e["task"], e["th"], recv["ts"],
                         dur=self.us(e["ts"]) - self.us(recv["ts"]), args=sargs)
        send = call.get("send")
        if send is None or not send["th"]:
            self.kernel_call(recv, e, serve)   # a kernel call (page fault, alien report)
            return
        self.calls.pop(send["th"], None)
        self.add("X", f"call {what}", send["task"], send["th"], send["ts"],
                 dur=self.us(e["ts"]) - self.us(send["ts"]), args={**sargs, "server": recv["to_name"]})
        self.arrows(send, send["ts"], recv, recv["ts"], e, serve)

    def arrows(self, src: dict[str, Any], s_ts: int, recv: dict[str, Any], f_ts: int,
               reply: dict[str, Any], serve: dict[str, Any]) -> None:
        """A flow from `src`'s track at `s_ts` to the server's slice `serve` (delivered at
        `f_ts`), and one back from the server's `reply` to `src`'s track. The server's ends
        are kept with `serve` (`_ends`) so that they move with it to another lane."""
        server = {"task": recv["to_task"], "th": recv["to_th"]}
        ends = serve.setdefault("_ends", [])
        for a, b, t0, t1 in ((src, server, s_ts, f_ts), (server, src, reply["ts"], reply["ts"])):
            self.flow += 1
            s_ev = self.add("s", "ipc", a["task"], a["th"], t0, id=self.flow)
            f_ev = self.add("f", "ipc", b["task"], b["th"], t1, id=self.flow, bp="e")
            ends.append(f_ev if b is server else s_ev)

    def lanes(self) -> None:
        """A server that holds several calls open at once (it took the next before answering
        the last, as the L4Linux personality does for a waiting process) has serve slices that
        overlap without nesting; one track cannot show them (Perfetto stacks a track's slices).
        Each such slice, with its flow ends, goes to the first lane of its thread where it
        nests: a track `tid + LANE * n` named "thread T · lane n"."""
        by_track: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for e in self.out:
            if e["ph"] == "X":
                by_track.setdefault((e["pid"], e["tid"]), []).append(e)
        for (pid, tid), slices in by_track.items():
            open_ends: list[list[float]] = [[]]          # per lane: end times of open slices
            for x in sorted(slices, key=lambda x: (x["ts"], -x["dur"])):
                end = x["ts"] + x["dur"]
                for n, stack in enumerate(open_ends):
                    while stack and stack[-1] <= x["ts"]:
                        stack.pop()
                    if not stack or end <= stack[-1]:
                        break
                else:
                    n = len(open_ends)
                    open_ends.append([])
                open_ends[n].append(end)
                if n:
                    lane = tid + LANE * n
                    self.threads.setdefault((pid, lane), f"{self.threads[(pid, tid)]} · lane {n}")
                    for moved in [x, *x.get("_ends", [])]:
                        moved["tid"] = lane
        for e in self.out:
            e.pop("_ends", None)

    def kernel_call(self, recv: dict[str, Any], reply: dict[str, Any],
                    serve: dict[str, Any]) -> None:
        """A pager answered a page-fault call: arrows from the faulting thread and back (the
        oldest fault sent to that pager thread before the call reached it)."""
        if recv["proto"] != Proto.PAGE_FAULT:
            return
        queue = self.paging.get(recv["to_th"], [])
        for i, pf in enumerate(queue):
            if pf["ts"] <= recv["ts"]:
                del queue[i]
                self.arrows(pf, pf["ts"], recv, recv["ts"], reply, serve)
                return

    def ev_pf(self, e: dict[str, Any]) -> None:
        """A fault sent to a pager is a slice on the faulting thread until it is resolved."""
        how = e["how"]
        if how == "pager":
            self.faults[e["th"]] = e
            self.paging.setdefault(e["to_th"], []).append(e)
            return
        start = self.faults.pop(e["th"], None)
        if start is None:               # a refill, or an exception without a pager
            self.instant(e, f"page fault {how} 0x{e['vaddr']:x}")
            return
        self.fault_slice(start, e["ts"], how)

    def fault_slice(self, pf: dict[str, Any], end: int, how: str) -> None:
        self.add("X", f"page fault 0x{pf['vaddr']:x} → {how}", pf["task"], pf["th"], pf["ts"],
                 dur=self.us(end) - self.us(pf["ts"]),
                 args={"vaddr": pf["vaddr"], "access": pf["access"], "pager": pf["to_name"],
                       "resolution": how})

    def ev_death(self, e: dict[str, Any]) -> None:
        """A task died: what it was serving, calling or faulting on ends here."""
        dead = e["task"]
        for key, call in list(self.serving.items()):
            recv = call["recv"]
            if recv["to_task"] == dead:
                del self.serving[key]
                self.add("X", f"serve {_caller(recv)} (died)", dead, recv["to_th"], recv["ts"],
                         dur=self.us(e["ts"]) - self.us(recv["ts"]),
                         args={"caller": recv["name"], "label": recv["label"], "died": True})
        for th, call in list(self.calls.items()):
            send = call["send"]
            if send["task"] == dead:
                del self.calls[th]
                self.add("X", f"call label {send['label']} (died)", dead, th, send["ts"],
                         dur=self.us(e["ts"]) - self.us(send["ts"]), args={"died": True})
        for th, pf in list(self.faults.items()):
            if pf["task"] == dead:
                del self.faults[th]
                self.fault_slice(pf, e["ts"], "died")
        self.instant(e, f"death of {e['name']}")

    def ev_error(self, e: dict[str, Any]) -> None:
        call = self.calls.pop(e["th"], None)
        if call is not None:
            send, recv = call["send"], call.get("recv")
            server = f"{recv['to_name']} " if recv else ""
            self.add("X", f"call {server}label {send['label']} → {e['err']}", e["task"], e["th"],
                     send["ts"], dur=self.us(e["ts"]) - self.us(send["ts"]),
                     args={"err": e["err"], "reason": e["reason"], "label": send["label"],
                           "server": recv["to_name"] if recv else None})
        pf = self.faults.pop(e["th"], None)
        if pf is not None:
            self.fault_slice(pf, e["ts"], e["err"])
        self.instant(e, e["err"])

    def other(self, e: dict[str, Any]) -> None:
        names = {"chaos": lambda: f"chaos {e['kind']}", "irq": lambda: f"irq {e['irq']}",
                 "alien": lambda: f"alien {e['call']} {e['phase']}",
                 "linux": lambda: f"linux syscall {e['nr']}"}
        self.instant(e, names.get(e["ev"], lambda: e["ev"])())

    def metadata(self) -> list[dict[str, Any]]:
        meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                 "args": {"name": f"{name} (task {pid})" if pid else name}}
                for pid, name in sorted(self.procs.items())]
        meta += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": th, "args": {"name": name}}
                 for (pid, th), name in sorted(self.threads.items())]
        return meta


def _caller(recv: dict[str, Any]) -> str:
    """Who a delivered message came from: a task, or the kernel and what it reports."""
    if recv["th"] or recv["proto"] >= 0:
        return str(recv["name"])
    try:
        return f"kernel ({Proto(recv['proto']).name.lower().replace('_', ' ')})"
    except ValueError:
        return "kernel"


def to_chrome(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Chrome trace-event JSON (the object form) of the kernel's events."""
    conv = _Chrome(events[0]["ts"] if events else 0)
    for e in events:
        conv.event(e)
    conv.lanes()
    return {"traceEvents": conv.metadata() + conv.out, "displayTimeUnit": "ns",
            "otherData": {"source": "l4run trace", "kernel_events": len(events)}}


def summarize(trace: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """Top talkers (caller → server, by calls) and the slowest calls of a converted trace."""
    calls = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"].startswith("call ")]
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    pairs: dict[tuple[str, str], list[float]] = {}
    for c in calls:
        key = (names.get(c["pid"], str(c["pid"])), c["args"].get("server") or "?")
        pairs.setdefault(key, []).append(c["dur"])
    talkers = sorted(pairs.items(), key=lambda kv: -len(kv[1]))[:top]
    slowest = sorted(calls, key=lambda c: -c["dur"])[:top]
    return {
        "talkers": [{"caller": a, "server": b, "calls": len(d), "mean_us": round(sum(d) / len(d), 1),
                     "max_us": round(max(d), 1)} for (a, b), d in talkers],
        "slowest": [{"caller": names.get(c["pid"], str(c["pid"])), "call": c["name"][5:],
                     "us": round(c["dur"], 1), "at_ms": round(c["ts"] / 1000, 3)} for c in slowest],
    }


def render(summary: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    t1 = Table(title="top talkers")
    for col in ("caller", "server", "calls", "mean µs", "max µs"):
        t1.add_column(col, justify="right" if "µs" in col or col == "calls" else "left")
    for r in summary["talkers"]:
        t1.add_row(r["caller"], r["server"], str(r["calls"]), f"{r['mean_us']:.1f}", f"{r['max_us']:.1f}")
    t2 = Table(title="slowest calls")
    for col in ("caller", "call", "µs", "at ms"):
        t2.add_column(col, justify="right" if col in ("µs", "at ms") else "left")
    for r in summary["slowest"]:
        t2.add_row(r["caller"], r["call"], f"{r['us']:.1f}", f"{r['at_ms']:.3f}")
    return Group(t1, t2)


def register(cli: click.Group, ask: Callable[..., dict[str, Any]],
             find_run_dir: Callable[[str | None], str], run_dir_option: Any) -> None:
    @cli.command("trace")
    @click.option("--duration", default=1.0, show_default=True, type=float, help="seconds to record")
    @click.option("--until-key", is_flag=True, help="record until a key is pressed (or Enter/EOF on a pipe)")
    @click.option("--tasks", default=None, help="only events these tasks (comma-separated) take part in")
    @click.option("-o", "--output", default="trace.json", show_default=True, help="the trace file")
    @click.option("--summary", is_flag=True, help="print top talkers and slowest calls instead")
    @click.option("--capacity", default=0, type=int, help="the kernel's ring, in events (0: 65536)")
    @click.option("--svg", "svg_out", default=None, metavar="FILE",
                  help="also draw the trace as an SVG timeline (launcher/timeline.py)")
    @run_dir_option
    def trace(duration: float, until_key: bool, tasks: str | None, output: str, summary: bool,
              capacity: int, svg_out: str | None, run_dir: str | None) -> None:
        """Record the kernel's IPC trace; write Chrome trace-event JSON (open it in ui.perfetto.dev)."""
        rd = find_run_dir(run_dir)
        events, st = record(ask, rd, _until_key if until_key else for_seconds(duration), capacity)
        if tasks:
            events = only(events, {t.strip() for t in tasks.split(",") if t.strip()})
        chrome = to_chrome(events)
        chrome["otherData"].update(recorded=st["recorded"], dropped=st["dropped"],
                                   capacity=st["capacity"])
        dropped = (f", {st['dropped']} dropped (the ring holds {st['capacity']})"
                   if st["dropped"] else "")
        if summary:
            from rich.console import Console
            Console().print(render(summarize(chrome)))
            if dropped:
                click.echo(dropped[2:])
            return
        with open(output, "w", encoding="utf-8") as f:
            json.dump(chrome, f)
        n = sum(1 for e in chrome["traceEvents"] if e["ph"] == "X")
        click.echo(f"{output}: {len(events)} kernel events, {n} slices{dropped}")
        if svg_out:
            from .timeline import svg
            with open(svg_out, "w", encoding="utf-8") as f:
                f.write(svg(chrome))
            click.echo(f"{svg_out}: the timeline")
