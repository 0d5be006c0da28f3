"""`l4run bench dde [--json]`: the block device server on DDE/Linux against the raw disk path.

Block server: a booted image (kernel, sigma0, moe, the HAL with disk0, io, the `block` task:
l4disk driver + DDE/Linux glue + server) and a client task that streams TOTAL bytes through
the server, writes then reads, in 64 KiB requests with DEPTH in flight, its buffer a moe
dataspace the disk DMAs into directly (servers/block/client.py `stream`).

Raw: the same machine with a raw driver task instead (`raw_driver` below, on DDEKit only:
its own ring in DMA memory, one entry per 64 KiB request into DDEKit contiguous buffers,
posted doorbell (a one-way write, as l4disk's) per submission batch, completion by interrupt, statuses read from the ring): the
HAL disk's request queue driven directly, same request size, same queue depth, same
completion mechanism; no glue, no server, no client IPC.

Like with like: the HAL merges adjacent queued requests in one direction into one host I/O
(hal/disk.py). Both sides submit sequential sectors with DEPTH requests in flight, so both
are merged alike; l4disk splits a request into one ring entry per physically contiguous run
of the client's pages, and the HAL merges those back (same host I/O as the raw side).
Neither side flushes (both hit the host's page cache). Each side runs ROUNDS times; the best
is reported. JSON keys: block_read_mb_per_s, block_write_mb_per_s, block_raw_read_mb_per_s,
block_raw_write_mb_per_s, block_ratio (server / raw, the lower of read and write); plus the
NIC keys of launcher.bench_dde_nic.run_nic when that module is there.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

from kernel.user.client import L4
from .bench_dde_nic import booted, wait_line

REQ = 64 * 1024
DEPTH = 16
TOTAL = 32 << 20
ROUNDS = 2
RING = 64                       # raw driver's ring entries (> DEPTH)
PENDING = 0xFFFF_FFFF
NIC_SECONDS = 5.0
RESULT = "BENCH-DDE "

IMAGE = """
[system]
name = "bench-dde"
ram = "96M"

[memory]
moe = true

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "disk"
name = "disk0"
size = "{size}"

{tasks}
"""

SERVER_TASKS = """
[[task]]
name = "block"
run = "servers.block.server:main"
args = ['{{"5": {{"disk": "disk0", "write": true}}}}']
devices = ["disk0"]
provides = ["block"]
memory = "64K"
caps = {{ sigma0 = {{ service = "sigma0", label = 3 }} }}
restart = "never"

[[task]]
name = "bench"
run = "launcher.bench_dde:block_client"
args = ["{total}", "{rounds}"]
memory = "4M"
caps = {{ block = {{ service = "block", label = 5 }} }}
restart = "never"
"""

RAW_TASKS = """
[[task]]
name = "bench"
run = "launcher.bench_dde:raw_driver"
args = ["{total}", "{rounds}"]
devices = ["disk0"]
caps = {{ sigma0 = {{ service = "sigma0", label = 3 }} }}
restart = "never"
"""


# -- the two task functions -------------------------------------------------------------------
def block_client(l4: L4, total: str, rounds: str) -> int:
    from servers.block.client import READ, WRITE, BlockClient
    bc = BlockClient(l4, buffer=DEPTH * REQ)
    sectors, chunk = int(total) // 512, REQ // 512
    best: dict[str, float] = {"write": 0.0, "read": 0.0}
    for _ in range(int(rounds)):
        for name, op in (("write", WRITE), ("read", READ)):
            t0 = time.perf_counter()
            st = bc.stream(op, 0, sectors, chunk, DEPTH)
            dt = time.perf_counter() - t0
            if any(st):
                raise RuntimeError(f"{name}: {sum(1 for s in st if s)} requests failed")
            best[name] = max(best[name], int(total) / dt / 1e6)
    print(RESULT + json.dumps(best), flush=True)
    bc.close()
    return 0


def raw_driver(l4: L4, total: str, rounds: str) -> int:
    import struct

    from hal.protocol import DEV

    import servers.ddekit as ddekit
    from servers.ddekit import bus, interrupt, memory, sync
    entry = struct.Struct("<IIQQII")
    ddekit.start(l4)
    try:
        disk = bus.request("disk0")
        ring = memory.contig_alloc(RING * 32)
        ring_pa = memory.virt_to_phys(ring)
        bufs = memory.contig_alloc(DEPTH * REQ)
        bufs_pa = memory.virt_to_phys(bufs)
        assert ring_pa is not None and bufs_pa is not None
        disk.writes(ERROR=0, Q_BASE=ring_pa, Q_SIZE=RING)
        irq = sync.Semaphore(0)
        line = disk.info.irq
        assert line is not None
        h = interrupt.attach(line, lambda _: irq.up())
        nreq, spr = int(total) // REQ, REQ // 512
        best = {"write": 0.0, "read": 0.0}
        tail = head = 0
        for _ in range(int(rounds)):
            for name, op in (("write", 2), ("read", 1)):
                t0 = time.perf_counter()
                submitted = completed = 0
                slots: list[int] = list(range(DEPTH))
                slot_at: dict[int, int] = {}            # ring index -> buffer slot
                while completed < nreq:
                    batch = b""
                    first = tail
                    while slots and submitted < nreq:
                        s = slots.pop()
                        slot_at[tail] = s
                        batch += entry.pack(op, spr, submitted * spr, bufs_pa + s * REQ, PENDING, 0)
                        tail = (tail + 1) % RING
                        submitted += 1
                    if batch:
                        room = (RING - first) * 32
                        memory.write(ring + first * 32, batch[:room])
                        if len(batch) > room:
                            memory.write(ring, batch[room:])
                        dh = disk.handle()         # a posted doorbell, as l4disk's
                        dh.l4.send(dh.gate, DEV.encode_request(DEV.ops["write"],
                                                             [disk.info.regs["Q_TAIL"], tail]),
                                  proto=DEV.tag, timeout=30_000)
                    irq.down_timed(1000)
                    while head != tail:
                        st = int.from_bytes(memory.read(ring + head * 32 + 24, 4), "little")
                        if st == PENDING:
                            break
                        if st:
                            raise RuntimeError(f"raw request failed: error {st}")
                        slots.append(slot_at.pop(head))
                        head = (head + 1) % RING
                        completed += 1
                best[name] = max(best[name], int(total) / (time.perf_counter() - t0) / 1e6)
        interrupt.detach(line, h)
        print(RESULT + json.dumps(best), flush=True)
        return 0
    finally:
        ddekit.stop()


# -- the harness ------------------------------------------------------------------------------
def _boot_and_read(tasks: str, size: str, say: Callable[[str], None], timeout: float = 240) -> dict[str, Any]:
    with booted(IMAGE.format(size=size, tasks=tasks), "dde") as (_, rd):
        line = wait_line(os.path.join(rd, "logs", "bench.log"), RESULT, timeout)
        return dict(json.loads(line[len(RESULT):]))


def run_block(total: int = TOTAL, rounds: int = ROUNDS,
              say: Callable[[str], None] = lambda s: None) -> dict[str, float]:
    size = f"{max(64, 2 * total >> 20)}M"
    say(f"block server: {total >> 20} MiB each way, {REQ >> 10} KiB requests, {DEPTH} in flight")
    srv = _boot_and_read(SERVER_TASKS.format(total=total, rounds=rounds), size, say)
    say(f"raw disk queue: the same")
    raw = _boot_and_read(RAW_TASKS.format(total=total, rounds=rounds), size, say)
    out = {"block_read_mb_per_s": round(srv["read"], 1), "block_write_mb_per_s": round(srv["write"], 1),
           "block_raw_read_mb_per_s": round(raw["read"], 1),
           "block_raw_write_mb_per_s": round(raw["write"], 1)}
    out["block_ratio"] = round(min(srv["read"] / raw["read"], srv["write"] / raw["write"]), 3)
    return out


def run(say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    res: dict[str, Any] = run_block(say=say)
    try:
        from launcher.bench_dde_nic import run_nic    # the NIC half, when it is there
    except ImportError:
        return res
    say("nic driver vs raw NIC path")
    res.update(run_nic(NIC_SECONDS))
    return res


def register(group: Any) -> None:
    import click

    @group.command("dde")
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    def dde(as_json: bool) -> None:
        """Block server on DDE/Linux vs the raw disk queue (and the NIC driver, if built)."""
        main(["--json"] if as_json else [])


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    res = run(say=(lambda s: None) if as_json else (lambda s: print(s, file=sys.stderr)))
    if as_json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
