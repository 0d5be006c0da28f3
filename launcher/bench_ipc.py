"""`l4run bench ipc`: kernel-mediated IPC against a direct pyzmq baseline, in one run.

Baseline (a): two processes, a DEALER client and a ROUTER echo server on `ipc://` — what two
processes can do without any kernel (2 ZeroMQ hops per call). Reference (r): the same client
and echo server with libzmq's proxy in between, which forwards frames untouched in C and
checks nothing — 4 hops per call, the floor for any design with a kernel process in the
middle. Measured
(b): the same work through the kernel, a client task doing `call` and a server task looping
on `reply_and_wait`; and (b×W) a server task with W threads waiting at once (each client's
gate bound to one of them), since a rendezvous server thread takes one call at a time.

Reported: round-trip median and p99 for 64 B and 4 KiB, and calls per second with 1, 4 and
16 client processes against one server, with the ratios kernel/direct and kernel/relay; and
`trace_overhead`: the 64 B kernel round trip with the kernel's IPC trace on against off, in the
same run (on / off - 1; `trace` holds both medians and how many events were recorded), and
`trace_off_overhead`: what the hooks cost while it is off (flag tests per round trip × the
cost of one test, as a share of the round trip).

`cpu_us_per_call`: where the CPU of a call goes in the 16-client runs — per series (direct,
relay, kernel, kernel_workers) the CPU seconds (user + system, every thread of the process,
ZeroMQ's I/O threads included) of each component over the measured window, divided by the
calls completed in it, in µs: `clients` (the sum of the 16), `server`, and `kernel` (the
relay's proxy for relay). Clients measure their own process CPU from the common start to
their last call; the driver reads the kernel's and the server's from /proc at the start and
the end of the window. The direct and relay clients and servers are raw pyzmq; the kernel's
run the task library on both sides, so their shares include it. `call_path`: whether the
library's frames went through its compiled part (kernel/user/_callpath.pyx) or pyzmq.
`kernel_threads_us_per_call`: the kernel's share of that split into its main thread (the
loop, the fast path) and ZeroMQ's I/O thread (the socket reads and writes).
`kernel_requests`: per 16-client kernel series, the requests the kernel took and the share
its compiled fast path served (`compiled_share`; the rest are the series' spawns and exits).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import zmq

from kernel.user.client import CALLPATH
from kernel.user.testing import PROJECT_ROOT, System

SIZES = (64, 4096)
CLIENTS = (1, 4, 16)


# -- the processes ------------------------------------------------------------------

def _direct_server(addr: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.bind(addr)
    while True:
        ident = s.recv()
        f = s.recv(copy=False)
        frames = [f]
        while f.more:
            f = s.recv(copy=False)
            frames.append(f)
        s.send(ident, zmq.SNDMORE)
        for fr in frames[:-1]:
            s.send(fr, zmq.SNDMORE, copy=False)
        s.send(frames[-1], copy=False)


def _relay(front: str, back: str) -> None:
    """A kernel that checks nothing: libzmq's own proxy (C, no Python per message) forwards
    each call from the clients' ROUTER to the echo server and each answer back, untouched —
    four ZeroMQ hops per call like the kernel, at the lowest cost ZeroMQ allows."""
    ctx = zmq.Context()
    f = ctx.socket(zmq.ROUTER)
    f.bind(front)
    b = ctx.socket(zmq.DEALER)
    b.connect(back)
    zmq.proxy(f, b)


def _pctl(ts: list[float], q: float) -> float:
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(len(ts) * q))]


def _direct_rtt(addr: str, size: int, n: int, out: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(addr)
    data = b"x" * size
    hdr = b"\x90"
    res = []
    for i in range(n + 200):
        t = time.perf_counter()
        s.send(hdr, zmq.SNDMORE)
        s.send(data)
        s.recv()
        s.recv()
        if i >= 200:
            res.append(time.perf_counter() - t)
    _write(out, res)


def _direct_load(addr: str, go: str, duration: float, out: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(addr)
    data = b"x" * 64
    got = _load_loop(lambda: (s.send(b"\x90", zmq.SNDMORE), s.send(data), s.recv(), s.recv()),
                     go, duration, out)
    _write(out, got)


def _load_loop(step: Any, go: str, duration: float, out: str) -> list[float]:
    """[calls, CPU seconds of this process (all its threads) while making them], from the
    start time the driver writes to file `go` once every client said it is ready."""
    step()                                  # connect and warm up
    _write(out + ".ready", os.getpid())
    while not os.path.exists(go):
        time.sleep(0.002)
    with open(go) as f:
        start_at = float(json.load(f))
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + duration
    count = 0
    cpu0 = time.process_time()
    while True:
        step()
        count += 1
        if count & 15 == 0 and time.time() >= end:
            return [count, time.process_time() - cpu0]


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK      # utime, stime (fields 14, 15)


def _threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of process `pid` by thread kind: "io" (ZeroMQ's I/O threads, named
    ZMQbg/IO/n) and "main" (every other thread of it)."""
    out = {"main": 0.0, "io": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue                        # the thread ended meanwhile
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out["io" if comm.startswith("ZMQbg/IO") else "main"] += (
            int(fields[11]) + int(fields[12])) / _TICK
    return out


def _kernel_stats(system: System) -> dict[str, int]:
    """The kernel's request counters (KERNEL_INFO): requests, and those the fast path served."""
    st = system.root.kernel_info()["stats"]
    return {k: int(st.get(k, 0)) for k in ("requests", "fastpath", "fastpath_compiled")}


def _write(path: str, obj: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.rename(path + ".tmp", path)


def kernel_server(l4: Any) -> None:
    """Echo server task: reply_and_wait forever."""
    m = l4.wait()
    while True:
        m = l4.reply_and_wait(m.reply, m.data)


def kernel_pool_server(l4: Any) -> None:
    """Echo server task with several threads (main + L4_THREADS), all waiting at once,
    served from one OS thread (`MultiWait`)."""
    from kernel.user.client import MultiWait
    pool = MultiWait([l4, *l4.threads_from_env()])
    while True:
        got = pool.next()
        if got is not None:
            t, m = got
            pool.reply_and_wait(t, m.reply, m.data)


def kernel_rtt(l4: Any, size: str, n: str, out: str) -> None:
    cap = l4.caps["echo"]
    data = b"x" * int(size)
    res = []
    for i in range(int(n) + 200):
        t = time.perf_counter()
        l4.call(cap, data)
        if i >= 200:
            res.append(time.perf_counter() - t)
    _write(out, res)


def kernel_load(l4: Any, go: str, duration: str, out: str) -> None:
    cap = l4.caps["echo"]
    data = b"x" * 64
    _write(out, _load_loop(lambda: l4.call(cap, data), go, float(duration), out))


# -- the driver -------------------------------------------------------------------------

def _py(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "launcher.bench_ipc", *args], cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONPATH": PROJECT_ROOT})


def _collect(paths: list[str], procs: list[Any], timeout: float = 120) -> list[Any]:
    """The JSON each process wrote to its path; a process that exits without writing fails
    the benchmark at once instead of at the deadline."""
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        for path, proc in zip(paths, procs):
            status = getattr(proc, "proc", proc).poll()     # a Popen, or a TaskProc's Popen
            if status is not None and not os.path.exists(path):
                raise RuntimeError(f"benchmark process {getattr(proc, 'pid', '?')} exited with "
                                   f"{status} without reporting")
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark processes did not report in time")
        time.sleep(0.02)
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def _stats(ts: list[float]) -> dict[str, float]:
    return {"median_us": round(statistics.median(ts) * 1e6, 1), "p99_us": round(_pctl(ts, 0.99) * 1e6, 1)}


def _round_trip(tmp: str, tag: str, size: int, start: Callable[[str], Any]) -> dict[str, float]:
    """Median and p99 round trip of the process `start(out_file)` starts."""
    out = os.path.join(tmp, f"{tag}-rtt-{size}")
    proc = start(out)
    stats = _stats(_collect([out], [proc])[0])
    proc.wait()
    return stats


def _throughput(tmp: str, tag: str, clients: int, duration: float,
                start: Callable[[int, str, str], Any], watch: dict[str, int] | None = None,
                cpu: dict[str, float] | None = None,
                split: dict[str, float] | None = None) -> int:
    """Calls per second of `clients` processes started by `start(i, go_file, out_file)`,
    all beginning at the same moment, which the driver writes to `go_file` after every one
    of them has started and warmed up (a loaded machine may take seconds to start 16).
    With `watch` ({component: pid}) and `cpu`, fills `cpu` with each watched component's and
    the clients' CPU µs per call over the window (`cpu_us_per_call`); with `split` too, the
    kernel's share by thread kind, main and ZeroMQ I/O (`kernel_threads_us_per_call`)."""
    go = os.path.join(tmp, f"{tag}-go-{clients}")
    outs = [os.path.join(tmp, f"{tag}-load-{clients}-{i}") for i in range(clients)]
    procs = [start(i, go, out) for i, out in enumerate(outs)]
    _collect([out + ".ready" for out in outs], procs)
    start_at = time.time() + 0.2
    _write(go, start_at)
    before = after = {}
    threads0 = threads1 = {}
    kpid = (watch or {}).get("kernel")
    if watch:
        time.sleep(max(0.0, start_at - time.time()))
        before = {name: _cpu_s(pid) for name, pid in watch.items()}
        threads0 = _threads_cpu_s(kpid) if kpid and split is not None else {}
        time.sleep(max(0.0, start_at + duration - time.time()))
        after = {name: _cpu_s(pid) for name, pid in watch.items()}
        threads1 = _threads_cpu_s(kpid) if kpid and split is not None else {}
    got = _collect(outs, procs)
    for p in procs:
        p.wait(60) if hasattr(p, "task_id") else p.wait()
    calls = sum(g[0] for g in got)
    if cpu is not None and calls:
        for name in before:       # the window's calls (each client stops ≤ 16 calls late)
            cpu[name] = round((after[name] - before[name]) / calls * 1e6, 1)
        cpu["clients"] = round(sum(g[1] for g in got) / calls * 1e6, 1)
        cpu["total"] = round(sum(v for n, v in cpu.items() if n != "total"), 1)
        if split is not None and threads0:
            for kind in threads0:
                split[kind] = round((threads1[kind] - threads0[kind]) / calls * 1e6, 1)
    return round(calls / duration)


def _requests_since(system: System, before: dict[str, int]) -> dict[str, Any]:
    """The kernel's requests since `before` (the series' spawns, warm-up and exits included)
    and the share of them its compiled fast path served."""
    now = _kernel_stats(system)
    d = {k: now[k] - before[k] for k in now}
    return {**d, "compiled_share": round(d["fastpath_compiled"] / d["requests"], 3)
            if d["requests"] else 0.0}


def run_ipc_bench(n: int = 3000, duration: float = 2.0, progress: Any = None,
                  remote: bool = False) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="l4bench-")
    try:
        return _measure(tmp, n, duration, progress or (lambda s: None), remote)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)     # also when a measurement failed


WORKERS = 4      # threads of the echo server task in the "kernel, server threads" series


def _pyzmq_series(tmp: str, tag: str, addr: str, n: int, duration: float,
                  say: Callable[[str], None], result: dict[str, Any],
                  watch: dict[str, int]) -> None:
    """Round trips and throughput of plain pyzmq DEALER clients against `addr`; the CPU of
    the `watch`ed processes per call with the most clients."""
    for size in SIZES:
        say(f"{tag} round trip, {size} B")
        result["rtt"][f"{tag}_{size}"] = _round_trip(
            tmp, tag, size, lambda out: _py("direct-rtt", addr, str(size), str(n), out))
    for c in CLIENTS:
        say(f"{tag} throughput, {c} clients")
        cpu = result["cpu_us_per_call"].setdefault(tag, {}) if c == CLIENTS[-1] else None
        result["throughput"][f"{tag}_{c}"] = _throughput(
            tmp, tag, c, duration,
            lambda i, go, out: _py("direct-load", addr, go, str(duration), out),
            watch if cpu is not None else None, cpu)


def _trace_overhead(tmp: str, system: System, gate: int, n: int,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """The 64 B kernel round trip with the kernel's IPC trace (TRACE, kernel/core/trace.py)
    off and on, in the order off, on, on, off so that a drift of the machine's load during
    the run falls on both sides alike; `overhead` = on / off - 1 (the means of the medians)."""
    medians: dict[bool, list[float]] = {False: [], True: []}
    recorded = dropped = 0
    for i, on in enumerate((False, True, True, False)):
        say(f"kernel round trip, 64 B, trace {'on' if on else 'off'}")
        if on:
            system.root.trace("on", 0)
        try:
            st = _round_trip(tmp, f"trace{i}", 64, lambda out: system.spawn(
                "launcher.bench_ipc:kernel_rtt", "rtt-trace", caps={"echo": gate},
                args=("64", str(n), out)))
        finally:
            status = system.root.trace("off", 0)
        if on:
            recorded += status["recorded"]
            dropped += status["dropped"]
        medians[on].append(st["median_us"])
    off, on_ = (statistics.mean(medians[x]) for x in (False, True))
    per_round = recorded / (2 * n)
    test_ns = _flag_test_ns()
    return {"off_rtt_us": round(off, 1), "on_rtt_us": round(on_, 1),
            "overhead": round(on_ / off - 1, 3), "events": recorded, "dropped": dropped,
            "events_per_round_trip": round(per_round, 1), "flag_test_ns": round(test_ns, 1),
            "off_overhead": round(per_round * test_ns / (off * 1000), 5)}


def _flag_test_ns() -> float:
    """What one hook costs while the trace is off: the `if _trace.ON:` test at a call site,
    timed here in the same interpreter build the kernel runs (best of 5 × 10⁶). With the
    events a traced round trip records (one per hook that fired), it gives the off cost as a
    share of the round trip — a kernel without the hooks would be the direct comparison, but
    there is none to run."""
    import timeit
    import types

    flag = types.ModuleType("trace")       # the same bytecode as the kernel's module flag
    flag.ON = False                        # type: ignore[attr-defined]
    loop = timeit.repeat("if t.ON: pass", globals={"t": flag}, number=1_000_000, repeat=5)
    empty = timeit.repeat("pass", number=1_000_000, repeat=5)
    return max(0.0, (min(loop) - min(empty)) * 1000)        # ns per test (10⁶ tests → ×1000)


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _measure(tmp: str, n: int, duration: float, say: Callable[[str], None],
             remote: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"rtt": {}, "throughput": {}, "cpu_us_per_call": {}}
    addr = "ipc://" + os.path.join(tmp, "direct.sock")
    server = _py("direct-server", addr)
    try:
        _pyzmq_series(tmp, "direct", addr, n, duration, say, result, {"server": server.pid})
    finally:
        _stop(server)
    front, back = ("ipc://" + os.path.join(tmp, f"relay-{e}.sock") for e in ("front", "back"))
    relay, rserver = _py("relay", front, back), _py("direct-server", back)
    try:
        _pyzmq_series(tmp, "relay", front, n, duration, say, result,
                      {"kernel": relay.pid, "server": rserver.pid})
    finally:
        _stop(relay, rserver)
    with System(kernel_args=("--tcp", "127.0.0.1:0") if remote else ()) as system:
        srv = system.spawn("launcher.bench_ipc:kernel_server", "echo-server")
        gate = system.root.create_gate(1, thread=srv.thread)
        spawners = [("kernel", system.spawn)] + ([("remote", system.spawn_remote)] if remote else [])
        for tag, spawn in spawners:       # remote: the client reaches the kernel over tcp+Curve
            for size in SIZES:
                say(f"{tag} round trip, {size} B")
                result["rtt"][f"{tag}_{size}"] = _round_trip(
                    tmp, tag, size, lambda out: spawn(
                        "launcher.bench_ipc:kernel_rtt", "rtt", caps={"echo": gate},
                        args=(str(size), str(n), out)))
        result["trace"] = _trace_overhead(tmp, system, gate, n, say)
        result["fast_path"] = system.root.kernel_info().get("fast_path", "python")
        result["call_path"] = CALLPATH      # the task library's frames (every task's alike)
        cpus = result["cpu_us_per_call"]
        splits = result["kernel_threads_us_per_call"] = {}
        paths = result["kernel_requests"] = {}
        for c in CLIENTS:
            say(f"kernel throughput, {c} clients")
            last = c == CLIENTS[-1]
            before = _kernel_stats(system)
            result["throughput"][f"kernel_{c}"] = _throughput(
                tmp, "kernel", c, duration,
                lambda i, go, out: system.spawn(
                    "launcher.bench_ipc:kernel_load", f"load{i}", caps={"echo": gate},
                    args=(go, str(duration), out)),
                {"kernel": system.kernel.pid, "server": srv.pid} if last else None,
                cpus.setdefault("kernel", {}) if last else None,
                splits.setdefault("kernel", {}) if last else None)
            if last:
                paths["kernel"] = _requests_since(system, before)
        # One server task with WORKERS threads; each client's gate is bound to one of them
        # (a session per client, as L4Re servers hand out), so WORKERS calls can be in flight.
        pool = system.spawn("launcher.bench_ipc:kernel_pool_server", "echo-pool",
                            threads=WORKERS - 1)
        gates = [system.root.create_gate(2, thread=t)
                 for t in [pool.thread, *(x.slot for x in pool.threads)]]
        for c in CLIENTS:
            say(f"kernel throughput, {WORKERS} server threads, {c} clients")
            last = c == CLIENTS[-1]
            before = _kernel_stats(system)
            result["throughput"][f"kernel_workers_{c}"] = _throughput(
                tmp, "kernel-w", c, duration,
                lambda i, go, out: system.spawn(
                    "launcher.bench_ipc:kernel_load", f"wload{i}", caps={"echo": gates[i % WORKERS]},
                    args=(go, str(duration), out)),
                {"kernel": system.kernel.pid, "server": pool.pid} if last else None,
                cpus.setdefault("kernel_workers", {}) if last else None,
                splits.setdefault("kernel_workers", {}) if last else None)
            if last:
                paths["kernel_workers"] = _requests_since(system, before)
    rtt, thr = result["rtt"], result["throughput"]
    d64, r64, k64 = (rtt[f"{t}_64"]["median_us"] for t in ("direct", "relay", "kernel"))
    result.update({
        "direct_rtt_us": d64,
        "relay_rtt_us": r64,
        "kernel_rtt_us": k64,
        "rtt_ratio": round(k64 / d64, 2),
        "relay_rtt_ratio": round(r64 / d64, 2),
        "kernel_vs_relay": round(k64 / r64, 2),
        "direct_calls_per_s": thr["direct_16"],
        "relay_calls_per_s": thr["relay_16"],
        "kernel_calls_per_s": thr["kernel_16"],
        "kernel_workers_calls_per_s": thr["kernel_workers_16"],
        "throughput_ratio": round(thr["kernel_16"] / thr["direct_16"], 2),
        "throughput_ratio_workers": round(thr["kernel_workers_16"] / thr["direct_16"], 2),
        "relay_throughput_ratio": round(thr["relay_16"] / thr["direct_16"], 2),
        "workers": WORKERS, "rounds": n, "duration_s": duration, "cpus": os.cpu_count(),
    })
    result["trace_overhead"] = result["trace"]["overhead"]
    result["trace_off_overhead"] = result["trace"]["off_overhead"]
    if remote:
        result["remote_rtt_us"] = rtt["remote_64"]["median_us"]
        result["remote_vs_kernel"] = round(rtt["remote_64"]["median_us"] / k64, 2)
    return result


def _show(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"IPC: kernel-mediated vs direct pyzmq ({res['cpus']} CPUs, "
                    f"{res['rounds']} round trips)",
              caption="direct: client ⇄ server, 2 ZeroMQ hops per call; relay: a forwarder that "
                      "checks nothing, 4 hops (the floor for any kernel process); kernel: L4 call "
                      f"/ reply_and_wait, 4 hops; kernel ×{res['workers']}: a server task with "
                      f"{res['workers']} threads waiting at once")
    for col in ("measure", "direct", "relay", "kernel", f"kernel ×{res['workers']}",
                "kernel/direct", "kernel/relay"):
        t.add_column(col, justify="right" if col != "measure" else "left")
    for size in SIZES:
        d, r, k = (res["rtt"][f"{tag}_{size}"] for tag in ("direct", "relay", "kernel"))
        for q in ("median_us", "p99_us"):
            t.add_row(f"round trip {size} B, {q[:-3]} µs", str(d[q]), str(r[q]), str(k[q]), "",
                      f"{k[q] / d[q]:.2f}", f"{k[q] / r[q]:.2f}")
    for c in CLIENTS:
        d, r, k, w = (res["throughput"][f"{tag}_{c}"]
                      for tag in ("direct", "relay", "kernel", "kernel_workers"))
        t.add_row(f"calls/s, {c} client(s)", str(d), str(r), str(k), str(w), f"{k / d:.2f}",
                  f"{k / r:.2f}")
    Console().print(t)
    if "remote_rtt_us" in res:
        r = {size: res["rtt"][f"remote_{size}"] for size in SIZES}
        print("client over tcp:// with CurveZMQ (a remote task, loopback): round trip "
              + ", ".join(f"{size} B median {r[size]['median_us']} µs p99 {r[size]['p99_us']} µs"
                          for size in SIZES)
              + f"; {res['remote_vs_kernel']}× the local kernel round trip")
    tr = res["trace"]
    print(f"trace_overhead {res['trace_overhead']} (target ≤ 0.15): round trip 64 B median "
          f"{tr['off_rtt_us']} µs with the kernel's trace off, {tr['on_rtt_us']} µs on "
          f"({tr['events']} events recorded, {tr['dropped']} dropped); off: "
          f"trace_off_overhead {res['trace_off_overhead']} (target ≤ 0.01: "
          f"{tr['events_per_round_trip']} flag tests per round trip × {tr['flag_test_ns']} ns)")
    print(f"fast_path {res.get('fast_path', 'python')} (the kernel's IPC fast path that ran), "
          f"call_path {res.get('call_path', 'python')} (the task library's frames)")
    for tag, parts in res.get("cpu_us_per_call", {}).items():
        print(f"CPU per call, {tag}, {CLIENTS[-1]} clients (µs, all threads): "
              + ", ".join(f"{k} {v}" for k, v in parts.items()))
    for tag, parts in res.get("kernel_threads_us_per_call", {}).items():
        req = res.get("kernel_requests", {}).get(tag, {})
        print(f"kernel CPU per call, {tag}: main thread {parts.get('main')}, ZeroMQ I/O "
              f"{parts.get('io')} µs; compiled fast path served {req.get('compiled_share')} "
              f"of {req.get('requests')} requests")
    print(f"rtt_ratio {res['rtt_ratio']} (target ≤ 2.0; relay alone {res['relay_rtt_ratio']}), "
          f"throughput_ratio {res['throughput_ratio']} (target ≥ 0.6; with {res['workers']} "
          f"server threads {res['throughput_ratio_workers']}; relay {res['relay_throughput_ratio']})")


def register(group: Any) -> None:
    import click

    @group.command("ipc")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    @click.option("--rounds", default=3000, show_default=True, help="round trips per size")
    @click.option("--duration", default=2.0, show_default=True, help="seconds per throughput point")
    @click.option("--remote", is_flag=True,
                  help="also a client that reaches the kernel over tcp:// with CurveZMQ")
    def ipc(as_json: bool, rounds: int, duration: float, remote: bool) -> None:
        """Kernel call/reply_and_wait vs a direct pyzmq DEALER/ROUTER baseline, same run."""
        say = (lambda s: None) if as_json else (lambda s: click.echo(f"… {s}", err=True))
        res = run_ipc_bench(rounds, duration, say, remote)
        if as_json:
            click.echo(json.dumps(res))
        else:
            _show(res)


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "direct-server":
        _direct_server(args[0])
    elif cmd == "direct-rtt":
        _direct_rtt(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "direct-load":
        _direct_load(args[0], args[1], float(args[2]), args[3])
    elif cmd == "relay":
        _relay(args[0], args[1])
    elif cmd == "run":
        print(json.dumps(run_ipc_bench(progress=lambda s: print(s, file=sys.stderr)), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
