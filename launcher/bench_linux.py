"""`l4run bench linux`: the L⁴Linux personality against native Linux (docs/L4LINUX.md).

One run boots a kernel, an echo server and the personality (`kernel.user.testing.System`;
the personality's root file system is busybox plus a static C probe built with musl-gcc)
and measures, in the same run:
- `compute_overhead`: a compute-bound busybox shell loop with few system calls, under the
  personality against `busybox sh` natively: (personality − native) / native;
- `syscall_rtt_us`: one getppid() round trip of the probe (a loop of N, minus the empty
  loop), `ipc_rtt_us`: one kernel IPC round trip (call to the echo server), and
  `syscall_vs_ipc` = syscall_rtt_us / ipc_rtt_us (target ≤ 1.5: a Linux system call costs
  at most one and a half IPCs);
- `dd_ratio`: `dd if=/dev/zero of=/dev/null bs=512` of 8 MiB (a system call every 512
  bytes), personality time over native time.
Targets (issue 14): compute_overhead ≤ 0.05, syscall_vs_ipc ≤ 1.5. `--quick` scales the
workloads down (for a smoke run).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Any

import click

from kernel.user.testing import System

PROBE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(void) {
    struct timespec t;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    double t0 = now();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    double t1 = now();
    printf("%.3f\n", (t1 - t0) / n * 1e6);
    return 0;
}
"""
SYSCALLS_N = 2000
COMPUTE_LOOPS = 800_000          # ≈ 2 s natively (busybox ash, a 2020s core)
DD_COUNT = 16384                 # 8 MiB in 512-byte blocks


def _rootfs(tmp: str) -> str:
    from servers.l4linux import initramfs
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    entries = list(initramfs.read(initramfs.build(busybox, initramfs.applets())))
    if shutil.which("musl-gcc"):
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(PROBE_C)
        subprocess.run(["musl-gcc", "-static", "-O2", "-o", exe, src], check=True, timeout=120)
        with open(exe, "rb") as f:
            entries.append(initramfs.Entry("bin/probe", 0o100755, f.read()))
    path = os.path.join(tmp, "rootfs.cpio")
    with open(path, "wb") as f:
        f.write(initramfs.write(entries))
    return path


def _native(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - t


def run_linux_bench(quick: bool = False) -> dict[str, Any]:
    from servers.l4linux.protocol import LINUX
    loops = COMPUTE_LOOPS // (20 if quick else 1)
    dd = DD_COUNT // (16 if quick else 1)
    n = SYSCALLS_N // (4 if quick else 1)
    compute = f"i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done"
    out: dict[str, Any] = {"bench": "linux", "quick": quick}
    with tempfile.TemporaryDirectory(prefix="l4py-bench-linux-") as tmp:
        rootfs = _rootfs(tmp)
        with System() as s:
            srv = s.spawn("launcher.bench_ipc:kernel_server", "echo-server")
            gate = s.root.create_gate(1, thread=srv.thread)
            px = s.spawn("servers.l4linux.server:main", "l4linux", args=("--rootfs", rootfs),
                         quota=4096, stderr=subprocess.DEVNULL)
            client: Any = LINUX.client(s.root, s.root.create_gate(1, thread=px.thread),
                                  timeout=600_000)

            def under(argv: list[str]) -> tuple[float, bytes]:
                t = time.perf_counter()
                r = client.run(argv, [], "/")
                if r.status != 0:
                    raise click.ClickException(f"{argv[0]} failed under the personality: "
                                               f"{bytes(r.output)[-200:]!r}")
                return time.perf_counter() - t, bytes(r.output)

            under(["true"])                                    # warm up
            rtts = []
            for i in range(n + 200):
                t = time.perf_counter()
                s.root.call(gate, b"x" * 64)
                if i >= 200:
                    rtts.append(time.perf_counter() - t)
            out["ipc_rtt_us"] = round(statistics.median(rtts) * 1e6, 2)
            if shutil.which("musl-gcc"):
                _, text = under(["/bin/probe", str(n)])
                out["syscall_rtt_us"] = round(float(text.split()[-1]), 2)
                out["syscall_vs_ipc"] = round(out["syscall_rtt_us"] / out["ipc_rtt_us"], 3)
            native_c = _native(["/bin/busybox", "sh", "-c", compute])
            l4_c, _ = under(["sh", "-c", compute])
            out["compute_native_s"], out["compute_l4linux_s"] = round(native_c, 3), round(l4_c, 3)
            out["compute_overhead"] = round((l4_c - native_c) / native_c, 4)
            dd_args = ["dd", "if=/dev/zero", "of=/dev/null", "bs=512", f"count={dd}"]
            native_d = _native(["/bin/busybox", *dd_args])
            l4_d, _ = under(dd_args)
            out["dd_native_s"], out["dd_l4linux_s"] = round(native_d, 3), round(l4_d, 3)
            out["dd_ratio"] = round(l4_d / native_d, 1)
            out["linux_syscalls"] = s.root.kernel_info()["stats"].get("linux_syscalls", 0)
    out["targets"] = {"compute_overhead": 0.05, "syscall_vs_ipc": 1.5}
    return out


def register(group: click.Group) -> None:
    @group.command(name="linux")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object")
    @click.option("--quick", is_flag=True, help="smaller workloads (a smoke run)")
    def bench_linux(as_json: bool, quick: bool) -> None:
        """L⁴Linux: compute overhead, system call vs IPC round trip, dd (docs/L4LINUX.md)."""
        r = run_linux_bench(quick)
        if as_json:
            click.echo(json.dumps(r, indent=2))
            return
        for k, v in r.items():
            click.echo(f"{k:>20}: {v}")
