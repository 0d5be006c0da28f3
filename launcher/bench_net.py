"""`l4run bench net`: frames through the ORe switch, client to client, against the raw HAL NIC.

    run_ore(duration=3.0) -> {"ore_frames_per_s", "ore_frames_per_s_64", "ore_mb_per_s",
                              "ore_raw_frames_per_s", "ore_vs_raw", ...}
    l4run bench net [--json] [--duration S]

One boot of a real machine (an image written to a temporary run directory): sigma0, a HAL
with one loopback NIC (nic1), ORe (servers/ore, no uplink) and one bench task holding two
ORe sessions (labels 1 and 2: two virtual NICs) and the NIC itself. The bench task measures,
one after the other, over `duration` seconds each after a short warm-up:

- ore (1,500 B, then 64 B): frames from session 1 to session 2's MAC, WINDOW frames in
  flight (sent and not yet received): client -> TX stream -> ORe (kick; check, decide, copy)
  -> RX stream of session 2 -> client (signal). Frames per second received intact.
- raw: the raw HAL NIC path of `l4run bench dde` (launcher/bench_dde_nic.py: a polling ring
  driver of the bench task's own on nic1, loopback back end), 1,500 B frames.

ore_vs_raw = ore_frames_per_s / ore_raw_frames_per_s. If launcher/bench_net_ip.py exists,
its `run_ip(duration)` adds the IP-stack half (ping_rtt_us, tcp_mb_per_s) to the same JSON.
Where the time goes: the bench task reports its own time in send / recv / idle, and the ORe
task's CPU seconds over the run (`ore_cpu_s`): ORe is one Python thread; per frame it checks
the descriptor, copies the frame out, decides, copies it in; per batch one kick and one
signal (kernel IPC).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from typing import Any, Callable

import click

from .bench_dde_nic import booted, wait_record
from .netimage import net_image, nic, session, task

WINDOW = 128                   # frames in flight (the RX stream holds 256)
BATCH = 32                     # frames per send (one kick)
WARMUP_S = 0.3
SIZES = (1500, 64)
MAC1, MAC2 = "02:00:00:00:be:01", "02:00:00:00:be:02"



def machine(duration: float) -> str:
    """The machine: nic1 (the bench task's own), ORe without uplink, two sessions of the bench."""
    clients = {"1": {"name": "src", "mac": MAC1}, "2": {"name": "dst", "mac": MAC2}}
    return net_image("bench-net", nics=[nic("nic1")], ore={"clients": clients},
                     ore_restart="never", tasks=[
                         task("bench", "launcher.bench_net:bench_task", [str(duration)],
                              devices=["nic1"], caps={**session("ore", 1, "net1"),
                                                      **session("ore", 2, "net2"),
                                                      **session("sigma0", 3, "sigma0")})])


def frames(dst: bytes, src: bytes, size: int, n: int = WINDOW * 2) -> list[bytes]:
    body = bytes(i & 0xFF for i in range(size - 18))
    return [dst + src + b"\x88\xb5" + struct.pack(">I", s) + body for s in range(n)]


def pump(send: Callable[[list[bytes]], int], recv: Callable[[], list[bytes]],
         idle: Callable[[], Any], pool: list[bytes], duration: float) -> dict[str, Any]:
    """Keep WINDOW frames in flight for `duration` s; count those received intact (in order,
    of the right size: a switch never reorders one sender's frames)."""
    size = len(pool[0])
    sent = got = bad = 0
    spent = {"send": 0.0, "recv": 0.0, "idle": 0.0}
    t_end = time.monotonic() + WARMUP_S + duration
    t0, g0 = 0.0, 0
    while True:
        now = time.monotonic()
        if not t0 and now >= t_end - duration:
            t0, g0 = now, got
        if now >= t_end:
            break
        room = WINDOW - (sent - got)
        if room >= BATCH // 2:
            k = min(room, BATCH)
            c = time.perf_counter()
            sent += send([pool[(sent + i) % len(pool)] for i in range(k)])
            spent["send"] += time.perf_counter() - c
        c = time.perf_counter()
        back = recv()
        spent["recv"] += time.perf_counter() - c
        for f in back:
            bad += not (len(f) == size and f[14:18] == pool[got % len(pool)][14:18])
            got += 1
        if not back and sent - got >= WINDOW - BATCH // 2:
            c = time.perf_counter()
            idle()
            spent["idle"] += time.perf_counter() - c
    dt = time.monotonic() - t0
    return {"frames_per_s": round((got - g0) / dt), "frames": got - g0, "bad": bad,
            "in_flight_at_end": sent - got, "spent_s": {k: round(v, 3) for k, v in spent.items()}}


def bench_task(l4: Any, duration: str = "3.0") -> int:
    """The bench task: two ORe sessions (1500 B, 64 B), then the raw ring driver on nic1."""
    import servers.ddekit as ddekit
    from kernel.abi import SLOT_THREAD
    from servers.ddekit import bus
    from servers.nic.client import NicSession

    from .bench_dde_nic import RAW_POLL_S, RawRings
    from .bench_dde_nic import frames as raw_frames
    from .bench_dde_nic import pump as raw_pump
    secs = float(duration)
    out: dict[str, Any] = {}
    ddekit.start(l4)
    try:
        vm = ddekit.env.get().vm
        a = NicSession(l4, l4.caps["net1"], vm=vm, thread=SLOT_THREAD, label=0x4E5301)
        b = NicSession(l4, l4.caps["net2"], vm=vm, thread=SLOT_THREAD, label=0x4E5302)

        def idle() -> None:
            a.wait(50)                   # either session's signal wakes us (the same thread)

        def recv() -> list[bytes]:
            a.poll()                     # reclaim TX packets
            return b.poll()
        for size in SIZES:
            out[f"ore_{size}"] = pump(a.send, recv, idle, frames(b.mac, a.mac, size), secs)
            t_drain = time.monotonic() + 0.5           # the last window, before the next size
            while time.monotonic() < t_drain:
                if not recv():
                    idle()
        out["ore_counters"] = {"src": a.stats(), "dst": b.stats()}
        a.release()
        b.release()
        dev = bus.request("nic1")
        rings = RawRings(dev)
        mac = dev.read("MAC").to_bytes(6, "big")
        out["raw"] = raw_pump(rings.send, rings.recv, lambda: time.sleep(RAW_POLL_S),
                              raw_frames(mac), secs)
        rings.close()
        bus.release(dev)
    except Exception as e:                      # noqa: BLE001 - reported to the bench
        import traceback
        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    ddekit.stop()
    print("NET-BENCH " + json.dumps(out), flush=True)
    return 0


def _ore_cpu(l4run: list[str], rd: str) -> float | None:
    from kernel.user.testing import PROJECT_ROOT
    r = subprocess.run([*l4run, "ps", "--json", "--run-dir", rd], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=60)
    try:
        rows = json.loads(r.stdout)
        rows = rows["tasks"] if isinstance(rows, dict) else rows
        return next((row.get("cpu_s") for row in rows if row["name"] == "ore"), None)
    except (ValueError, KeyError, TypeError):
        return None


def run_ore(duration: float = 3.0) -> dict[str, Any]:
    """Boot, run the bench task, read its result; the system is taken down either way."""
    with booted(machine(duration), "net") as (l4run, rd):
        cpu0 = _ore_cpu(l4run, rd)
        res = wait_record(os.path.join(rd, "logs", "bench.log"), "NET-BENCH", 60 + 4 * duration)
        cpu1 = _ore_cpu(l4run, rd)
    big, small, raw = res.get("ore_1500", {}), res.get("ore_64", {}), res.get("raw", {})
    out: dict[str, Any] = {
        "ore_frames_per_s": big.get("frames_per_s", 0),
        "ore_frames_per_s_64": small.get("frames_per_s", 0),
        "ore_raw_frames_per_s": raw.get("frames_per_s", 0),
        "ore_window": WINDOW, "ore_batch": BATCH, "ore_duration_s": duration,
        "ore_bad_frames": big.get("bad", 0) + small.get("bad", 0) + raw.get("bad", 0),
        "ore_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
        "ore_detail": {"spent_s_1500": big.get("spent_s"), "spent_s_64": small.get("spent_s"),
                       "raw_spent_s": raw.get("spent_s"), "counters": res.get("ore_counters")}}
    out["ore_mb_per_s"] = round(out["ore_frames_per_s"] * 1500 / 1e6, 2)
    out["ore_mb_per_s_64"] = round(out["ore_frames_per_s_64"] * 64 / 1e6, 2)
    out["ore_vs_raw"] = round(out["ore_frames_per_s"] / out["ore_raw_frames_per_s"], 3) \
        if out["ore_raw_frames_per_s"] else 0.0
    out["ore_targets"] = {"ore_frames_per_s": 20_000}
    if "error" in res:
        out["ore_error"] = res["error"]
    return out


def run_all(duration: float) -> dict[str, Any]:
    """ORe's half, then the IP stack's (launcher/bench_net_ip.py) if it is there."""
    out = run_ore(duration)
    try:
        from . import bench_net_ip        # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return out
    try:
        out.update(bench_net_ip.run_ip(duration))
    except Exception as e:                # noqa: BLE001 - one half's failure is reported
        out["ip_error"] = f"{type(e).__name__}: {e}"
    return out


def register(group: click.Group) -> None:
    @group.command("net")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    @click.option("--duration", default=3.0, show_default=True, help="seconds per measurement")
    def net_bench(as_json: bool, duration: float) -> None:
        """ORe: client-to-client frames/s (1500 B and 64 B) against the raw HAL NIC path."""
        res = run_all(duration)
        if as_json:
            print(json.dumps(res))
            return
        print(f"ORe client->client: {res['ore_frames_per_s']} frames/s of 1500 B "
              f"({res['ore_mb_per_s']} MB/s), {res['ore_frames_per_s_64']} frames/s of 64 B; "
              f"raw HAL NIC path: {res['ore_raw_frames_per_s']} frames/s -> "
              f"ore_vs_raw {res['ore_vs_raw']} (target ore_frames_per_s >= 20000)")
        for k in ("ping_rtt_us", "tcp_mb_per_s", "linux_tcp_mb_per_s", "linux_vs_native_tcp"):
            if k in res:
                print(f"{k}: {res[k]}")
        for k in ("ore_error", "ip_error"):
            if k in res:
                print(f"{k}: {res[k]}")
