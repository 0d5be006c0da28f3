"""Demo clients of the `block` server (configs/dde.toml).

    writer(l4, rounds)   writes a pattern per round (16 x 64 KiB, 8 in flight), flushes, reads
                         it back and verifies; logs "block-demo: ACK sector count sha256"
                         for every acknowledged round and "BLOCK-DEMO {json}" at the end.
                         A server restart mid-round (PeerDied) is logged and the round redone.
    reader(l4)           a read-only client of a range: reads, and shows that a write, a read
                         past its range and malformed descriptors are refused (READ_ONLY,
                         RANGE, INVALID) and counted.
"""
from __future__ import annotations

import hashlib
import json
import time

from kernel.user.client import L4
from kernel.user.errors import PeerDied
from kernel.user.rpc import RemoteFailure

from .client import READ, WRITE, BlockClient

CHUNK, DEPTH, PER_ROUND = 128, 8, 16         # 64 KiB requests, 8 in flight, 1 MiB a round


def _pattern(rnd: int, n: int) -> bytes:
    seed = hashlib.sha256(f"round {rnd}".encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def writer(l4: L4, rounds: str = "8", pause_ms: str = "0") -> int:
    bc = BlockClient(l4, buffer=DEPTH * CHUNK * 512)
    total = bc.session["sectors"]
    done, retried, t0 = 0, 0, time.monotonic()
    rnd = 0
    while rnd < int(rounds):
        first = (rnd * PER_ROUND * CHUNK) % max(1, total - PER_ROUND * CHUNK)
        data = _pattern(rnd, PER_ROUND * CHUNK * 512)
        try:
            for i in range(0, PER_ROUND, DEPTH):        # fill the slices, then stream them
                for s in range(DEPTH):
                    off = (i + s) * CHUNK * 512
                    bc.buffer_write(s * CHUNK * 512, data[off:off + CHUNK * 512])
                st = bc.stream(WRITE, first + i * CHUNK, DEPTH * CHUNK, CHUNK, DEPTH)
                assert not any(st), st
            bc.flush()
            print(f"block-demo: ACK {first} {PER_ROUND * CHUNK} "
                  f"{hashlib.sha256(data).hexdigest()}", flush=True)
            back = b""
            for i in range(0, PER_ROUND, DEPTH):
                st = bc.stream(READ, first + i * CHUNK, DEPTH * CHUNK, CHUNK, DEPTH)
                assert not any(st), st
                back += bc.buffer_read(0, DEPTH * CHUNK * 512)
            ok = back == data
            print(f"block-demo: round {rnd} at sector {first}: "
                  f"{'verified' if ok else 'MISMATCH'}", flush=True)
            done += ok
            rnd += 1
        except PeerDied:
            retried += 1
            print(f"block-demo: the server died during round {rnd}: again", flush=True)
        time.sleep(int(pause_ms) / 1e3)
    summary = {"rounds": done, "retried": retried, "reopens": bc.reopens,
               "seconds": round(time.monotonic() - t0, 2), "info": bc.info()}
    print("BLOCK-DEMO " + json.dumps(summary), flush=True)
    bc.close()
    return 0


def reader(l4: L4) -> int:
    bc = BlockClient(l4, buffer=64 * 1024)
    sess = bc.session
    data = bc.read(0, 8)
    out = {"session": dict(sess), "read": len(data)}
    for name, req in (("write", [bc.tag(), WRITE, 0, 8, 0]),
                      ("beyond", [bc.tag(), READ, sess["sectors"], 1, 0]),
                      ("bad_op", [bc.tag(), 9, 0, 1, 0]),
                      ("outside_buffer", [bc.tag(), READ, 0, 8, bc.buffer_size - 512]),
                      ("not_a_descriptor", "read it all")):
        try:
            bc.submit([req])                            # type: ignore[list-item]
            out[name] = "accepted"
        except RemoteFailure as e:
            out[name] = e.error
    out["counters"] = bc.info()["counters"]
    print("BLOCK-READER " + json.dumps(out), flush=True)
    bc.close()
    return 0
