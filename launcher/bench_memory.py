"""`l4run bench memory [--json]`: bulk data through shared pages vs IPC, page faults, map/unmap.

One run boots a real kernel with sigma0 and three tasks (each an OS process):
- driver: owns 4 MiB from sigma0, maps it into the sink once, then moves 64 MiB to the sink
  (a) through those shared pages: write 4 MiB, one IPC "consume", the sink reads 4 MiB
  (b) through IPC payloads: 1024 calls of 64 KiB;
  and times map + unmap of a 1024-page flexpage into the sink (the unmap includes the
  shootdown).
- sink: the receiving side; also the faulting client for the page-fault round trip: it
  touches fresh pages whose pager is `pager`, and times plain IPC calls to that same pager
  (the kernel IPC round trip of the same path, for comparison).
- pager: maps a page of its own on each fault.

JSON keys: shm_mb_per_s, ipc_mb_per_s, bulk_ratio, pagefault_rtt_us, ipc_rtt_us,
pagefault_vs_ipc, map_unmap_1024_ms, plus the parameters.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from typing import Any

import click

from kernel.abi import MemRights, Proto, pack, unpack
from kernel.user.vm import VM, map_mem, window

TOTAL = 64 << 20
BUF_ORDER = 22                      # 4 MiB shared buffer (1024 pages)
BUF = 1 << BUF_ORDER
CHUNK = 64 << 10
FAULTS = 2000
MAP_ROUNDS = 20
SHM_BASE = 1 << 36                  # where the sink sees the shared buffer
FAULT_BASE = 1 << 37                # where the sink takes its page faults
POOL = (1 << 38, 38)                # where sigma0's blocks land in driver and pager
BULK = 1                            # proto of a bulk-data IPC (payload = data)


def _alloc(l4: Any, order: int) -> int:
    """A block from sigma0 (its SIGMA0 stub; a refusal raises RemoteFailure)."""
    from servers.sigma0 import SIGMA0
    s0: Any = SIGMA0.client(l4, l4.caps["sigma0"])
    s0.alloc(order, _window=window(*POOL))
    return int(s0.last_items[0][1])


def pager(l4: Any) -> int:
    base = _alloc(l4, BUF_ORDER)
    reply, data = 0, b""
    items: list[list[int]] = []
    while True:
        msg = l4.reply_and_wait(reply, data, items=items)
        reply, items, data = msg.reply, [], b""
        if msg.proto == Proto.PAGE_FAULT:
            page = base + ((msg.body()["addr"] >> 12) % (BUF >> 12)) * 4096
            items = [map_mem(page, 12, MemRights.RW)]
        elif msg.data == b"unmap":
            l4.mem_unmap(base, BUF_ORDER)


def sink(l4: Any) -> int:
    vm = VM(l4)
    buf = bytearray(BUF)
    reply, data = 0, b""
    while True:
        msg = l4.reply_and_wait(reply, data, window=window(SHM_BASE, BUF_ORDER))
        reply, data = msg.reply, b""
        if msg.proto == BULK:
            continue                                # the data arrived; that is all
        body = msg.body()
        op = body["op"]
        if op == "consume":
            vm.read_into(SHM_BASE, buf)
            data = pack(zlib.crc32(buf[:4096]) ^ zlib.crc32(buf[-4096:]))
        elif op == "faults":
            data = pack(_faults(l4, vm, body["n"]))
        elif op == "rtt":
            gate = l4.caps["pager"]
            t0 = time.perf_counter()
            for _ in range(body["n"]):
                l4.call(gate, b"")
            data = pack((time.perf_counter() - t0) / body["n"])


def _faults(l4: Any, vm: VM, n: int) -> float:
    pages = BUF >> 12
    spent = 0.0
    done = 0
    while done < n:
        batch = min(pages, n - done)
        t0 = time.perf_counter()
        for i in range(batch):
            vm.read(FAULT_BASE + i * 4096, 1)
        spent += time.perf_counter() - t0
        done += batch
        l4.call(l4.caps["pager"], b"unmap")         # fresh faults for the next batch
    return spent / n


def driver(l4: Any) -> int:
    vm = VM(l4)
    base = _alloc(l4, BUF_ORDER)
    sink_gate = l4.caps["sink"]
    msg = l4.wait()                                 # root says go
    data = os.urandom(BUF)
    out: dict[str, Any] = {}
    # (a) shared pages
    l4.call(sink_gate, pack({"op": "take"}), items=[map_mem(base, BUF_ORDER, MemRights.R)])
    vm.write(base, data)
    expect = zlib.crc32(data[:4096]) ^ zlib.crc32(data[-4096:])
    assert unpack(l4.call(sink_gate, pack({"op": "consume"})).data) == expect
    t0 = time.perf_counter()
    for _ in range(TOTAL // BUF):
        vm.write(base, data)
        l4.call(sink_gate, pack({"op": "consume"}))
    out["shm_s"] = time.perf_counter() - t0
    # (b) IPC payloads
    mv = memoryview(data)
    t0 = time.perf_counter()
    for i in range(TOTAL // CHUNK):
        off = (i * CHUNK) % BUF
        l4.call(sink_gate, mv[off:off + CHUNK], proto=BULK)
    out["ipc_s"] = time.perf_counter() - t0
    # map + unmap of 1024 pages
    l4.mem_unmap(base, BUF_ORDER)
    t0 = time.perf_counter()
    for _ in range(MAP_ROUNDS):
        l4.call(sink_gate, pack({"op": "take"}), items=[map_mem(base, BUF_ORDER, MemRights.R)])
        l4.mem_unmap(base, BUF_ORDER)
    out["map_unmap_s"] = (time.perf_counter() - t0) / MAP_ROUNDS
    # the IPC "take" alone, to separate map+unmap from the message carrying it
    t0 = time.perf_counter()
    for _ in range(MAP_ROUNDS):
        l4.call(sink_gate, pack({"op": "take"}))
    out["take_s"] = (time.perf_counter() - t0) / MAP_ROUNDS
    # page faults vs IPC round trips on the same path (sink -> kernel -> pager -> sink)
    out["fault_s"] = unpack(l4.call(sink_gate, pack({"op": "faults", "n": FAULTS})).data)
    out["rtt_s"] = unpack(l4.call(sink_gate, pack({"op": "rtt", "n": FAULTS})).data)
    l4.reply(msg.reply, pack(out))
    return 0


def measure() -> dict[str, Any]:
    from kernel.user.testing import System
    from servers.sigma0 import boot

    with System() as sysm:
        root = sysm.root
        s0 = boot(sysm)
        g = lambda label: root.create_gate(label, thread=s0.thread)  # noqa: E731
        pg = sysm.spawn("launcher.bench_memory:pager", "pager", caps={"sigma0": g(1)})
        pager_gate = root.create_gate(10, thread=pg.thread)
        sk = sysm.spawn("launcher.bench_memory:sink", "sink", caps={"pager": pager_gate})
        root.thread_control(sk.thread, pager=pager_gate)
        sink_gate = root.create_gate(11, thread=sk.thread)
        dr = sysm.spawn("launcher.bench_memory:driver", "driver",
                        caps={"sigma0": g(2), "sink": sink_gate})
        go = root.create_gate(12, thread=dr.thread)
        r = unpack(root.call(go, b"go", rcv_timeout=300_000).data)
    mb = TOTAL / (1 << 20)
    shm, ipc = mb / r["shm_s"], mb / r["ipc_s"]
    return {
        "shm_mb_per_s": round(shm, 1),
        "ipc_mb_per_s": round(ipc, 1),
        "bulk_ratio": round(shm / ipc, 2),
        "pagefault_rtt_us": round(r["fault_s"] * 1e6, 1),
        "ipc_rtt_us": round(r["rtt_s"] * 1e6, 1),
        "pagefault_vs_ipc": round(r["fault_s"] / r["rtt_s"], 2),
        "map_unmap_1024_ms": round(r["map_unmap_s"] * 1e3, 3),
        "ipc_take_ms": round(r["take_s"] * 1e3, 3),
        "total_mb": mb, "chunk_kb": CHUNK >> 10, "buffer_mb": BUF >> 20, "faults": FAULTS,
    }


def run_memory_bench(as_json: bool = False) -> dict[str, Any]:
    res = measure()
    if as_json:
        print(json.dumps(res))
    else:
        print(f"bulk 64 MiB: shared pages {res['shm_mb_per_s']} MB/s, IPC payloads "
              f"{res['ipc_mb_per_s']} MB/s (64 KiB chunks) -> ratio {res['bulk_ratio']}x")
        print(f"page fault round trip {res['pagefault_rtt_us']} us vs IPC round trip "
              f"{res['ipc_rtt_us']} us on the same path ({res['pagefault_vs_ipc']}x)")
        print(f"map + unmap of 1024 pages: {res['map_unmap_1024_ms']} ms "
              f"(the carrying IPC alone: {res['ipc_take_ms']} ms)")
    return res


@click.command("memory")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def memory(as_json: bool) -> None:
    """Memory: shared pages vs IPC for bulk data, page-fault round trip, map+unmap."""
    run_memory_bench(as_json)


def register(group: click.Group) -> None:
    group.add_command(memory)


if __name__ == "__main__":
    memory()
