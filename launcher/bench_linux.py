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
- `fs_ratio`: a file workload — untar a 5 MiB tree (FS_FILES files in nested directories),
  `find`, `cat` everything, `rm -r` — with busybox under the personality on its ext2 root
  disk (the DDE block server, a HAL disk) against the same busybox natively in a tmpfs
  directory: personality time / native time;
- `ext2_vs_block`: the ext2 engine's sequential write+fsync and read of a 16 MiB file
  through the block server, over the server's own raw stream rate on the same disk
  (servers/ext2/bench.py, a task of the same system).
The disk part boots a launcher image of its own (`l4run boot` in a temporary run directory:
HAL, io, the block server with two disks, the personality, the ext2 bench task).
Targets (issue 14): compute_overhead ≤ 0.05, syscall_vs_ipc ≤ 1.5; (issue 15)
ext2_vs_block ≥ 0.3. `--quick` scales the workloads down (for a smoke run).
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
        out.update(_disk_bench(tmp, quick))
    out["targets"] = {"compute_overhead": 0.05, "syscall_vs_ipc": 1.5, "ext2_vs_block": 0.3}
    return out


FS_FILES = 320                   # the tree: 8 × 4 directories of 10 files, 5 MiB in all
FS_BYTES = 5 << 20
DISK_IMAGE = """
[system]
name = "bench-linux-disk"
ram = "64M"

[memory]
sigma0 = true
moe = true

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "disk"
name = "disk0"
size = "ROOT_SIZE"

[[device]]
kind = "disk"
name = "disk1"
size = "BENCH_SIZE"

[[task]]
name = "block"
run = "servers.block.server:main"
args = ['{"5": {"disk": "disk0", "write": true}, "6": {"disk": "disk1", "write": true}}']
devices = ["disk0", "disk1"]
provides = ["block"]
memory = "64K"
caps = { sigma0 = { service = "sigma0", label = 3 } }
restart = "never"

[[task]]
name = "ext2bench"
run = "servers.ext2.bench:bench"
args = ["MIB"]
memory = "4M"
caps = { block = { service = "block", label = 6 } }
restart = "never"

[linux]
rootdisk = { service = "block", label = 5, at = "/" }
restart = "never"
"""
# The same busybox programs both ways; R is the directory the tree is unpacked under.
FS_SCRIPT = ("busybox mkdir $R/x && cd $R/x && busybox tar xf $R/bench.tar && "
             "busybox find . > /dev/null && busybox find . -type f | busybox xargs busybox cat "
             "> /dev/null && cd $R && busybox rm -r $R/x")


def _tree_tar(path: str, total: int) -> None:
    """A tar of FS_FILES files of different sizes (`total` bytes) in nested directories."""
    import hashlib
    import io
    import tarfile
    sizes = [(i * 7919) % 97 + 1 for i in range(FS_FILES)]
    scale = total / sum(sizes)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, w in enumerate(sizes):
            seed = hashlib.sha256(b"%d" % i).digest()
            data = (seed * (int(w * scale) // 32 + 1))[:int(w * scale)]
            info = tarfile.TarInfo(f"d{i % 8}/s{i // 8 % 4}/f{i}.dat")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def _disk_bench(tmp: str, quick: bool) -> dict[str, Any]:
    """fs_ratio and ext2_vs_block, in a booted launcher image (module docstring)."""
    import sys
    from .linux import ask_door, build_ext2, build_rootfs, door
    if not shutil.which("mke2fs") and not os.path.exists("/sbin/mke2fs"):
        return {"fs_ratio": None, "ext2_vs_block": None, "disk_skipped": "no mke2fs (e2fsprogs)"}
    mib = 4 if quick else 16
    rd = os.path.join(tmp, "run")
    os.makedirs(rd)
    skel = os.path.join(tmp, "skel")
    os.makedirs(skel)
    _tree_tar(os.path.join(skel, "bench.tar"), FS_BYTES // (4 if quick else 1))
    build_ext2(os.path.join(rd, "disk0.img"), 64 << 20, build_rootfs(skeleton=skel))
    bench_disk = os.path.join(rd, "disk1.img")
    with open(bench_disk, "wb") as blank:
        blank.truncate((mib + 8) << 20)               # the file system; the raw run after it
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/sbin:/usr/sbin"}
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", bench_disk], check=True,
                   env=env, capture_output=True, timeout=60)        # blocks as mkrootfs makes
    image = os.path.join(tmp, "disk.toml")
    with open(image, "w") as f:
        f.write(DISK_IMAGE.replace("ROOT_SIZE", "64M").replace("MIB", str(mib))
                .replace("BENCH_SIZE", f"{2 * mib + 8}M"))
    l4run = [sys.executable, "-m", "launcher"]
    subprocess.run([*l4run, "boot", image, "--detach", "--timeout", "120", "--run-dir", rd],
                   check=True, capture_output=True, timeout=180)
    out: dict[str, Any] = {}
    try:
        log = os.path.join(rd, "logs", "ext2bench.log")
        deadline = time.monotonic() + 300
        line = ""
        while not line and time.monotonic() < deadline:
            time.sleep(0.2)
            if os.path.exists(log):
                line = next((ln for ln in open(log) if ln.startswith("EXT2BENCH ")), "")
        res = json.loads(line[len("EXT2BENCH "):]) if line else {"error": "no answer in 300 s"}
        if "error" in res:
            raise click.ClickException(f"the ext2 bench task failed: {res['error']}")
        out.update({"block_raw_MBps": res["raw_MBps"], "ext2_write_MBps": res["write_MBps"],
                    "ext2_read_MBps": res["read_MBps"], "ext2_vs_block": res["ext2_vs_block"]})
        while not os.path.exists(door(rd, "linux")):
            time.sleep(0.1)

        def under(script: str) -> float:
            t = time.perf_counter()
            r = ask_door(rd, "linux", {"op": "run", "argv": ["sh", "-c", script], "cwd": "/"},
                         600.0)
            if int(r["status"]) != 0:
                raise click.ClickException(f"the file workload failed under the personality: "
                                           f"{r['output'][-300:]!r}")
            return time.perf_counter() - t

        under("true")
        l4_fs = under("R=/; " + FS_SCRIPT)
        native = tempfile.mkdtemp(prefix="fsbench-", dir="/dev/shm")     # a tmpfs
        try:
            shutil.copy(os.path.join(skel, "bench.tar"), native)
            native_fs = _native(["/bin/busybox", "sh", "-c", f"R={native}; " + FS_SCRIPT])
        finally:
            shutil.rmtree(native, ignore_errors=True)
        out.update({"fs_native_s": round(native_fs, 3), "fs_l4linux_s": round(l4_fs, 3),
                    "fs_ratio": round(l4_fs / native_fs, 1)})
    finally:
        subprocess.run([*l4run, "down", "--timeout", "50", "--run-dir", rd],
                       capture_output=True, timeout=60)
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
