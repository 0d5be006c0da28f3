"""The NIC half of `l4run bench dde`: frames through the nic server against the raw HAL NIC path.

    run_nic(duration=3.0) -> {"nic_frames_per_s", "nic_raw_frames_per_s", "nic_ratio", ...}
    python3 -m launcher.bench_dde_nic [--json] [--duration S]

One boot of a real machine (launcher image, written to a temporary run directory): a HAL
with two NICs, both with the loopback back end; `nic` (servers/nic/server.py: the l4nic
driver on the DDE/Linux glue, in the server's task) drives nic0; one bench task drives nic1
itself and holds a nic session on nic0. The bench task measures, one after the other with
the same frames (FRAME bytes, numbered) and the same window of frames in flight:

- raw: a polling ring driver of its own on nic1 (hal.driver.NicRings' scheme: descriptors
  and buffers in DDEKit DMA memory, one doorbell IPC per batch, no interrupts) — the HAL NIC
  path with nothing on top;
- server: the same loop through its NicSession (packet streams in shared memory, a kick per
  batch, signals back): client -> nic server -> l4nic -> HAL -> loopback -> l4nic (IRQ) ->
  NET_RX -> nic server -> client.

Each counts frames that came back intact per second over `duration` seconds (after a short
warm-up). nic_ratio = server / raw (target >= 0.5).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from .netimage import net_image, nic, session, task

FRAME = 1500
WINDOW = 128                   # frames in flight
BATCH = 8                      # frames per doorbell / kick (l4nic's TX_BURST: the HAL's IOMMU
                               # checks at most 10 ranges in one kernel call)
RING = 256
WARMUP_S = 0.3
RAW_POLL_S = 0.0002             # the raw driver's poll interval (spinning would starve the HAL)



def machine(duration: float) -> str:
    """The machine: nic0 for the nic server (one client, the bench task), nic1 the bench's."""
    return net_image("bench-dde-nic", nics=[nic("nic0"), nic("nic1")],
                     nic_clients={"1": "bench"}, nic_restart="never", tasks=[
                         task("bench", "launcher.bench_dde_nic:bench_task", [str(duration)],
                              devices=["nic1"], caps={**session("nic", 1, "nic"),
                                                      **session("sigma0", 3, "sigma0")})])


def frames(mac: bytes, n: int = WINDOW * 2) -> list[bytes]:
    body = bytes(i & 0xFF for i in range(FRAME - 18))
    return [b"\xff" * 6 + mac + b"\x88\xb5" + struct.pack(">I", s) + body for s in range(n)]


def pump(send: Callable[[list[bytes]], int], recv: Callable[[], list[bytes]],
         idle: Callable[[], Any], pool: list[bytes], duration: float) -> dict[str, Any]:
    """Keep WINDOW frames in flight for `duration` s; count those back intact."""
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
            batch = [pool[(sent + i) % len(pool)] for i in range(k)]
            c = time.perf_counter()
            sent += send(batch)
            spent["send"] += time.perf_counter() - c
        c = time.perf_counter()
        back = recv()
        spent["recv"] += time.perf_counter() - c
        for f in back:
            ok = len(f) == FRAME and bytes(f[14:18]) == pool[got % len(pool)][14:18]
            bad += not ok
            got += 1
        if not back and sent - got >= WINDOW - BATCH // 2:
            c = time.perf_counter()
            idle()
            spent["idle"] += time.perf_counter() - c
    dt = time.monotonic() - t0
    return {"frames_per_s": round((got - g0) / dt), "frames": got - g0, "bad": bad,
            "in_flight_at_end": sent - got, "spent_s": {k: round(v, 3) for k, v in spent.items()}}


class RawRings:
    """A polling driver of the NIC's rings in DDEKit DMA memory (NicRings' scheme, with the
    ring memory a block of ours instead of all of RAM)."""

    def __init__(self, dev: Any, ring: int = RING, buf: int = 2048) -> None:
        from servers.ddekit import memory
        self.dev, self.ring, self.buf = dev, ring, buf
        size = 2 * ring * 16 + 2 * ring * buf
        self.va = memory.contig_alloc(size)
        memory.fill(self.va, size, 0)              # touched: its frames are ours now
        phys = memory.virt_to_phys(self.va)
        assert phys is not None
        self.mem = memory.view(self.va, size, writable=True)
        self.phys = phys
        self.rx_ring, self.tx_ring = 0, ring * 16
        self.rx_bufs, self.tx_bufs = 2 * ring * 16, 2 * ring * 16 + ring * buf
        d = struct.Struct("<QHHI")
        self.d = d
        for i in range(ring):
            d.pack_into(self.mem, self.rx_ring + i * 16, phys + self.rx_bufs + i * buf, buf, 0, 0)
            d.pack_into(self.mem, self.tx_ring + i * 16, phys + self.tx_bufs + i * buf, 0, 1, 0)
        self.rx_next = self.rx_posted = self.tx_tail = self.tx_clean = 0
        dev.writes(CTRL=0, ERROR=0, RX_BASE=phys + self.rx_ring, RX_SIZE=ring,
                   TX_BASE=phys + self.tx_ring, TX_SIZE=ring)
        dev.writes(CTRL=3, RX_TAIL=ring - 1)

    def send(self, frames: list[bytes]) -> int:
        mem, d, mask, buf = self.mem, self.d, self.ring - 1, self.buf
        while self.tx_clean != self.tx_tail and mem[self.tx_ring + self.tx_clean * 16 + 10] & 1:
            self.tx_clean = (self.tx_clean + 1) & mask
        n = min(len(frames), self.ring - 1 - ((self.tx_tail - self.tx_clean) & mask))
        t = self.tx_tail
        for f in frames[:n]:
            off = self.tx_bufs + t * buf
            mem[off:off + len(f)] = f
            d.pack_into(mem, self.tx_ring + t * 16, self.phys + off, len(f), 0, 0)
            t = (t + 1) & mask
        if n:
            self.tx_tail = t
            self.dev.write("TX_TAIL", t)
        return n

    def recv(self) -> list[bytes]:
        mem, d, mask, buf = self.mem, self.d, self.ring - 1, self.buf
        out: list[bytes] = []
        i = self.rx_next
        while mem[self.rx_ring + i * 16 + 10] & 1:
            off = self.rx_ring + i * 16
            _, ln, flags, _ = d.unpack_from(mem, off)
            if not flags & 2:
                start = self.rx_bufs + i * buf
                out.append(bytes(mem[start:start + ln]))
            d.pack_into(mem, off, self.phys + self.rx_bufs + i * buf, buf, 0, 0)
            i = (i + 1) & mask
        self.rx_next = i
        if (i - self.rx_posted) & mask >= self.ring // 8:    # buffers back in bursts: fewer IPCs
            self.rx_posted = i
            self.dev.write("RX_TAIL", (i - 1) & mask)
        return out

    def close(self) -> None:
        from servers.ddekit import memory
        self.dev.write("CTRL", 0)
        self.mem.release()
        memory.contig_free(self.va)


def bench_task(l4: Any, duration: str = "3.0") -> int:
    """The bench task: raw ring driver on nic1, then a nic session on nic0."""
    import servers.ddekit as ddekit
    from servers.ddekit import bus
    from servers.nic.client import NicSession
    secs = float(duration)
    out: dict[str, Any] = {}
    ddekit.start(l4)
    try:
        dev = bus.request("nic1")
        rings = RawRings(dev)
        mac = dev.read("MAC").to_bytes(6, "big")
        out["raw"] = pump(rings.send, rings.recv, lambda: time.sleep(RAW_POLL_S), frames(mac), secs)
        rings.close()
        bus.release(dev)
        nic = NicSession(l4, l4.caps["nic"], vm=ddekit.env.get().vm)
        out["server"] = pump(nic.send, nic.poll, lambda: nic.wait(50), frames(nic.mac), secs)
        out["server_counters"] = nic.stats()
        nic.release()
    except Exception as e:                      # noqa: BLE001 - reported to the bench
        import traceback
        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    ddekit.stop()
    print("NIC-BENCH " + json.dumps(out), flush=True)
    return 0


def run_nic(duration: float = 3.0) -> dict[str, Any]:
    """Boot, run the bench task, read its result; the system is taken down either way."""
    with booted(machine(duration), "nic") as (_, rd):
        res = wait_record(os.path.join(rd, "logs", "bench.log"), "NIC-BENCH", 60 + 3 * duration)
    raw, srv = res.get("raw", {}), res.get("server", {})
    out = {"nic_frames_per_s": srv.get("frames_per_s", 0),
           "nic_raw_frames_per_s": raw.get("frames_per_s", 0), "nic_frame_bytes": FRAME,
           "nic_window": WINDOW, "nic_batch": BATCH, "nic_duration_s": duration,
           "nic_bad_frames": srv.get("bad", 0) + raw.get("bad", 0),
           "nic_detail": {"raw_spent_s": raw.get("spent_s"), "server_spent_s": srv.get("spent_s"),
                          "server_counters": res.get("server_counters")}}
    out["nic_ratio"] = round(out["nic_frames_per_s"] / out["nic_raw_frames_per_s"], 3) \
        if out["nic_raw_frames_per_s"] else 0.0
    out["nic_mb_per_s"] = round(out["nic_frames_per_s"] * FRAME / 1e6, 2)
    out["nic_targets"] = {"nic_ratio": 0.5}
    if "error" in res:
        out["nic_error"] = res["error"]
    return out


@contextmanager
def booted(image: str, tag: str, boot_timeout: float | None = None) -> Iterator[tuple[list[str], str]]:
    """Boot the image text `image` from a temporary directory (l4py-bench-`tag`-*); yields the
    l4run command and the run directory; the system is taken down and the directory removed
    on the way out, whatever happened — a boot that failed or timed out too (it may have
    started tasks). `boot_timeout`: `l4run boot --timeout` (seconds for every task to run)."""
    from kernel.user.testing import PROJECT_ROOT
    with tempfile.TemporaryDirectory(prefix=f"l4py-bench-{tag}-") as tmp:
        rd = os.path.join(tmp, "run")
        os.makedirs(rd)
        path = os.path.join(tmp, f"bench-{tag}.toml")
        with open(path, "w") as f:
            f.write(image)
        l4run = [sys.executable, "-m", "launcher"]
        wait = ["--timeout", f"{boot_timeout:g}"] if boot_timeout else []
        try:
            p = subprocess.run([*l4run, "boot", path, "--detach", *wait, "--run-dir", rd],
                               cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=(boot_timeout or 60) + 60)
            if p.returncode:
                raise RuntimeError(f"boot failed:\n{p.stdout}\n{p.stderr}")
            yield l4run, rd
        finally:
            subprocess.run([*l4run, "down", "--run-dir", rd], cwd=PROJECT_ROOT,
                           capture_output=True, timeout=120)


def wait_line(log: str, prefix: str, timeout: float) -> str:
    """The first line of the bench task's `log` that starts with `prefix`, once it is there;
    RuntimeError if the log shows a traceback first, TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        line = next((ln for ln in text.splitlines() if ln.startswith(prefix)), None)
        if line is not None:
            return line
        if "Traceback" in text:
            raise RuntimeError(f"bench task failed:\n{text[-2000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"no {prefix.strip()} line in {log} within {timeout:g} s")


def wait_record(log: str, prefix: str, timeout: float) -> dict[str, Any]:
    """The first line `PREFIX {json}` of the bench task's `log`, decoded, once it is there;
    {"error": ...} with the log's end if none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(log, errors="replace") as f:
                for line in f:
                    if line.startswith(prefix + " "):
                        return dict(json.loads(line.partition(" ")[2]))
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    try:
        with open(log, errors="replace") as f:
            tail = f.read()[-1500:]
    except FileNotFoundError:
        tail = "(no log)"
    # The run directory goes with the run: the log's end is the only trace of why.
    return {"error": f"no result in {log} within {timeout:.0f} s; its end:\n{tail}"}


@click.command("dde-nic")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--duration", default=3.0, show_default=True, help="seconds per measurement")
def nic_bench(as_json: bool, duration: float) -> None:
    """NIC: frames/s through the nic server's session against the raw HAL NIC path."""
    res = run_nic(duration)
    if as_json:
        print(json.dumps(res))
        return
    print(f"nic server: {res['nic_frames_per_s']} frames/s of {FRAME} B; raw HAL NIC path: "
          f"{res['nic_raw_frames_per_s']} frames/s -> ratio {res['nic_ratio']} (target >= 0.5)")
    if "nic_error" in res:
        print(f"error: {res['nic_error']}")


if __name__ == "__main__":
    nic_bench()
