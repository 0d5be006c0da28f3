"""`l4run bench rt`: the DROPS player under hogs, with its reservations and without.

    run_rt(periods=10_000, latency_ms=2.0) -> {"periods", "misses_reserved",
        "misses_best_effort", "disk_p99_ms_reserved", "disk_p99_ms_best_effort",
        "net_share_reserved", "net_share_best_effort", ...}
    l4run bench rt [--json] [--periods N] [--latency-ms MS]

Two boots of configs/drops.toml (from a temporary run directory each), the player's
arguments set to `periods` periods of 10 ms (10,000 periods: 100 s per run); the player is
attached (`l4run attach`) once the disk's latency is set, so every period sees it:
1. reserved: the player reserves CPU (SCHED_DEADLINE), disk (a deadline per request) and
   network (a share of ORe's shaped uplink) before it starts;
2. best effort: the same player, the same hogs (L4Linux's: two busybox CPU loops, two dd
   loops writing to ext2 on the same disk, ping floods to the uplink; beside them the native
   flood task), no reservation (so no boosting of the servers either).
The HAL disk is given `latency_ms` per request (`l4run faults disk0 latency_ms=...`) so
that the disk hog really queues. The player's own counts are the numbers: periods,
deadline misses (work ended after release + 10 ms), the p99 of its disk reads' latency
(submit to completion, timed by the block server: the player reads one period ahead, as
servers/rt/player.py says why; `disk_wait_p99_ms_*`: how long it waited for its data in a
period), and net_share (bytes ORe forwarded for it / bytes it offered; its reserved rate is
what it offers). net_share_reserved target >= 0.95, misses_reserved = 0,
misses_best_effort > 0.

`late_heads_ms_reserved`: the late periods that began on time — each cascade's first (the
others start late because the one before overran) — their count and mean phases.

The host's floor (`host_misses`, `host_periods`, `host_worst_late_us`): in the reserved
boot, once the player is done, the same period, budget, CPU work and device wait in a
native SCHED_DEADLINE thread with no IPC at all, under the same hogs — the misses the host
alone causes (`host_late_at_s`: when its first 20 late periods began, s from its start).
`steal_share_reserved`, `_best_effort`, `_host`: the share of the CPUs the
hypervisor took while each ran (/proc/stat's steal). `misses_reserved_steal`,
`host_misses_steal`: of those misses, the ones whose period saw the hypervisor take CPU time
(StealWatch: /proc/stat's per-CPU steal every 10 ms, its resolution a 10 ms tick) — a vCPU
that does not run stalls every thread on it, whatever its class.

`rt_port_reserved` `{moves, first, player}`: the kernel's real-time port in the reserved
boot (KERNEL_INFO `stats.rt_moves`: threads that moved there; `rt_first`: times the kernel
served it in the middle of another port's messages) and whether the player's thread was on
it (`player`: true, or the kernel's reason for refusing it).

Diagnosis (`late_stages_ms_reserved`, `late_stages`): where the reserved run's late periods'
disk reads went, from the player's late periods in host time, the block server's RT-SLOW
lines and the HAL disk's per-job stage times (its `trace` knob, set with the latency).
"""
from __future__ import annotations

import bisect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import click

from kernel.user.testing import PROJECT_ROOT

from .bench_dde_nic import booted, wait_record
from .proc import steal_mark, steal_share

IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "configs", "drops.toml")
PERIOD_US = 10_000
TRACE_JOBS = 40_000       # the HAL disk's queue jobs whose stage times the bench asks for
COMPUTE_US, BUDGET_US = 2000, 5000    # the player's work per period and CPU budget (its args)


STEAL_EVERY_S = 0.01      # StealWatch's sampling: /proc/stat counts steal in 10 ms ticks
CLK_TCK = os.sysconf("SC_CLK_TCK")   # /proc/stat's unit


class StealWatch:
    """When the hypervisor took CPU time from this machine: a thread reads each CPU's steal
    from /proc/stat every STEAL_EVERY_S and keeps the intervals in which one grew, as
    (from, to, ms of the CPU that lost most). The thread runs under SCHED_FIFO 1 where it may
    (under the hogs an ordinary thread wakes late, which would blur the intervals): below the
    boosted servers, above the ordinary class; ≈ 20 µs a read."""

    def __init__(self) -> None:
        self.stolen: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steal-watch", daemon=True)

    def __enter__(self) -> "StealWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))   # this thread only
        except OSError:
            pass
        fd = os.open("/proc/stat", os.O_RDONLY)
        try:
            t, ticks = time.monotonic(), self._read(fd)
            while not self._stop.wait(STEAL_EVERY_S):
                t1, ticks1 = time.monotonic(), self._read(fd)
                grew = max((b - a for a, b in zip(ticks, ticks1)), default=0)
                if grew > 0:
                    self.stolen.append((t, t1, grew * 1e3 / CLK_TCK))
                t, ticks = t1, ticks1
        finally:
            os.close(fd)

    @staticmethod
    def _read(fd: int) -> list[int]:
        """Each CPU's steal in ticks: the 8th number of /proc/stat's cpuN lines (they come
        first: one read of its start)."""
        text = os.pread(fd, 8192, 0).decode()
        return [int(ln.split()[8]) for ln in text.splitlines()
                if ln.startswith("cpu") and ln[3:4].isdigit()]

    def during(self, t0: float, t1: float) -> float:
        """Ms of steal (the CPU that lost most, per interval) in intervals overlapping
        [t0, t1] (monotonic s)."""
        return sum(ms for a, b, ms in self.stolen if a < t1 and b > t0)

    def count(self, spans: list[tuple[float, float]]) -> int:
        """How many of the spans (a late period: its release to its end) saw steal."""
        return sum(1 for a, b in spans if self.during(a, b) > 0)


def _image(periods: int, reserve: bool) -> tuple[str, str]:
    """drops.toml without its player, and the player's [[task]] as a snippet of its own."""
    with open(IMAGE) as f:
        text = f.read()
    seconds = periods * PERIOD_US / 1e6
    args = f'args = ["{PERIOD_US}", "{seconds:g}", "{1 if reserve else 0}", "16", ' \
           f'"{COMPUTE_US}", "1250", "{BUDGET_US}"]'
    text = re.sub(r'args = \["10000", "60", "1", [^\n]*\]', args, text)
    # Booted from a temporary directory: the image's relative file names (the disk's ext2,
    # which linux's dd writes) are made absolute, relative to configs/ as they were.
    here = os.path.dirname(IMAGE)
    text = re.sub(r'image = "([^"/][^"]*)"',
                  lambda m: f'image = "{os.path.normpath(os.path.join(here, m.group(1)))}"', text)
    start = text.index('[[task]]\nname = "player"')
    nxt = re.compile(r"^\[", re.M).search(text, start + 1)     # the next table of any kind
    end = len(text) if nxt is None else nxt.start()
    return text[:start] + text[end:], text[start:end]


def host_floor(periods: int, latency_ms: float) -> dict[str, Any]:
    """The host's own floor: a native thread under SCHED_DEADLINE with the player's period
    and budget doing the player's work with no IPC, no L4Py server and no kernel process —
    it sleeps `latency_ms` (the device's time) and spins COMPUTE_US of CPU per period.
    Run under the same hogs right after the reserved player: its misses are those the host
    alone causes (the hypervisor's steal, the host kernel), a floor no design on this host
    gets under."""
    from servers.rt import hostsched
    from servers.rt.client import Periodic
    from servers.rt.demo import spin_cpu
    hostsched.set_deadline(0, BUDGET_US * 1000, PERIOD_US * 1000, PERIOD_US * 1000)
    mark = steal_mark()
    late: list[tuple[float, float]] = []          # late periods: release .. end
    with StealWatch() as watch:
        time.sleep(latency_ms / 1e3)              # one period's work unmeasured, as the
        spin_cpu(COMPUTE_US)                      # player does its own before it plays
        job = Periodic(PERIOD_US)
        begin = job.release
        while job.periods < periods:
            time.sleep(latency_ms / 1e3)
            spin_cpu(COMPUTE_US)
            release = job.release
            if not job.next():
                late.append((release, time.monotonic()))
    return {"periods": job.periods, "misses": job.misses, "worst_us": int(job.worst * 1e6),
            "steal_share": steal_share(mark), "steal_misses": watch.count(late),
            "late_at_s": [round(a - begin, 3) for a, _ in late[:20]]}


def _host_floor_process(periods: int, latency_ms: float) -> dict[str, Any]:
    """host_floor in a process of its own (its thread under SCHED_DEADLINE, this one not)."""
    code = ("import json,sys; from launcher.bench_rt import host_floor; "
            "print(json.dumps(host_floor(int(sys.argv[1]), float(sys.argv[2]))))")
    try:
        p = subprocess.run([sys.executable, "-c", code, str(periods), f"{latency_ms:g}"],
                           cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=periods * PERIOD_US / 1e6 + 60)
    except subprocess.TimeoutExpired:
        return {"error": "the host floor's loop did not end in time"}
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    return dict(json.loads(p.stdout))


def run_one(periods: int, reserve: bool, latency_ms: float,
            floor_periods: int = 0) -> dict[str, Any]:
    """One boot: the player (reserved or not); with `floor_periods`, then the host floor
    under the same hogs (got["host"])."""
    tag = "rt-res" if reserve else "rt-be"
    system, player = _image(periods, reserve)
    with booted(system, tag) as (l4run, rd):
        if latency_ms:
            # Through `l4run faults`, a process that ends: a control connection to the HAL
            # held open by this process for the whole run was measured to cost the player
            # ten times the deadline misses (the HAL is among the boosted servers). Before
            # the player starts: under the hogs this command alone takes up to 20 s, and
            # every period before it would run on a disk without the latency.
            _l4run(l4run, "faults", "disk0", f"latency_ms={latency_ms:g}", f"trace={TRACE_JOBS}",
                   "--run-dir", rd)
        snippet = os.path.join(rd, "player.toml")
        with open(snippet, "w") as f:
            f.write(player)
        with StealWatch() as watch:
            _l4run(l4run, "attach", snippet, "--run-dir", rd)
            mark = steal_mark()
            log = os.path.join(rd, "logs", "player.log")
            got = wait_record(log, "RT-PLAYER", periods * PERIOD_US / 1e6 + 90)
        if "error" in got:
            got["error"] = _player_stuck(rd, log, got["error"])
        # each late period from its release to its end (release + 10 ms + its lateness)
        got["steal_misses"] = watch.count([(at[0], at[0] + PERIOD_US / 1e6 + st[1] / 1e3)
                                           for at, st in zip(got.get("late_at", []),
                                                             got.get("stalls", []))])
        got["steal_share"] = steal_share(mark)    # the player's start-up included: an upper bound
        got["kernel_rt"] = _kernel_rt(rd)
        if floor_periods:
            got["host"] = _host_floor_process(floor_periods, latency_ms)
        if reserve and "late_at" in got:
            got["late_stages"] = late_stages(got, _slow_calls(rd), _disk_jobs(rd))
    got.pop("late_at", None)
    return got


def _player_stuck(rd: str, log: str, error: str) -> str:
    """`error` (no result in time) with where the player is: its state in `l4run ps` and, if
    it still runs, its threads' stacks (SIGUSR1, kernel/user/task.py) from the log's end."""
    from .control import request
    try:
        rows = request(rd, "ps").get("tasks", [])
        row: dict[str, Any] = next((t for t in rows if t.get("name") == "player"), {})
    except Exception as e:                 # noqa: BLE001 - diagnosis only: the error stands
        return f"{error}\n(no ps: {e})"
    if not row.get("pid"):
        return f"{error}\nplayer: {row.get('state', 'not in ps')}"
    seen = os.path.getsize(log) if os.path.exists(log) else 0
    os.kill(row["pid"], signal.SIGUSR1)
    time.sleep(1.0)
    with open(log, errors="replace") as f:
        f.seek(seen)
        return f"{error}\nplayer runs (pid {row['pid']}); its stacks:\n{f.read()[-6000:]}"


def _kernel_rt(rd: str) -> dict[str, Any]:
    """The kernel's real-time port counters (`stats.rt_moves`: threads that moved there;
    `rt_first`: switches to it in the middle of another port's messages)."""
    from .control import request
    try:
        ks = request(rd, "status").get("kernel_stats", {})
    except Exception:                      # noqa: BLE001 - diagnosis only: the numbers stand
        return {}
    return {"moves": ks.get("rt_moves"), "first": ks.get("rt_first")}


def _l4run(l4run: list[str], *args: str) -> None:
    """One `l4run` command of the run; one that fails stops the bench with its own words."""
    p = subprocess.run([*l4run, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=120)
    if p.returncode:
        raise click.ClickException(f"bench rt: `l4run {' '.join(args)}` failed "
                                   f"({p.returncode}): {(p.stderr or p.stdout).strip()[-800:]}")


def _slow_calls(rd: str) -> list[dict[str, Any]]:
    """The block server's RT-SLOW lines (servers/block/server.py note_slow), in order."""
    out = []
    try:
        with open(os.path.join(rd, "logs", "block.log"), errors="replace") as f:
            for line in f:
                if line.startswith("RT-SLOW "):
                    try:
                        out.append(json.loads(line[8:]))
                    except ValueError:
                        pass                      # a line cut by the log's end
    except OSError:
        pass
    return sorted(out, key=lambda r: r["t"][0])


def _disk_jobs(rd: str) -> list[list[float]]:
    """The HAL disk's stage times per queue job (hal/disk.py `trace`), asked once, now that
    the player is done (a control connection held open costs the path, run_one says)."""
    from hal.tools import control
    try:
        st = control(rd, {"op": "status"})
        return list(st.get("ok", st)["devices"]["disk0"]["trace"]["rows"])
    except Exception:                      # noqa: BLE001 - diagnosis only: the numbers stand
        return []


def late_stages(rec: dict[str, Any], slow: list[dict[str, Any]],
                jobs: list[list[float]]) -> dict[str, Any]:
    """Where the late periods' disk read went (mean ms per late period whose reserved call
    took SLOW_S or more in the block server): `in` (the player's call reaching the block
    server's reserved thread: the kernel, the GIL), `queued`, `behind_best_effort` (a
    best-effort request at the device when it came), `doorbell` (the HAL's register thread
    taking the doorbell), `device` (doorbell to the completion seen by the block server),
    of it in the HAL: `hal_check` (the IOMMU check; inside the disk's latency), `hal_io`
    (to the data's end), `hal_irq` (raising the interrupt through the kernel); `answer`
    (the block server told to its answer sent) and `back` (the answer reaching the
    player). `matched` of `late` periods; `behind_best_effort_periods` counts those; of
    them `behind_age_ms` (how long the best-effort request had been dispatched when the
    reserved one came), `behind_arrival_vs_due_ms` (the arrival past its prediction), and
    `behind_irq_raised_before` of `behind_with_hal` (the HAL had raised the best-effort
    request's interrupt before the reserved one came: done, but not yet taken)."""
    starts = [r["t"][0] for r in slow]
    doors = [j[0] for j in jobs]
    keys = ("in", "queued", "behind_best_effort", "doorbell", "device", "answer", "back",
            "hal_check", "hal_io", "hal_irq")
    acc = dict.fromkeys(keys, 0.0)
    acc_b = {"age": 0.0, "vs_due": 0.0}      # behind best effort: how long it had been at
    n = behind = with_hal = seen = done_before = 0   # the device, the arrival past its due
    for _, t0, t1, _, _ in rec["late_at"]:
        i = bisect.bisect_left(starts, t0 - 0.0005)
        hit = next((r for r in slow[i:i + 3] if t0 - 0.0005 <= r["t"][0] <= t1 and r["t"][1]),
                   None)
        if hit is None:
            continue
        t = hit["t"]
        n += 1
        if hit["ahead"] > 0:
            behind += 1
            arrived = t[1]
            since, due = hit.get("ahead_since", 0.0), hit.get("due", 0.0)
            acc_b["age"] += arrived - since if since else 0.0
            acc_b["vs_due"] += arrived - due if due else 0.0
            b = bisect.bisect_left(doors, since)
            be_job = next((r for r in jobs[b:b + 3] if r[0] <= arrived), None)
            if be_job is not None and be_job[4]:
                seen += 1
                done_before += be_job[4] < arrived   # raised, not yet taken by the server
        for k, v in zip(keys, (t[0] - t0, t[1] - t[0], t[2] - t[1], t[3] - t[2], t[4] - t[3],
                               t[6] - t[4], t1 - t[6])):
            acc[k] += v
        j = bisect.bisect_left(doors, t[2] - 0.0002)
        job = next((r for r in jobs[j:j + 3] if t[2] - 0.0002 <= r[0] <= t[4]), None)
        if job is not None and job[2]:
            with_hal += 1
            acc["hal_check"] += job[2] - job[1]
            acc["hal_io"] += job[3] - job[2]
            acc["hal_irq"] += job[4] - job[3]
    out: dict[str, Any] = {k: round(v * 1e3 / max(1, with_hal if k.startswith("hal_") else n), 2)
                           for k, v in acc.items()}
    out.update(late=len(rec["late_at"]), matched=n, behind_best_effort_periods=behind,
               slow_calls=len(slow),
               behind_age_ms=round(acc_b["age"] * 1e3 / max(1, behind), 2),
               behind_arrival_vs_due_ms=round(acc_b["vs_due"] * 1e3 / max(1, behind), 2),
               behind_irq_raised_before=done_before, behind_with_hal=seen)
    return out


HEAD_START_MS = 0.5       # a late period that started this close to its release heads a cascade


def cascade_heads(stalls: list[list[float]]) -> dict[str, Any]:
    """The late periods that began on time (within HEAD_START_MS of their release): the
    first of each cascade, the rest starting late because the one before overran. Their
    count and mean phase times (ms), from the player's `stalls` ([s, ms late, start,
    disk, compute, send, cpu, draw])."""
    heads = [st for st in stalls if st[2] < HEAD_START_MS]
    out: dict[str, Any] = {"count": len(heads), "of": len(stalls)}
    for i, k in enumerate(("late", "start", "disk", "compute", "send", "cpu", "draw")):
        out[k] = round(sum(st[1 + i] for st in heads if len(st) > 1 + i)  # draw: newer
                       / max(1, len(heads)), 2)
    return out


def run_rt(periods: int = 10_000, latency_ms: float = 2.0) -> dict[str, Any]:
    res = run_one(periods, True, latency_ms, floor_periods=periods)
    host = res.get("host", {})
    be = run_one(periods, False, latency_ms)
    out: dict[str, Any] = {"periods": res.get("periods"), "periods_best_effort": be.get("periods"),
                           "misses_reserved": res.get("misses"),
                           "misses_best_effort": be.get("misses"),
                           "misses_reserved_steal": res.get("steal_misses"),
                           "worst_late_us_reserved": res.get("worst_us"),
                           "worst_late_us_best_effort": be.get("worst_us"),
                           "disk_p99_ms_reserved": res.get("disk_p99_ms"),
                           "disk_p99_ms_best_effort": be.get("disk_p99_ms"),
                           "disk_wait_p99_ms_reserved": res.get("disk_wait_p99_ms"),
                           "disk_wait_p99_ms_best_effort": be.get("disk_wait_p99_ms"),
                           "net_share_reserved": res.get("net_share"),
                           "net_share_best_effort": be.get("net_share"),
                           "reservations": res.get("reservations"),
                           "misses_per_100_reserved": res.get("misses_per_100"),
                           "late_ms_reserved": res.get("late_ms"),
                           "late_heads_ms_reserved": cascade_heads(res.get("stalls", [])),
                           "late_stages_ms_reserved": res.get("late_stages"),
                           "late_ms_best_effort": be.get("late_ms"),
                           "disk_latency_ms": latency_ms,
                           "host_periods": host.get("periods"),
                           "host_misses": host.get("misses"),
                           "host_misses_steal": host.get("steal_misses"),
                           "host_worst_late_us": host.get("worst_us"),
                           "host_late_at_s": host.get("late_at_s"),
                           "steal_share_reserved": res.get("steal_share"),
                           "steal_share_best_effort": be.get("steal_share"),
                           "steal_share_host": host.get("steal_share"),
                           "rt_port_reserved": {**res.get("kernel_rt", {}),
                                                "player": res.get("reservations", {})
                                                .get("rt_port")}}
    if "error" in host:
        out["error_host"] = host["error"]
    for name, r in (("reserved", res), ("best_effort", be)):
        if "error" in r:
            out[f"error_{name}"] = r["error"]
    return out


def register(group: click.Group) -> None:
    @group.command("rt")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    @click.option("--periods", default=10_000, show_default=True,
                  help="periods of 10 ms per run (two runs)")
    @click.option("--latency-ms", default=2.0, show_default=True,
                  help="the HAL disk's time per request")
    def rt_bench(as_json: bool, periods: int, latency_ms: float) -> None:
        """DROPS: the player under CPU, disk and network hogs, reserved vs best effort."""
        res = run_rt(periods, latency_ms)
        if as_json:
            print(json.dumps(res))
            return
        print(f"periods {res['periods']} (best effort {res['periods_best_effort']}); deadline "
              f"misses reserved {res['misses_reserved']} / best effort "
              f"{res['misses_best_effort']}; disk p99 {res['disk_p99_ms_reserved']} / "
              f"{res['disk_p99_ms_best_effort']} ms; net share {res['net_share_reserved']} / "
              f"{res['net_share_best_effort']} (targets: misses_reserved 0, "
              f"misses_best_effort > 0, net_share_reserved >= 0.95)")
        print(f"the host's floor (a native deadline thread, same work, no IPC, same hogs): "
              f"{res['host_misses']} misses in {res['host_periods']} periods; steal "
              f"{res['steal_share_reserved']} / {res['steal_share_best_effort']} / "
              f"{res['steal_share_host']} of the CPUs")
        for k in ("error_reserved", "error_best_effort", "error_host"):
            if k in res:
                print(f"{k}: {res[k]}")
