"""`l4run bench ipc` runs end to end (tiny rounds), reports every key it documents, and
leaves no process or temporary directory behind; `trace_overhead` compares round trips with the
kernel's trace on and off. The numbers themselves are not judged
here: speed is measured with the benchmark on a quiet machine, never asserted in tests."""
from __future__ import annotations

import pytest

import glob
import json
import os
import subprocess
import sys
import tempfile

import psutil

from kernel.user.testing import PROJECT_ROOT, wait_for

KEYS = ("direct_rtt_us", "relay_rtt_us", "kernel_rtt_us", "rtt_ratio", "relay_rtt_ratio",
        "kernel_vs_relay", "direct_calls_per_s", "relay_calls_per_s", "kernel_calls_per_s",
        "kernel_workers_calls_per_s", "throughput_ratio", "throughput_ratio_workers",
        "relay_throughput_ratio", "remote_rtt_us", "remote_vs_kernel")


def _bench_procs() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "launcher.bench_ipc" in cmd or "--run-dir" in cmd and "l4py-" in cmd:
            out.append(p)
    return out


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_bench_ipc_reports_every_number_and_cleans_up() -> None:
    before = {p.pid for p in _bench_procs()}
    tmp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "l4bench-*")))
    r = subprocess.run([sys.executable, "-m", "launcher.cli", "bench", "ipc", "--json",
                        "--rounds", "30", "--duration", "0.2", "--remote"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in KEYS:
        assert isinstance(res[key], (int, float)) and res[key] > 0, key
    # trace_overhead: a ratio (noise can make it negative on a loaded machine); the traced
    # rounds really were recorded: each call is at least a send, a delivery and a reply.
    assert isinstance(res["trace_overhead"], float) and res["trace"]["on_rtt_us"] > 0
    assert 0 <= res["trace_off_overhead"] < 1 and res["trace"]["events_per_round_trip"] > 0
    assert res["trace"]["events"] >= 3 * 2 * 30 and res["trace"]["dropped"] == 0, res["trace"]
    for tag in ("direct", "relay", "kernel", "remote"):
        for size in (64, 4096):
            assert res["rtt"][f"{tag}_{size}"]["p99_us"] >= res["rtt"][f"{tag}_{size}"]["median_us"]
    for tag in ("direct", "relay", "kernel", "kernel_workers"):
        for c in (1, 4, 16):
            assert res["throughput"][f"{tag}_{c}"] > 0
    assert res["call_path"] in ("compiled", "python") and res["fast_path"] in ("compiled", "python")
    cpu = res["cpu_us_per_call"]           # where a call's CPU goes, per component
    for tag, parts in (("direct", ("server", "clients")), ("relay", ("kernel", "server", "clients")),
                       ("kernel", ("kernel", "server", "clients")),
                       ("kernel_workers", ("kernel", "server", "clients"))):
        assert all(cpu[tag][p] >= 0 for p in parts) and cpu[tag]["clients"] > 0, cpu
        assert cpu[tag]["total"] == pytest.approx(sum(cpu[tag][p] for p in parts), abs=0.5)
    for tag in ("kernel", "kernel_workers"):  # the kernel's threads; what its fast path served
        assert set(res["kernel_threads_us_per_call"][tag]) == {"main", "io"}
        req = res["kernel_requests"][tag]
        assert req["requests"] >= req["fastpath"] >= req["fastpath_compiled"] >= 0
        assert 0 <= req["compiled_share"] <= 1
    wait_for(lambda: {p.pid for p in _bench_procs()} <= before, timeout=10,
             what="benchmark processes to be gone")
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "l4bench-*"))) <= tmp_before
