"""The engine's sequential rate against the block server's own, as a task (`l4run bench linux`).

    bench(l4, mib)        a task: capability "block" (a disk with an ext2 file system that
                          ends at least `mib` MiB before the disk does) and "moe"

In one run: the block server's raw rate for `mib` MiB written and read back past the end of
the file system (BlockClient.stream: 8 requests of 64 KiB in flight, the server's best),
then a file of `mib` MiB written in 1 MiB pieces and fsynced, and read back after a remount
(a cold cache), through BlockClientDevice and the engine — the personality's path without
the Linux calls. Logs one line "EXT2BENCH {json}": raw_MBps, write_MBps, read_MBps, ok and
ext2_vs_block (the harmonic mean of the two engine rates over the raw one), or
{"error": ...}; exits 0.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback

from kernel.user.client import L4
from servers.block.client import READ, WRITE, BlockClient

from .device import BlockClientDevice
from .fs import Ext2
from .layout import ROOT_INO

PIECE = 1 << 20
TAG = "EXT2BENCH "


def _data(n: int) -> bytes:
    seed = hashlib.sha256(b"ext2 bench").digest() * (PIECE // 32)
    return seed * (n // PIECE)


def measure(bc: BlockClient, n: int) -> dict[str, object]:
    data = _data(n)
    fs = Ext2(BlockClientDevice(bc))
    end = fs.vol.blocks_count * fs.vol.bs // 512
    fs.unmount()
    sectors = int(bc.session["sectors"])
    if sectors - end < n // 512:
        raise ValueError(f"the disk has {sectors - end} sectors past the file system; "
                         f"the raw run needs {n // 512}")
    t = time.perf_counter()
    for op in (WRITE, READ):
        if any(bc.stream(op, end, n // 512, 128, 8)):
            raise IOError("the raw stream answered an error status")
    raw = 2 * n / (time.perf_counter() - t) / 1e6
    fs = Ext2(BlockClientDevice(bc))
    t = time.perf_counter()
    f = fs.create(ROOT_INO, "bench")
    for off in range(0, n, PIECE):
        fs.write(f, off, data[off:off + PIECE])
    fs.fsync(f)
    w = n / (time.perf_counter() - t) / 1e6
    fs.unmount()
    fs = Ext2(BlockClientDevice(bc))
    f = fs.resolve("/bench")
    t = time.perf_counter()
    ok = b"".join(fs.read(f, off, PIECE) for off in range(0, n, PIECE)) == data
    r = n / (time.perf_counter() - t) / 1e6
    fs.unlink(ROOT_INO, "bench")
    fs.unmount()
    return {"raw_MBps": round(raw, 1), "write_MBps": round(w, 1), "read_MBps": round(r, 1),
            "ok": ok, "ext2_vs_block": round(2 / (1 / w + 1 / r) / raw, 2)}


def bench(l4: L4, mib: str = "16") -> int:
    bc = BlockClient(l4, buffer=PIECE)
    try:
        res = measure(bc, int(mib) << 20)
    except Exception as e:                 # reported to whoever reads the log
        res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    finally:
        bc.close()
    print(TAG + json.dumps(res), flush=True)
    return 0
